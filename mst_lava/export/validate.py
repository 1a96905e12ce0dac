"""Validating a read netx / mst_lava.netx graph by structure and by value (docs/netx-mst-format.md §9): types,
ranges, Loihi's bit widths (§2a), finite floats, layer types at possible positions, the extension versions' fields,
the neuron registry's fields. Called by :func:`mst_lava.export.hdf5_read.read_network` with its context (``ctx``:
the file, and ``ctx.fail(where, what)`` raising the one-line :class:`MSTError`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from mst_lava import netx_ops as ops
from mst_lava import neurons
from mst_lava.export.graph import (
    FORMAT,
    LAYOUTS,
    STANDARD_TYPES,
    Layer,
    NetxGraph,
    uses_channel_exponents,
    uses_graded_neurons,
    uses_source_weights,
    uses_stream_affine,
)
from mst_lava.export.layers import LAYER_TYPES

if TYPE_CHECKING:
    from mst_lava.export.hdf5_read import _Ctx

# netx layer types lava-dl knows; we read the ones our executor runs, refuse nothing netx knows
_NETX_KNOWN = STANDARD_TYPES + ("dense_rec", "dense_comp", "pool", "convT", "unpool", "average", "concat")
# layer types of an mst_lava.netx file (dense/flatten: plain netx files only, the MST executors do not run them)
MST_FILE_TYPES = tuple(LAYER_TYPES)



# ----------------------------------------------------------------------------------------
# typed values

def _describe(v) -> str:
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, bytes):
        return f"the bytes {v!r}"
    if isinstance(v, bool):
        return f"the boolean {v}"
    if isinstance(v, float):
        return f"the float {v!r}"
    if isinstance(v, dict):
        return "a group"
    if isinstance(v, np.ndarray):
        kind = {"f": "float", "S": "string", "O": "string", "U": "string", "b": "boolean"}.get(v.dtype.kind,
                                                                                          str(v.dtype))
        return f"a {kind} array of shape {v.shape}"
    return repr(v)


def _int(ctx: _Ctx, where: str, key: str, v, lo=None, hi=None, why: str = "") -> int:
    """One integer (a scalar or a one-element integer array) in [lo, hi]."""
    a = v
    if isinstance(v, np.ndarray):
        if v.size != 1 or v.dtype.kind not in "iu":
            ctx.fail(where, f"{key} is {_describe(v)}; one integer belongs here")
        a = v.reshape(-1)[0].item()
    if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
        ctx.fail(where, f"{key} is {_describe(a)}; an integer belongs here")
    a = int(a)
    if (lo is not None and a < lo) or (hi is not None and a > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        ctx.fail(where, f"{key} {a} is outside {rng}{f' ({why})' if why else ''}")
    return a


def _float(ctx: _Ctx, where: str, key: str, v, *, positive: bool = False, lo=None, hi=None) -> float:
    a = v
    if isinstance(v, np.ndarray):
        if v.size != 1 or v.dtype.kind not in "iuf":
            ctx.fail(where, f"{key} is {_describe(v)}; one number belongs here")
        a = v.reshape(-1)[0].item()
    if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)):
        ctx.fail(where, f"{key} is {_describe(a)}; a number belongs here")
    a = float(a)
    if not math.isfinite(a):
        ctx.fail(where, f"{key} is {a}; a finite number belongs here")
    if positive and not a > 0:
        ctx.fail(where, f"{key} {a} must be > 0")
    if (lo is not None and a < lo) or (hi is not None and a > hi):
        ctx.fail(where, f"{key} {a} is outside [{lo}, {hi}]")
    return a


def _str(ctx: _Ctx, where: str, key: str, v, choices=None) -> str:
    if not isinstance(v, str):
        ctx.fail(where, f"{key} is {_describe(v)}; a string belongs here")
    if choices is not None and v not in choices:
        ctx.fail(where, f"{key} is {v!r}; one of {', '.join(repr(c) for c in choices)} belongs here")
    return v


def _int_array(ctx: _Ctx, where: str, key: str, v, lo=None, hi=None, shape=None, why: str = "") -> np.ndarray:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = np.asarray(v)
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "iu":
        ctx.fail(where, f"{key} is {_describe(v)}; integers belong here")
    if shape is not None and tuple(v.shape) != tuple(shape):
        ctx.fail(where, f"{key} has shape {tuple(v.shape)}, expected {tuple(shape)}")
    if v.size:
        mn, mx = int(v.min()), int(v.max())
        if (lo is not None and mn < lo) or (hi is not None and mx > hi):
            bad = mn if lo is not None and mn < lo else mx
            ctx.fail(where, f"{key} holds {bad}, outside [{lo}, {hi}]{f' ({why})' if why else ''}")
    return v.astype(np.int64)


def _float_array(ctx: _Ctx, where: str, key: str, v, shape=None) -> np.ndarray:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        v = np.asarray(v, dtype=np.float64)
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "iuf":
        ctx.fail(where, f"{key} is {_describe(v)}; numbers belong here")
    if shape is not None and tuple(v.shape) != tuple(shape):
        ctx.fail(where, f"{key} has shape {tuple(v.shape)}, expected {tuple(shape)}")
    if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
        ctx.fail(where, f"{key} holds NaN or infinite values")
    return v


def _all_finite(ctx: _Ctx, where: str, d: dict) -> None:
    """Every float in the group ``d`` (and its subgroups) is finite, read or not: NaN is refused anywhere."""
    for k, v in d.items():
        if isinstance(v, dict):
            _all_finite(ctx, f"{where}/{k}", v)
        elif isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
            ctx.fail(where, f"{k} is {float(v)}; a finite number belongs here")
        elif isinstance(v, np.ndarray) and v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
            ctx.fail(where, f"{k} holds NaN or infinite values")


def _pair_of(ctx: _Ctx, where: str, key: str, v, lo: int, hi: int) -> tuple[int, int]:
    a = _int_array(ctx, where, key, v, lo, hi)
    a = a.reshape(-1)
    if a.size not in (1, 2):
        ctx.fail(where, f"{key} has {a.size} entries; one or two (y, x) integers belong here")
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


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


# the types an MST file's layers may feed into (by the consumer's type)
_GRID_TYPES = ("input", "conv", "mst_residual", "mst_softmax_av")


def _validate(graph: NetxGraph, ctx: _Ctx) -> None:
    mst = graph.kind == "mst"
    fixed = mst and graph.precision == "fixed"
    shapes = []
    bounds: dict[int, int] = {}          # fixed MST files: the largest |payload| of each graded output
    depth: list[int] = []
    if mst:
        _validate_attrs(graph, ctx)
    names = set()
    for i, L in enumerate(graph.layers):
        where = f"layer/{i}" + (f" ({L.name})" if mst and L.name else "")
        known = MST_FILE_TYPES if mst else _NETX_KNOWN
        if L.type not in known:
            extra = " (dense and flatten occur in plain netx files only: the MST executors run conv, residual " \
                    "and attention graphs)" if mst and L.type in STANDARD_TYPES else ""
            ctx.fail(where, f"unknown layer type {L.type!r}; known: {', '.join(known)}{extra}")
        if L.shape is None and L.type != "flatten":
            ctx.fail(where, f"({L.type}) has no 'shape'")
        if mst:
            if not L.name:
                ctx.fail(where, "mst/name is missing or empty")
            if L.name in names:
                ctx.fail(where, f"mst/name {L.name!r} is used by an earlier layer; names are unique")
            names.add(L.name)
            _validate_mst_layer(graph, i, L, ctx, where, fixed, shapes, bounds)
            depth.append(0 if not L.inputs else 1 + max(depth[k] for k in L.inputs))
            d = _int(ctx, where + "/mst", "depth", L.mst.get("depth", depth[-1]), 0)
            if d != depth[-1]:
                ctx.fail(where + "/mst", f"depth {d} is not the longest path from the input ({depth[-1]})")
        else:
            _validate_netx_layer(i, L, ctx, where, shapes)
        shapes.append(L.shape if L.shape is not None else (int(np.prod(shapes[-1])),) if shapes else None)
    if mst:
        ro = [i for i, L in enumerate(graph.layers) if L.type == "mst_readout"]
        if len(ro) != 1:
            ctx.fail("/", f"has {len(ro)} mst_readout layers; an MST network has exactly one")
        out = _int(ctx, "/", "attribute output_layer", graph.attrs.get("output_layer", ro[0]), 0,
                   len(graph.layers) - 1, "a layer index")
        if out != ro[0]:
            ctx.fail("/", f"output_layer {out} is a {graph.layers[out].type} layer; it must be the mst_readout "
                          f"(layer {ro[0]})")
        _validate_mask(graph, ctx)
        K = int(np.prod(graph.layers[ro[0]].shape))
        if "num_classes" in graph.attrs:
            nc = _int(ctx, "/", "attribute num_classes", graph.attrs["num_classes"], 1)
            if nc != K:
                ctx.fail("/", f"num_classes {nc} differs from the readout's {K} outputs")


def _validate_mask(graph: NetxGraph, ctx: _Ctx) -> None:
    """The root ``mask`` (what reports echo as the run's mask) names sites the file has and gives each RSM
    site the ``mst/rsm_ratio`` its layer carries (the ratios the executors apply)."""
    from mst_lava.model.rsm import ratio_for
    mask = graph.attrs.get("mask") or {}
    sites = [(L, str(L.mst.get("site", "")), int(L.mst.get("block", -1))) for L in graph.layers
             if L.mst.get("site")]
    have = {s for _, s, _ in sites} | {f"{s}@{b}" for _, s, b in sites}
    for key in mask:
        if key not in have:
            ctx.fail("/", f"attribute mask names site {key!r}, which no layer of the file is (its sites: "
                          f"{', '.join(sorted({s for _, s, _ in sites})) or 'none'}; SITE@BLOCK for one block)")
    if any(float(r) > 0 for r in mask.values()) and not any(L.rsm_ratio > 0 for L, _, _ in sites):
        ctx.fail("/", f"attribute mask gives {', '.join(f'{k}={float(v):g}' for k, v in mask.items())}, but the "
                      "file's layers carry no RSM ratios (mst/rsm_ratio is 0 in every layer): the mask would be "
                      "reported, not applied")
    for L, s, b in sites:
        want = ratio_for(mask, s, b)
        if L.rsm_ratio != want:
            ctx.fail("/", f"attribute mask gives {s}@{b} the ratio {want:g}, but layer {L.name} ({s}@{b}) carries "
                          f"mst/rsm_ratio {L.rsm_ratio:g}; the mask must be the one the layers apply")


def _validate_attrs(graph: NetxGraph, ctx: _Ctx) -> None:
    a = graph.attrs
    _int(ctx, "/", "attribute rsm_seed", a.get("rsm_seed", 0), 0, 2 ** 63 - 1)
    for k in ("tSample",):
        if k in a:
            _int(ctx, "/", f"attribute {k}", a[k], 1)
    if "source_sha256" in a:
        v = a["source_sha256"]
        if not (isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)):
            ctx.fail("/", f"attribute source_sha256 is {_describe(v)}; 64 lowercase hex digits (the SHA-256 of "
                          "the exported weights) belong here")
    if "model_config" in a and not isinstance(a["model_config"], dict):
        ctx.fail("/", f"attribute model_config is {_describe(a['model_config'])}; a JSON object belongs here")
    if graph.precision == "fixed":
        if graph.exp_table is None and any(L.type == "mst_softmax_av" for L in graph.layers):
            ctx.fail("/mst", "fixed file with softmax layers lacks mst/exp_table")
        for k in ("softmax_frac_bits", "softmax_out_bits", "softmax_prob_bits", "input_frac_bits"):
            if k in a:
                _int(ctx, "/", f"attribute {k}", a[k], 0, 24)


def _validate_neuron(L: Layer, ctx: _Ctx, where: str, mst: bool, fixed: bool) -> None:
    n = L.neuron
    w = where + "/neuron"
    if not isinstance(n, dict):
        ctx.fail(where, "'neuron' is not a group")
    _need(n, ["type"], ctx, w, "neuron group")
    _str(ctx, w, "type", n["type"])
    if not mst:
        for k in ("vThMant", "iDecay", "vDecay", "refDelay", "wgtExp", "theta"):
            if k in n:
                _float(ctx, w, k, n[k])
        return
    if n["type"] not in neurons.NEURON_TYPES:
        ctx.fail(w, f"type is {n['type']!r}; MST neurons must be {' or '.join(map(repr, neurons.NEURON_TYPES))} "
                    "(reset by subtraction), a CUBA/LOIHI neuron would silently change the network")
    _need(n, ["reset", "compare", "v_init", "threshold"], ctx, w, "IF neuron")
    for k in ("reset", "compare", "v_init"):
        _str(ctx, w, k, n[k])
    if n["reset"] != "subtract" or n["compare"] != "ge" or n["v_init"] != "half_threshold":
        ctx.fail(w, f"IF semantics must be reset=subtract, compare=ge, v_init=half_threshold; "
                    f"found {n['reset']}, {n['compare']}, {n['v_init']}")
    _float(ctx, w, "threshold", n["threshold"], positive=True)
    for problem in neurons.of(n).problems(n):           # fields the runtime would not honour
        ctx.fail(w, problem)
    if fixed:
        _need(n, ["vThMant", "vInit"], ctx, w, "fixed-point IF neuron")
        vm = _int(ctx, w, "vThMant", n["vThMant"], 1, ops.VTH_MANT_MAX,
                  f"Loihi's threshold mantissa is unsigned {ops.VTH_MANT_BITS}-bit; threshold = vThMant << 6")
        vi = _int(ctx, w, "vInit", n["vInit"])
        if vi != (vm << ops.VTH_SHIFT) // 2:
            ctx.fail(w, f"vInit {vi} must be (vThMant << 6) // 2 = {(vm << ops.VTH_SHIFT) // 2}")


def _check_conv(L: Layer, in_shape, ctx: _Ctx, where: str, weight, netx: bool = False) -> None:
    w = np.asarray(weight)
    if w.ndim == 5 and w.shape[-1] == 1:
        w = w[..., 0]
    if w.ndim != 4:
        ctx.fail(where, f"conv weight has shape {w.shape}; expected (out, in/groups, kH, kW)")
    groups = _int(ctx, where, "groups", L.params.get("groups", 1), 1)
    Co, Cg, kH, kW = w.shape
    if L.shape is None or len(L.shape) != 3:
        ctx.fail(where, f"conv shape {L.shape} is not (C, H, W)")
    if Co != L.shape[0]:
        ctx.fail(where, f"conv weight has {Co} output channels but shape says {L.shape[0]}")
    if Co % groups:
        ctx.fail(where, f"conv has {Co} output channels, not a multiple of groups {groups}")
    sy, sx = _pair_of(ctx, where, "stride", L.params.get("stride", 1), 1, 1 << 16)
    py, px = _pair_of(ctx, where, "padding", L.params.get("padding", 0), 0, 1 << 16)
    dy, dx = _pair_of(ctx, where, "dilation", L.params.get("dilation", 1), 1, 1 << 16)
    if not netx and (dy, dx) != (1, 1):
        ctx.fail(where, f"dilation {dy},{dx}: the MST executors run undilated convolutions (dilation 1)")
    for k, want in (("outChannels", Co), ("inChannels", Cg * groups)):
        if k in L.params and _int(ctx, where, k, L.params[k], 1) != want:
            ctx.fail(where, f"{k} {L.params[k]} does not match the weight ({want})")
    if "kernelSize" in L.params and _pair_of(ctx, where, "kernelSize", L.params["kernelSize"], 1, 1 << 16) != (kH, kW):
        ctx.fail(where, f"kernelSize {L.params['kernelSize']} does not match the weight ({kH}, {kW})")
    if in_shape is not None and len(in_shape) == 3:
        if Cg * groups != in_shape[0]:
            ctx.fail(where, f"conv weight takes {Cg}x{groups} input channels but its input has {in_shape[0]}")
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
        if i:
            ctx.fail(where, "an input layer can only be layer 0")
        return
    for k in ("weight", "bias", "delay"):
        if k in L.params:
            _float_array(ctx, where, k, L.params[k])
    if L.type in ("conv", "dense") and L.neuron is not None:
        _validate_neuron(L, ctx, where, False, False)
    if i == 0 and L.type in ("conv", "dense"):
        return  # netx allows input_shape from the caller
    if L.type in ("conv", "dense") and "weight" not in L.params:
        ctx.fail(where, f"({L.type}) has no 'weight'")
    if L.type in ("conv", "flatten") and in_shape is not None and len(in_shape) != 3:
        ctx.fail(where, f"({L.type}) follows a layer of shape {tuple(in_shape)}; a {L.type} takes a (C, H, W) grid")
    if L.type == "conv":
        _check_conv(L, in_shape, ctx, where, L.params["weight"], netx=True)
    elif L.type == "dense":
        w = np.asarray(L.params["weight"])
        n_out = int(np.prod(L.shape))
        n_in = int(np.prod(in_shape)) if in_shape is not None else None
        if w.ndim == 2 and (w.shape[0] != n_out or (n_in is not None and w.shape[1] != n_in)):
            ctx.fail(where, f"dense weight {w.shape} does not map {n_in} inputs to {n_out} outputs")


def _validate_mst_layer(graph: NetxGraph, i: int, L: Layer, ctx: _Ctx, where: str, fixed: bool, shapes,
                        bounds: dict) -> None:
    layers = graph.layers
    wm = where + "/mst"
    if (L.type == "input") != (i == 0):
        ctx.fail(where, "layer 0 must be the input layer" if i == 0 else
                 "an input layer can only be layer 0")
    for k in L.inputs:
        if not (0 <= k < i):
            ctx.fail(where, f"input {k} is not an earlier layer (inputs must precede, in topological order)")
    _str(ctx, wm, "output", L.output, ("spikes", "graded"))
    lt = LAYER_TYPES[L.type]
    if L.output != lt.output:
        ctx.fail(wm, f"output is {L.output!r}; a {L.type} layer outputs {lt.output!r}")
    lay = _str(ctx, wm, "layout", L.mst.get("layout", "none"), LAYOUTS)
    r = _float(ctx, wm, "rsm_ratio", L.mst.get("rsm_ratio", 0.0))
    if not (0.0 <= r < 1.0):
        ctx.fail(where, f"mst/rsm_ratio {r} is outside [0, 1)")
    site = _str(ctx, wm, "site", L.mst.get("site", ""))
    _int(ctx, wm, "block", L.mst.get("block", -1), -1, 1 << 20)
    from mst_lava.model.rsm import SITES, drop_threshold
    if site:
        _need(L.mst, ["block", "site_id", "rsm_ratio", "rsm_threshold", "layout"], ctx, wm, "RSM site")
        sid = _int(ctx, wm, "site_id", L.mst["site_id"], -1, len(SITES) - 1)
        if site not in SITES or SITES.index(site) != sid:
            ctx.fail(wm, f"site {site!r} / site_id {sid} do not match rsm.SITES")
        thr = _int(ctx, wm, "rsm_threshold", L.mst["rsm_threshold"], 0, 1 << 32)
        if thr != drop_threshold(r):
            ctx.fail(wm, f"rsm_threshold {thr} != drop_threshold({r})")
        if L.neuron is None:
            ctx.fail(where, f"is RSM site {site} but has no neuron")
        if lay == "none":
            ctx.fail(wm, f"RSM site {site} has layout 'none'")
    elif r > 0:
        ctx.fail(wm, f"rsm_ratio {r} on a layer that is no RSM site")
    in_shapes = [shapes[k] for k in L.inputs]
    if lt.neuron:
        if L.neuron is None:
            ctx.fail(where, f"({L.type}) has no 'neuron' group")
        if not site:
            ctx.fail(wm, f"site is missing or empty; every neuron layer ({L.type}) of an {FORMAT} file is an RSM "
                         "site (SC1, Q, ..., embed, merge), which the spike counts and the energy report are "
                         "grouped by")
        _validate_neuron(L, ctx, where, True, fixed)
    elif L.neuron is not None:
        ctx.fail(where, f"({L.type}) has a 'neuron' group; only conv, mst_qk and mst_softmax_av layers have neurons")
    _need(L.flt, lt.float_keys, ctx, where + "/mst/float", f"{L.type} float parameters")
    if fixed:
        _need(L.fix, lt.fixed_keys, ctx, where + "/mst/fixed", f"{L.type} fixed-point parameters")
    wf, wx = where + "/mst/float", where + "/mst/fixed"
    for w_, d in ((wm, L.mst), (wf, L.flt), (wx, L.fix)):   # NaN is refused anywhere, informative fields too
        _all_finite(ctx, w_, d)
    for k in ("membrane_unit", "input_unit", "unit"):
        if k in L.fix:
            _float(ctx, wx, k, L.fix[k], positive=True)
    if "max_current" in L.fix:
        _float(ctx, wx, "max_current", L.fix["max_current"], lo=0.0)
    if L.type == "input":
        if L.inputs:
            ctx.fail(where, "an input layer cannot have inputs")
        if len(L.shape) != 3:
            ctx.fail(where, f"input shape {L.shape} is not (C, H, W)")
        if fixed:
            fb = _int(ctx, wx, "frac_bits", L.fix["frac_bits"], 0, 15)
            del fb
            bounds[i] = 32767                       # netx_ops.quantize_input clips to 16 bits
        return
    if not L.inputs:
        ctx.fail(where, f"({L.type}) has no inputs")
    # what may feed what
    src_types = [layers[k].type for k in L.inputs]
    if L.type == "conv" and len(L.inputs) > 1:       # one weight set per spike input (extension version 3, §5b)
        for k in L.inputs:
            if layers[k].output != "spikes" or layers[k].type not in _GRID_TYPES:
                ctx.fail(where, f"(conv) has {len(L.inputs)} inputs, and input layer {k} ({layers[k].type}, "
                                f"{layers[k].output}) is not a spiking grid layer; a conv with several inputs takes "
                                "spike trains only (format §5b)")
            if tuple(shapes[k]) != tuple(shapes[L.inputs[0]]):
                ctx.fail(where, f"(conv) input layer {k} has shape {tuple(shapes[k])}, input layer {L.inputs[0]} "
                                f"{tuple(shapes[L.inputs[0]])}; the inputs of a conv share one shape")
        if len(set(L.inputs)) != len(L.inputs):
            ctx.fail(where, "(conv) lists an input layer twice; one weight set per input layer")
    elif L.type in ("conv", "mst_readout"):
        if len(L.inputs) != 1:
            ctx.fail(where, f"({L.type}) takes one input, has {len(L.inputs)}")
        ok = ("mst_residual",) if L.type == "mst_readout" else _GRID_TYPES
        if src_types[0] not in ok:
            ctx.fail(where, f"({L.type}) takes its input from a {' or '.join(ok)} layer, not from layer "
                            f"{L.inputs[0]} ({src_types[0]})")
    elif L.type == "mst_residual":
        for k, t in zip(L.inputs, src_types):
            if t not in _GRID_TYPES:
                ctx.fail(where, f"(mst_residual) input layer {k} is a {t}; residual inputs are grid layers")
    elif L.type == "mst_qk":
        if len(L.inputs) != 2:
            ctx.fail(where, f"({L.type}) takes two inputs, has {len(L.inputs)}")
        for k, t in zip(L.inputs, src_types):
            if t != "conv":
                ctx.fail(where, f"(mst_qk) input layer {k} is a {t}; Q and K are spiking conv layers")
    elif L.type == "mst_softmax_av":
        if len(L.inputs) != 2:
            ctx.fail(where, f"({L.type}) takes two inputs, has {len(L.inputs)}")
        if src_types[0] != "mst_qk" or src_types[1] != "conv":
            ctx.fail(where, f"(mst_softmax_av) takes [mst_qk, conv] inputs, not {src_types}")
    for k in L.inputs:
        if layers[k].type == "mst_readout":
            ctx.fail(where, f"takes the readout (layer {k}) as input; the readout is the network's output")
        if layers[k].type == "mst_qk" and L.type != "mst_softmax_av":
            ctx.fail(where, f"takes the attention scores of layer {k} (mst_qk), which only mst_softmax_av reads")
    v2 = uses_stream_affine(L) or (L.type == "mst_readout" and "token_norm" in L.mst)
    if v2 and graph.mst_version is not None and graph.mst_version < 2:
        ctx.fail(where, f"uses {'a stream scale/offset' if L.type == 'mst_residual' else 'mst/token_norm'}, a field "
                        f"of extension version 2, but /mst has version {graph.mst_version}")
    if uses_channel_exponents(L) and graph.mst_version is not None and graph.mst_version < 4:
        ctx.fail(where, f"has one weight exponent per output channel, a field of extension version 4, but /mst has "
                        f"version {graph.mst_version}")
    if uses_graded_neurons(L) and graph.mst_version is not None and graph.mst_version < 4:
        ctx.fail(where, f"has graded IF_BURST neurons, a neuron type of extension version 4, but /mst has version "
                        f"{graph.mst_version}")
    if uses_source_weights(L) and graph.mst_version is not None and graph.mst_version < 3:
        ctx.fail(where, f"is a conv with {len(L.inputs)} spike inputs (one weight set each), a layer of extension "
                        f"version 3, but /mst has version {graph.mst_version}")
    if L.type == "mst_readout":
        x_bound = bounds.get(L.inputs[0], 1)
        tn = _str(ctx, wm, "token_norm", L.mst.get("token_norm", "none"), ("none", "layer"))
        if tn == "layer":
            _need(L.flt, ["norm_eps"], ctx, wf, "a readout with token_norm 'layer'")
            _float(ctx, wf, "norm_eps", L.flt["norm_eps"], positive=True)
            if fixed:
                _need(L.fix, ["norm_frac_bits"], ctx, wx, "a fixed readout with token_norm 'layer'")
                fbits = _int(ctx, wx, "norm_frac_bits", L.fix["norm_frac_bits"], 0, ops.NORM_MAX_FRAC_BITS)
                x_bound = ops.norm_bound(int(in_shapes[0][0]), fbits)
        _validate_synapse(L, ctx, where, fixed, in_shapes[0], layers[L.inputs[0]], x_bound)
    elif L.type == "conv":
        # several spike inputs (§5b): their weight sets side by side, as one conv over their stacked channels
        S = len(L.inputs)
        in_shape = in_shapes[0] if S == 1 else (S * int(in_shapes[0][0]),) + tuple(in_shapes[0][1:])
        _validate_synapse(L, ctx, where, fixed, in_shape, layers[L.inputs[0]], bounds.get(L.inputs[0], 1), S)
    elif L.type == "mst_residual":
        _validate_residual(L, ctx, where, fixed, in_shapes, layers, bounds, i)
    elif L.type in ("mst_qk", "mst_softmax_av"):
        _validate_attention(graph, L, ctx, where, fixed, in_shapes)


def _validate_synapse(L: Layer, ctx: _Ctx, where: str, fixed: bool, in_shape, src: Layer, x_bound: int,
                      n_sources: int = 1) -> None:
    wf, wx = where + "/mst/float", where + "/mst/fixed"
    if "weight" not in L.params:
        ctx.fail(where, f"({L.type}) has no 'weight'")
    if "bias" not in L.params:
        ctx.fail(where, f"({L.type}) has no 'bias'")
    w = L.params["weight"]
    fw = _float_array(ctx, wf, "weight", L.flt["weight"])
    fb = _float_array(ctx, wf, "bias", L.flt["bias"])
    if fixed:
        wi = _int_array(ctx, where, "weight", w, -ops.WEIGHT_MANT_MAX, ops.WEIGHT_MANT_MAX,
                        why="fixed weights are 8-bit signed mantissas in [-127, 127]")
    else:
        wi = _float_array(ctx, where, "weight", w)
    if fw.shape != np.asarray(w).shape:
        ctx.fail(where, "mst/float/weight and weight differ in shape")
    Co = int(np.asarray(w).shape[0]) if np.asarray(w).ndim else 0
    if L.type == "conv":
        if len(in_shape) != 3:
            ctx.fail(where, f"(conv) input has shape {tuple(in_shape)}; a conv takes a (C, H, W) grid")
        if n_sources > 1 and _int(ctx, where, "groups", L.params.get("groups", 1), 1) != 1:
            ctx.fail(where, f"groups is {L.params.get('groups')}; a conv with several inputs (one weight set each, "
                            "format §5b) has groups 1")
        _check_conv(L, in_shape, ctx, where, w)
    else:
        if wi.ndim != 2 or wi.shape[0] != int(np.prod(L.shape)) or wi.shape[1] != in_shape[0]:
            ctx.fail(where, f"readout weight {wi.shape} does not map {in_shape[0]} channels to {L.shape}")
    if fb.shape != (Co,):
        ctx.fail(wf, f"bias has shape {fb.shape}, expected ({Co},)")
    if fixed:
        if L.type == "conv" and n_sources > 1:             # one exponent per input (§5b)
            e = _int_array(ctx, wx, "weight_exp", L.fix["weight_exp"], ops.WEIGHT_EXP_MIN, ops.WEIGHT_EXP_MAX,
                           shape=(n_sources,), why="Loihi's weight exponent, one per input")
        elif L.type == "conv" and np.size(L.fix["weight_exp"]) > 1:      # one per output channel (version 4)
            e = _int_array(ctx, wx, "weight_exp", L.fix["weight_exp"], ops.WEIGHT_EXP_MIN, ops.WEIGHT_EXP_MAX,
                           shape=(Co,), why="Loihi's weight exponent, one per output channel")
        elif L.type == "conv":
            e = _int(ctx, wx, "weight_exp", L.fix["weight_exp"], ops.WEIGHT_EXP_MIN, ops.WEIGHT_EXP_MAX,
                     "Loihi's weight exponent")
        if L.type == "conv":
            be = _int(ctx, wx, "bias_exp", L.fix["bias_exp"], ops.BIAS_EXP_MIN, ops.BIAS_EXP_MAX,
                      "Loihi's bias exponent is unsigned 3-bit")
            lim = ops.BIAS_MANT_MAX << be
            b = _int_array(ctx, where, "bias", L.params["bias"], -lim, lim, shape=(Co,),
                           why=f"a 13-bit bias mantissa << bias_exp {be}")
            if be and np.any(b % (1 << be)):
                j = int(np.argmax(b % (1 << be) != 0))
                ctx.fail(where, f"bias[{j}] = {int(b[j])} is not a multiple of 2**bias_exp = {1 << be}")
            del e
        else:
            _int(ctx, wx, "weight_exp", L.fix["weight_exp"], 0, ops.READOUT_MAX_WEIGHT_EXP)
            lim = (1 << ops.READOUT_BIAS_BITS) - 1
            _int_array(ctx, where, "bias", L.params["bias"], -lim, lim, shape=(Co,),
                       why=f"the readout bias is below 2**{ops.READOUT_BIAS_BITS}")
            _float(ctx, wx, "unit", L.fix["unit"], positive=True)
            # W · Σ_tokens x exact in float64 (torch), then · 2**weight_exp + b in int64
            n_tok = int(np.prod(in_shape[1:]))
            acc = float(x_bound) * n_tok * float(np.abs(wi).sum(axis=1).max(initial=0))
            if acc >= 2.0 ** 53:
                ctx.fail(where, f"the readout product can reach {acc:.3g}, beyond exact integer arithmetic (2**53)")
            y = acc * 2.0 ** int(L.fix["weight_exp"]) + float(lim)
            if y >= 2.0 ** 62:
                ctx.fail(where, f"the readout can reach {y:.3g} per step, beyond int64 accumulation")
    else:
        _float_array(ctx, where, "bias", L.params["bias"], shape=(Co,))


def _validate_residual(L: Layer, ctx: _Ctx, where: str, fixed: bool, in_shapes, layers, bounds, i) -> None:
    wf, wx = where + "/mst/float", where + "/mst/fixed"
    g = _float_array(ctx, wf, "gain", L.flt["gain"]).reshape(-1)
    if g.size != len(L.inputs):
        ctx.fail(where, f"mst/float/gain has {g.size} entries for {len(L.inputs)} inputs")
    _int(ctx, where + "/mst", "stage", L.mst.get("stage", 0), 0, 1 << 20)
    affine = uses_stream_affine(L)
    if affine:         # extension version 2 (§5a): scale ⊙ in_0 + offset, in_0 graded with gain 1
        _need(L.flt, ["scale", "offset"], ctx, wf, "a residual with a stream scale")
        C = int(L.shape[0])
        _float_array(ctx, wf, "scale", L.flt["scale"], shape=(C,))
        _float_array(ctx, wf, "offset", L.flt["offset"], shape=(C,))
        if layers[L.inputs[0]].output != "graded":
            ctx.fail(where, f"has a stream scale, but its first input (layer {L.inputs[0]}) is spikes, not the "
                            "graded stream")
        if float(g[0]) != 1.0:
            ctx.fail(wf, f"gain[0] is {float(g[0])}; the input a stream scale acts on has gain 1")
    for k, s in zip(L.inputs, in_shapes):
        if tuple(s) != tuple(L.shape):
            ctx.fail(where, f"input layer {k} has shape {tuple(s)}, residual shape is {tuple(L.shape)}")
    if fixed:
        lim = (1 << ops.RESIDUAL_GAIN_BITS) - 1
        gi = _int_array(ctx, wx, "gain", L.fix["gain"], -lim, lim,
                        why=f"residual gains are below 2**{ops.RESIDUAL_GAIN_BITS}").reshape(-1)
        if gi.size != len(L.inputs):
            ctx.fail(wx, f"gain has {gi.size} entries for {len(L.inputs)} inputs")
        _float(ctx, wx, "unit", L.fix["unit"], positive=True)
        bnd = sum(abs(int(gk)) * (neurons.burst_of(layers[k].neuron) if layers[k].output == "spikes"
                                  else bounds.get(k, 1))
                  for k, gk in zip(L.inputs, gi))
        if affine:
            _need(L.fix, ["scale_mant", "scale_shift", "offset"], ctx, wx, "a residual with a stream scale")
            lim = (1 << ops.STREAM_SCALE_BITS) - 1
            C = int(L.shape[0])
            m = _int_array(ctx, wx, "scale_mant", L.fix["scale_mant"], -lim, lim, shape=(C,),
                           why=f"stream scale mantissas are below 2**{ops.STREAM_SCALE_BITS}")
            sh = _int(ctx, wx, "scale_shift", L.fix["scale_shift"], 0, ops.STREAM_SCALE_MAX_SHIFT)
            off = _int_array(ctx, wx, "offset", L.fix["offset"], -ops.PAYLOAD_MAX, ops.PAYLOAD_MAX, shape=(C,),
                             why="a stream offset is a 24-bit graded value")
            if int(gi[0]) != 1:
                ctx.fail(wx, f"gain[0] is {int(gi[0])}; the input a stream scale acts on has gain 1")
            b0 = bounds.get(L.inputs[0], 1)
            mmax = int(np.max(np.abs(m), initial=0))
            bnd += ((mmax * b0 + (1 << sh) - 1) >> sh) - b0 + int(np.max(np.abs(off), initial=0))
        if bnd > ops.PAYLOAD_MAX:
            ctx.fail(wx, f"gains let the residual payload reach {bnd}, beyond Loihi's 24-bit graded spikes "
                         f"(|x| <= {ops.PAYLOAD_MAX})")
        bounds[i] = bnd


def _validate_attention(graph: NetxGraph, L: Layer, ctx: _Ctx, where: str, fixed: bool, in_shapes) -> None:
    wm, wf, wx = where + "/mst", where + "/mst/float", where + "/mst/fixed"
    _need(L.mst, ["window", "shift", "heads", "grid"], ctx, wm, f"{L.type}")
    w = _int(ctx, wm, "window", L.mst["window"], 1, 1 << 12)
    h = _int(ctx, wm, "heads", L.mst["heads"], 1, 1 << 12)
    sh = _int(ctx, wm, "shift", L.mst["shift"], 0, w - 1, "a cyclic shift is smaller than the window")
    del sh
    grid = _int_array(ctx, wm, "grid", L.mst["grid"], 1, 1 << 16)
    if grid.size != 2:
        ctx.fail(wm, f"grid has {grid.size} entries; (H, W) belongs here")
    H, W = (int(v) for v in grid.reshape(-1))
    if H % w or W % w:
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
        _float(ctx, wf, "scale", L.flt["scale"], positive=True)
        if fixed:
            _int(ctx, wx, "scale_mant", L.fix["scale_mant"], 1, (1 << ops.SCALE_BITS) - 1)
            _int(ctx, wx, "scale_shift", L.fix["scale_shift"], -16, 48)
        return
    if tuple(in_shapes[0]) != (nW, h, N, N):
        ctx.fail(where, f"A input has shape {tuple(in_shapes[0])}, expected {(nW, h, N, N)}")
    if tuple(L.shape) != tuple(in_shapes[1]):
        ctx.fail(where, f"shape {tuple(L.shape)} should equal V's {tuple(in_shapes[1])}")
    _float(ctx, wf, "theta_a", L.flt["theta_a"], positive=True)
    _float(ctx, wf, "theta_v", L.flt["theta_v"], positive=True)
    _float_array(ctx, wf, "bias", L.flt["bias"], shape=(h, N, N))
    if "mask" in L.flt:
        _float_array(ctx, wf, "mask", L.flt["mask"], shape=(nW, N, N))
    if fixed:
        lim = 1 << 24
        _int(ctx, wx, "a_mult", L.fix["a_mult"], 0, lim)
        _int_array(ctx, wx, "bias", L.fix["bias"], -lim, lim, shape=(h, N, N))
        if "mask" in L.fix:
            _int_array(ctx, wx, "mask", L.fix["mask"], -lim, lim, shape=(nW, N, N))
        if ("mask" in L.fix) != ("mask" in L.flt):
            ctx.fail(wx, "mst/fixed/mask and mst/float/mask must both be present or both absent")
        _int(ctx, wx, "v_mant", L.fix["v_mant"], 1, (1 << ops.V_BITS) - 1)
        _int(ctx, wx, "v_shift", L.fix["v_shift"], -16, 48)
        if graph.exp_table is None:
            ctx.fail("/mst", "fixed file with softmax layers lacks mst/exp_table")
