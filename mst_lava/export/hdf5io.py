"""HDF5 writer and validating reader for netx and mst_lava.netx files.

``write_network(path, graph)`` writes atomically (a temp file renamed into place).
``read_network(path)`` reads an mst_lava.netx file or a plain lava-dl netx file and checks
it against docs/netx-mst-format.md; every problem raises :class:`MSTError` naming the file,
the group and what is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:  # the torch executor and exporter work without h5py; only file I/O needs it
    import h5py
except ImportError:  # pragma: no cover
    h5py = None

from mst_lava.checkpoint import atomic_write
from mst_lava.errors import MSTError
from mst_lava.export.graph import (FORMAT, FORMAT_VERSION, LAYOUTS, MST_TYPES, MST_VERSION, NEURON_TYPES,
                                   STANDARD_TYPES, Layer, NetxGraph)

# keys of standard layer groups that we read as arrays (netx reads the same names)
_STD_KEYS = ("weight", "bias", "stride", "padding", "dilation", "groups", "inChannels", "outChannels",
             "kernelSize", "inFeatures", "outFeatures", "delay", "weight_rec")
# netx layer types lava-dl knows; we read the ones our executor runs, refuse nothing netx knows
_NETX_KNOWN = STANDARD_TYPES + ("dense_rec", "dense_comp", "pool", "convT", "unpool", "average", "concat")


# ----------------------------------------------------------------------------------------
# writing

def _put(group, key: str, value) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        sub = group.create_group(key)
        for k, v in value.items():
            _put(sub, k, v)
        return
    if isinstance(value, str):
        group.create_dataset(key, data=value)  # variable-length string, as lava-dl's files
        return
    if isinstance(value, bool):
        group.create_dataset(key, data=np.bool_(value))
        return
    arr = np.asarray(value)
    if arr.dtype == object:
        raise TypeError(f"cannot write {key}={value!r}")
    group.create_dataset(key, data=arr)


def _need_h5py() -> None:
    if h5py is None:
        raise MSTError("reading and writing .net files needs h5py: pip install h5py")


def write_network(path, graph: NetxGraph) -> None:
    """Write ``graph`` to ``path`` (atomic). MST graphs get the format tag and ``mst/`` groups."""
    _need_h5py()
    def _write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            if graph.kind == "mst":
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
            for k, v in graph.attrs.items():
                if k in ("format", "format_version"):
                    continue
                f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
            sim = f.create_group("simulation")
            sim.create_dataset("Ts", data=np.int64(1))
            sim.create_dataset("tSample", data=np.int64(graph.attrs.get("tSample", 32)))
            lay = f.create_group("layer")
            for i, layer in enumerate(graph.layers):
                g = lay.create_group(str(i))
                t = layer.type.encode("ascii")
                g.create_dataset("type", data=np.array([t], dtype=f"S{max(10, len(t))}"))
                if layer.shape is not None:
                    g.create_dataset("shape", data=np.asarray(layer.shape, dtype=np.int64))
                elif graph.kind == "mst":
                    raise ValueError(f"layer {i} ({layer.name}) has no shape")
                for k, v in layer.params.items():
                    _put(g, k, v)
                if layer.neuron is not None:
                    _put(g, "neuron", layer.neuron)
                if graph.kind == "mst":
                    m = dict(layer.mst)
                    m["name"] = layer.name
                    m["inputs"] = np.asarray(layer.inputs, dtype=np.int64)
                    m["output"] = layer.output
                    m["float"] = dict(layer.flt)
                    if layer.fix:
                        m["fixed"] = dict(layer.fix)
                    _put(g, "mst", m)
            if graph.kind == "mst":
                mg = f.create_group("mst")
                mg.attrs["version"] = MST_VERSION
                if graph.exp_table is not None:
                    ds = mg.create_dataset("exp_table", data=np.asarray(graph.exp_table, dtype=np.int64))
                    for k in ("frac_bits", "out_bits", "prob_bits"):
                        ds.attrs[k] = int(graph.attrs[f"softmax_{k}"])
    atomic_write(path, _write)


# ----------------------------------------------------------------------------------------
# reading

class _Ctx:
    def __init__(self, path):
        self.path = str(path)

    def fail(self, where: str, what: str):
        raise MSTError(f"{self.path}: {where}: {what}")


def _value(ds):
    v = ds[()]
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.dtype.kind == "S":
        return v[0].decode("ascii") if v.shape else v[()].decode("ascii")
    if isinstance(v, np.generic):
        return v.item()
    return v


def _read_group(g) -> dict:
    out = {}
    for k in g.keys():
        item = g[k]
        out[k] = _read_group(item) if isinstance(item, h5py.Group) else _value(item)
    return out


def _type_str(g, ctx: _Ctx, where: str) -> str:
    if "type" not in g:
        ctx.fail(where, "has no 'type' dataset (every netx layer needs one)")
    v = g["type"][()]
    if isinstance(v, np.ndarray):
        if v.size == 0:
            ctx.fail(where, "'type' is empty")
        v = v.reshape(-1)[0]
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


def read_network(path) -> NetxGraph:
    """Read and validate an mst_lava.netx or plain netx HDF5 file (see docs/netx-mst-format.md)."""
    _need_h5py()
    p = Path(path)
    ctx = _Ctx(p)
    if not p.exists():
        raise MSTError(f"network file {p} does not exist; create one with `mst-export model.pt -o {p}`")
    if p.is_dir():
        raise MSTError(f"network path {p} is a directory, not a .net file")
    if not h5py.is_hdf5(p):
        size = p.stat().st_size
        raise MSTError(f"{p} is not an HDF5 file ({size} bytes; truncated, corrupt or another format); "
                       "re-create it with `mst-export`")
    try:
        with h5py.File(p, "r") as f:
            graph = _read_file(f, ctx)
    except MSTError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise MSTError(f"{p} could not be read (truncated or corrupt HDF5: {str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                       "re-create it with `mst-export`") from None
    graph.path = str(p)
    _validate(graph, ctx)
    return graph


def _read_file(f, ctx: _Ctx) -> NetxGraph:
    attrs = {k: _value_attr(v) for k, v in f.attrs.items()}
    fmt = attrs.get("format")
    if fmt is None:
        kind = "netx"
    elif fmt != FORMAT:
        ctx.fail("/", f"format tag is {fmt!r}, expected {FORMAT!r}")
    else:
        kind = "mst"
        ver = attrs.get("format_version")
        if ver != FORMAT_VERSION:
            ctx.fail("/", f"format_version is {ver!r}; this mst_lava reads version {FORMAT_VERSION} "
                          "(re-export with this version's `mst-export`)")
        if attrs.get("precision") not in ("float", "fixed"):
            ctx.fail("/", f"attribute 'precision' is {attrs.get('precision')!r}, expected 'float' or 'fixed'")
        if "model_config" in attrs and isinstance(attrs["model_config"], str):
            try:
                attrs["model_config"] = json.loads(attrs["model_config"])
            except json.JSONDecodeError:
                ctx.fail("/", "attribute 'model_config' is not valid JSON")
    if "layer" not in f or not isinstance(f["layer"], h5py.Group):
        ctx.fail("/", "has no 'layer' group: not a netx network")
    lg = f["layer"]
    keys = list(lg.keys())
    try:
        idx = sorted(int(k) for k in keys)
    except ValueError:
        ctx.fail("/layer", f"has non-numeric members {sorted(k for k in keys if not k.isdigit())}")
    if idx != list(range(len(idx))):
        ctx.fail("/layer", f"layer numbers must be 0..{len(idx) - 1} without gaps, found {idx}")
    if not idx:
        ctx.fail("/layer", "is empty")
    layers = []
    for i in idx:
        where = f"layer/{i}"
        g = lg[str(i)]
        if not isinstance(g, h5py.Group):
            ctx.fail(where, "is not a group")
        typ = _type_str(g, ctx, where)
        shape = tuple(int(s) for s in np.asarray(g["shape"][()]).reshape(-1)) if "shape" in g else None
        params = {k: _value(g[k]) for k in _STD_KEYS if k in g and isinstance(g[k], h5py.Dataset)}
        neuron = _read_group(g["neuron"]) if "neuron" in g else None
        layer = Layer(type=typ, shape=shape, params=params, neuron=neuron)
        if kind == "mst":
            if "mst" not in g:
                ctx.fail(where, f"({typ}) has no 'mst' group, which every layer of an {FORMAT} file carries")
            m = _read_group(g["mst"])
            layer.name = str(m.pop("name", ""))
            layer.inputs = [int(v) for v in np.asarray(m.pop("inputs", []), dtype=np.int64).reshape(-1)]
            layer.output = str(m.pop("output", "spikes"))
            layer.flt = m.pop("float", {}) or {}
            layer.fix = m.pop("fixed", {}) or {}
            layer.mst = m
        else:
            layer.name = f"layer{i}"
            layer.inputs = [i - 1] if i > 0 else []
            layer.output = "spikes" if neuron is not None else "graded"
        layers.append(layer)
    graph = NetxGraph(layers=layers, attrs=attrs, kind=kind)
    if kind == "mst" and "mst" in f and "exp_table" in f["mst"]:
        ds = f["mst"]["exp_table"]
        graph.exp_table = np.asarray(ds[()], dtype=np.int64)
        for k in ("frac_bits", "out_bits", "prob_bits"):
            if k not in ds.attrs:
                ctx.fail("mst/exp_table", f"lacks attribute {k!r}")
            graph.attrs[f"softmax_{k}"] = int(ds.attrs[k])
    if kind == "mst":
        mv = f["mst"].attrs.get("version") if "mst" in f else None
        if mv is None:
            ctx.fail("/mst", "group or its 'version' attribute is missing")
        if int(mv) != MST_VERSION:
            ctx.fail("/mst", f"extension version {int(mv)}; this mst_lava reads {MST_VERSION}")
    return graph


def _value_attr(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    return v


# ----------------------------------------------------------------------------------------
# validation

def _need(d: dict, keys, ctx: _Ctx, where: str, what: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        ctx.fail(where, f"{what} lacks {', '.join(repr(k) for k in missing)}")


def _conv_out(n, k, s, p, dil=1):
    return (n + 2 * p - dil * (k - 1) - 1) // s + 1


def _pair(v):
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _validate(graph: NetxGraph, ctx: _Ctx) -> None:
    mst = graph.kind == "mst"
    fixed = mst and graph.precision == "fixed"
    shapes = []
    for i, L in enumerate(graph.layers):
        where = f"layer/{i}" + (f" ({L.name})" if mst and L.name else "")
        known = STANDARD_TYPES + MST_TYPES if mst else _NETX_KNOWN
        if L.type not in known:
            ctx.fail(where, f"unknown layer type {L.type!r}; known: {', '.join(known)}")
        if L.shape is None and L.type != "flatten":
            ctx.fail(where, f"({L.type}) has no 'shape'")
        if L.shape is not None and any(s <= 0 for s in L.shape):
            ctx.fail(where, f"shape {L.shape} has non-positive entries")
        if mst:
            _validate_mst_layer(graph, i, L, ctx, where, fixed, shapes)
        else:
            _validate_netx_layer(i, L, ctx, where, shapes)
        shapes.append(L.shape if L.shape is not None else (int(np.prod(shapes[-1])),) if shapes else None)
    if mst:
        out = graph.attrs.get("output_layer", len(graph.layers) - 1)
        if not (0 <= int(out) < len(graph.layers)):
            ctx.fail("/", f"output_layer {out} is not a layer index")


def _validate_neuron(L: Layer, ctx: _Ctx, where: str, mst: bool, fixed: bool) -> None:
    n = L.neuron
    if not isinstance(n, dict):
        ctx.fail(where, "'neuron' is not a group")
    _need(n, ["type"], ctx, where + "/neuron", "neuron group")
    if not mst:
        return
    if n["type"] != "IF":
        ctx.fail(where + "/neuron", f"type is {n['type']!r}; MST neurons must be 'IF' (reset by subtraction), "
                                   "a CUBA/LOIHI neuron would silently change the network")
    _need(n, ["reset", "compare", "v_init", "threshold"], ctx, where + "/neuron", "IF neuron")
    if n["reset"] != "subtract" or n["compare"] != "ge" or n["v_init"] != "half_threshold":
        ctx.fail(where + "/neuron", f"IF semantics must be reset=subtract, compare=ge, v_init=half_threshold; "
                                   f"found {n['reset']}, {n['compare']}, {n['v_init']}")
    if not (float(n["threshold"]) > 0):
        ctx.fail(where + "/neuron", f"threshold {n['threshold']} must be > 0")
    if fixed:
        _need(n, ["vThMant", "vInit"], ctx, where + "/neuron", "fixed-point IF neuron")
        if int(n["vThMant"]) <= 0:
            ctx.fail(where + "/neuron", f"vThMant {n['vThMant']} must be a positive integer")
        if int(n["vInit"]) != int(n["vThMant"]) // 2:
            ctx.fail(where + "/neuron", f"vInit {n['vInit']} must be vThMant // 2 = {int(n['vThMant']) // 2}")


def _check_conv(L: Layer, in_shape, ctx: _Ctx, where: str, weight) -> None:
    w = np.asarray(weight)
    if w.ndim == 5 and w.shape[-1] == 1:
        w = w[..., 0]
    if w.ndim != 4:
        ctx.fail(where, f"conv weight has shape {w.shape}; expected (out, in/groups, kH, kW)")
    groups = int(np.asarray(L.params.get("groups", 1)).reshape(-1)[0])
    Co, Cg, kH, kW = w.shape
    if L.shape is None or len(L.shape) != 3:
        ctx.fail(where, f"conv shape {L.shape} is not (C, H, W)")
    if Co != L.shape[0]:
        ctx.fail(where, f"conv weight has {Co} output channels but shape says {L.shape[0]}")
    if in_shape is not None and len(in_shape) == 3:
        if Cg * groups != in_shape[0]:
            ctx.fail(where, f"conv weight takes {Cg}x{groups} input channels but its input has {in_shape[0]}")
        sy, sx = _pair(L.params.get("stride", 1))
        py, px = _pair(L.params.get("padding", 0))
        dy, dx = _pair(L.params.get("dilation", 1))
        exp = (Co, _conv_out(in_shape[1], kH, sy, py, dy), _conv_out(in_shape[2], kW, sx, px, dx))
        if tuple(L.shape) != exp:
            ctx.fail(where, f"conv output shape {tuple(L.shape)} does not follow from input {tuple(in_shape)}, "
                            f"kernel {kH}x{kW}, stride {sy},{sx}, padding {py},{px}: expected {exp}")
    b = L.params.get("bias")
    if b is not None and np.asarray(b).size not in (1, Co):
        ctx.fail(where, f"conv bias has {np.asarray(b).size} entries for {Co} channels")


def _validate_netx_layer(i: int, L: Layer, ctx: _Ctx, where: str, shapes) -> None:
    in_shape = shapes[-1] if shapes else None
    if L.type == "input":
        return
    if i == 0 and L.type in ("conv", "dense"):
        return  # netx allows input_shape from the caller
    if L.type in ("conv", "dense") and "weight" not in L.params:
        ctx.fail(where, f"({L.type}) has no 'weight'")
    if L.type in ("conv", "dense") and L.neuron is not None:
        _validate_neuron(L, ctx, where, False, False)
    if L.type == "conv":
        _check_conv(L, in_shape, ctx, where, L.params["weight"])
    elif L.type == "dense":
        w = np.asarray(L.params["weight"])
        n_out = int(np.prod(L.shape))
        n_in = int(np.prod(in_shape)) if in_shape is not None else None
        if w.ndim == 2 and (w.shape[0] != n_out or (n_in is not None and w.shape[1] != n_in)):
            ctx.fail(where, f"dense weight {w.shape} does not map {n_in} inputs to {n_out} outputs")


def _validate_mst_layer(graph: NetxGraph, i: int, L: Layer, ctx: _Ctx, where: str, fixed: bool, shapes) -> None:
    for k in L.inputs:
        if not (0 <= k < i):
            ctx.fail(where, f"input {k} is not an earlier layer (inputs must precede, in topological order)")
    if L.output not in ("spikes", "graded"):
        ctx.fail(where, f"mst/output is {L.output!r}, expected 'spikes' or 'graded'")
    lay = L.mst.get("layout", "none")
    if lay not in LAYOUTS:
        ctx.fail(where, f"mst/layout {lay!r} unknown; known: {', '.join(LAYOUTS)}")
    r = float(L.mst.get("rsm_ratio", 0.0))
    if not (0.0 <= r < 1.0):
        ctx.fail(where, f"mst/rsm_ratio {r} is outside [0, 1)")
    if L.site:
        _need(L.mst, ["block", "site_id", "rsm_ratio", "rsm_threshold", "layout"], ctx, where + "/mst", "RSM site")
        from mst_lava.model.rsm import SITES, drop_threshold
        if L.site not in SITES or SITES.index(L.site) != int(L.mst["site_id"]):
            ctx.fail(where + "/mst", f"site {L.site!r} / site_id {L.mst['site_id']} do not match rsm.SITES")
        if int(L.mst["rsm_threshold"]) != drop_threshold(r):
            ctx.fail(where + "/mst", f"rsm_threshold {L.mst['rsm_threshold']} != drop_threshold({r})")
        if L.neuron is None:
            ctx.fail(where, f"is RSM site {L.site} but has no neuron")
    in_shapes = [shapes[k] for k in L.inputs]
    want_neuron = L.type in ("conv", "dense") + NEURON_TYPES
    if want_neuron:
        if L.neuron is None:
            ctx.fail(where, f"({L.type}) has no 'neuron' group")
        _validate_neuron(L, ctx, where, True, fixed)
        if L.output != "spikes":
            ctx.fail(where, "a neuron layer must output spikes")
    flt_need = {"conv": ["weight", "bias"], "dense": ["weight", "bias"], "mst_residual": ["gain"],
                "mst_qk": ["scale"], "mst_softmax_av": ["theta_a", "theta_v", "bias"],
                "mst_readout": ["weight", "bias"]}.get(L.type, [])
    fix_need = {"conv": ["weight_exp"], "dense": ["weight_exp"], "mst_residual": ["gain", "unit"],
                "mst_qk": ["scale_mant", "scale_shift"],
                "mst_softmax_av": ["a_mult", "bias", "v_mant", "v_shift"],
                "mst_readout": ["weight_exp", "unit"], "input": ["frac_bits"]}.get(L.type, [])
    _need(L.flt, flt_need, ctx, where + "/mst/float", f"{L.type} float parameters")
    if fixed:
        _need(L.fix, fix_need, ctx, where + "/mst/fixed", f"{L.type} fixed-point parameters")
    if L.type == "input":
        if L.inputs:
            ctx.fail(where, "an input layer cannot have inputs")
        return
    if not L.inputs and L.type != "input":
        ctx.fail(where, f"({L.type}) has no inputs")
    if L.type in ("conv", "dense", "mst_readout"):
        if "weight" not in L.params:
            ctx.fail(where, f"({L.type}) has no 'weight'")
        if len(L.inputs) != 1:
            ctx.fail(where, f"({L.type}) takes one input, has {len(L.inputs)}")
        if fixed:
            w = np.asarray(L.params["weight"])
            if not np.all(np.abs(w) <= 127) or not np.all(w == np.round(w)):
                ctx.fail(where, "fixed weights must be integer mantissas in [-127, 127]")
        if np.asarray(L.flt["weight"]).shape != np.asarray(L.params["weight"]).shape:
            ctx.fail(where, "mst/float/weight and weight differ in shape")
    if L.type == "conv":
        _check_conv(L, in_shapes[0], ctx, where, L.params["weight"])
    elif L.type == "mst_residual":
        g = np.asarray(L.flt["gain"]).reshape(-1)
        if g.size != len(L.inputs):
            ctx.fail(where, f"mst/float/gain has {g.size} entries for {len(L.inputs)} inputs")
        for k, s in zip(L.inputs, in_shapes):
            if tuple(s) != tuple(L.shape):
                ctx.fail(where, f"input layer {k} has shape {tuple(s)}, residual shape is {tuple(L.shape)}")
        if fixed and np.asarray(L.fix["gain"]).reshape(-1).size != len(L.inputs):
            ctx.fail(where, "mst/fixed/gain does not have one entry per input")
    elif L.type in ("mst_qk", "mst_softmax_av"):
        _need(L.mst, ["window", "shift", "heads", "grid"], ctx, where + "/mst", f"{L.type}")
        if len(L.inputs) != 2:
            ctx.fail(where, f"({L.type}) takes two inputs, has {len(L.inputs)}")
        w, h = int(L.mst["window"]), int(L.mst["heads"])
        H, W = (int(v) for v in np.asarray(L.mst["grid"]).reshape(-1))
        if w <= 0 or H % w or W % w:
            ctx.fail(where, f"grid {H}x{W} is not a multiple of window {w}")
        nW, N = (H // w) * (W // w), w * w
        grid_in = in_shapes[0] if L.type == "mst_qk" else in_shapes[1]
        if len(grid_in) != 3 or tuple(grid_in[1:]) != (H, W) or grid_in[0] % h:
            ctx.fail(where, f"input grid {tuple(grid_in)} does not fit grid {H}x{W} with {h} heads")
        if L.type == "mst_qk":
            if tuple(in_shapes[0]) != tuple(in_shapes[1]):
                ctx.fail(where, f"Q {tuple(in_shapes[0])} and K {tuple(in_shapes[1])} differ in shape")
            if tuple(L.shape) != (nW, h, N, N):
                ctx.fail(where, f"shape {tuple(L.shape)} should be (nW, h, N, N) = {(nW, h, N, N)}")
        else:
            if tuple(in_shapes[0]) != (nW, h, N, N):
                ctx.fail(where, f"A input has shape {tuple(in_shapes[0])}, expected {(nW, h, N, N)}")
            if tuple(L.shape) != tuple(in_shapes[1]):
                ctx.fail(where, f"shape {tuple(L.shape)} should equal V's {tuple(in_shapes[1])}")
            if np.asarray(L.flt["bias"]).shape != (h, N, N):
                ctx.fail(where, f"mst/float/bias has shape {np.asarray(L.flt['bias']).shape}, expected {(h, N, N)}")
            if "mask" in L.flt and np.asarray(L.flt["mask"]).shape != (nW, N, N):
                ctx.fail(where, f"mst/float/mask has shape {np.asarray(L.flt['mask']).shape}, expected {(nW, N, N)}")
            if fixed and graph.exp_table is None:
                ctx.fail("/mst", "fixed file with softmax layers lacks mst/exp_table")
    elif L.type == "mst_readout":
        w = np.asarray(L.params["weight"])
        if w.ndim != 2 or w.shape[0] != int(np.prod(L.shape)) or w.shape[1] != in_shapes[0][0]:
            ctx.fail(where, f"readout weight {w.shape} does not map {in_shapes[0][0]} channels to {L.shape}")
