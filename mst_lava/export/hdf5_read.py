"""Reading a netx / mst_lava.netx HDF5 file: ``read_network(path) -> NetxGraph``.

Reads an mst_lava.netx file or a plain lava-dl netx file: sizes are checked from the declared shapes before any
dataset is read, links that leave the file are refused, strings and JSON attributes decoded, and the graph is then
validated by structure and by value (:mod:`mst_lava.export.validate`). Every problem raises :class:`MSTError` naming
the file, the layer and the field. It is the one place files are read: NetSim, the Lava builder and ``mst verify``
all read through it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mst_lava import netx_ops as ops
from mst_lava.errors import MSTError
from mst_lava.export.graph import (
    FORMAT,
    FORMAT_VERSION,
    JSON_ATTRS,
    MST_VERSION,
    MST_VERSIONS,
    Layer,
    NetxGraph,
)
from mst_lava.export.hdf5_write import _need_h5py, h5py  # h5py: None where it is not installed
from mst_lava.export.validate import _describe, _int, _validate

# keys of standard layer groups that we read as arrays (netx reads the same names)
_STD_KEYS = ("weight", "bias", "stride", "padding", "dilation", "groups", "inChannels", "outChannels",
             "kernelSize", "inFeatures", "outFeatures", "delay", "weight_rec")

# ----------------------------------------------------------------------------------------
# reading

# Sizes are checked on the declared shape before a dataset is read: no file can make the
# reader (or an executor sized by the file) allocate more than the machine has.
MAX_DATASET_ELEMENTS = 1 << 27          # 128 Mi elements in one dataset (1 GiB of int64)
MAX_LAYER_ELEMENTS = 1 << 27            # neurons (or product elements) of one layer, per sample
MAX_LAYERS = 100_000
MAX_EXP_TABLE = 1 << 20


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


class _Ctx:
    def __init__(self, path):
        self.path = str(path)
        self.budget = _memory_bytes() // 4       # everything read from one file together
        self.read_bytes = 0

    def fail(self, where: str, what: str):
        raise MSTError(f"{self.path}: {where}: {what}")

    # -- guarded dataset reads -------------------------------------------------------------
    def dataset(self, ds, where: str):
        """Read ``ds`` after checking its declared size and kind; strings come back as str."""
        shape = ds.shape
        if shape is None:
            self.fail(where, "is an empty (null) dataset")
        n = int(np.prod(shape, dtype=np.float64)) if shape else 1
        kind = ds.dtype.kind
        if kind == "O" and h5py.check_string_dtype(ds.dtype) is None:
            self.fail(where, f"has HDF5 type {ds.dtype} (object references or variable-length arrays); "
                             "numbers or strings belong here")
        if kind not in "iufbSOU":
            self.fail(where, f"has HDF5 type {ds.dtype}; numbers or strings belong here")
        if n > MAX_DATASET_ELEMENTS:
            self.fail(where, f"declares {n:,} elements (shape {tuple(shape)}), more than a network file may hold "
                             f"({MAX_DATASET_ELEMENTS:,} per dataset); refusing to read it")
        size = n * max(int(ds.dtype.itemsize), 1)
        self.read_bytes += size
        if self.read_bytes > self.budget:
            self.fail(where, f"the file's datasets add up to more than {self.budget / 2 ** 30:.1f} GiB "
                             "(a quarter of this machine's memory); refusing to read it")
        v = ds[()]
        if isinstance(v, bytes):
            return _decode(v, self, where)
        if isinstance(v, np.ndarray) and v.dtype.kind in "SO":
            if v.size == 1 and v.dtype.kind == "S":
                return _decode(v.reshape(-1)[0], self, where)
            if v.size == 1 and isinstance(v.reshape(-1)[0], bytes):
                return _decode(v.reshape(-1)[0], self, where)
            return v
        if isinstance(v, np.generic):
            return v.item()
        return v

    def group(self, g, where: str, depth: int = 0) -> dict:
        if depth > 4:
            self.fail(where, "groups are nested too deeply")
        out = {}
        for k in g.keys():
            item = g[k]
            w = f"{where}/{k}"
            if isinstance(item, h5py.Group):
                out[k] = self.group(item, w, depth + 1)
            elif isinstance(item, h5py.Dataset):
                out[k] = self.dataset(item, w)
        return out


def _decode(b: bytes, ctx: _Ctx, where: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        ctx.fail(where, "is not valid UTF-8 text")


def _type_str(g, ctx: _Ctx, where: str) -> str:
    if "type" not in g or not isinstance(g["type"], h5py.Dataset):
        ctx.fail(where, "has no 'type' dataset (every netx layer needs one)")
    v = ctx.dataset(g["type"], where + "/type")
    if isinstance(v, np.ndarray):
        if v.size == 0:
            ctx.fail(where, "'type' is empty")
        v = v.reshape(-1)[0]
        v = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    if not isinstance(v, str):
        ctx.fail(where, f"'type' is {v!r}; a layer type name (string) belongs here")
    return v


def read_network(path) -> NetxGraph:
    """Read and validate an mst_lava.netx or plain netx HDF5 file (see docs/netx-mst-format.md)."""
    _need_h5py()
    p = Path(path)
    ctx = _Ctx(p)
    if not p.exists():
        raise MSTError(f"network file {p} does not exist; create one with `mst-export model.pt -o {p}`")
    if p.is_dir():
        raise MSTError(f"network path {p} is a directory, not a .net file")
    if not p.is_file():
        raise MSTError(f"network path {p} is not a regular file")
    if not h5py.is_hdf5(p):
        size = p.stat().st_size
        raise MSTError(f"{p} is not an HDF5 file ({size} bytes; truncated, corrupt or another format); "
                       "re-create it with `mst-export`")
    try:
        with h5py.File(p, "r") as f:
            _refuse_links(f, ctx)           # before any dataset is read: nothing outside the file is opened
            graph = _read_file(f, ctx)
    except MSTError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, OverflowError, MemoryError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MSTError(f"{p} could not be read (truncated or corrupt HDF5: {why}); "
                       "re-create it with `mst-export`") from None
    graph.path = str(p)
    try:
        _validate(graph, ctx)
    except MSTError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, ZeroDivisionError) as e:  # pragma: no cover
        raise MSTError(f"{p}: invalid network ({type(e).__name__}: {e})") from None
    return graph


def _refuse_links(f, ctx: _Ctx) -> None:
    """Walk every member of the file by its links, without resolving any but hard links, and refuse soft and
    external links and datasets whose data lives in other files (external storage, virtual datasets): following
    them opens paths outside the file (a named pipe there blocks the reader for ever). Nothing is read."""
    seen = set()
    stack = [(f, "")]
    while stack:
        g, prefix = stack.pop()
        for name in g.keys():                       # link names: resolves nothing
            path = f"{prefix}/{name}"
            link = g.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                ctx.fail(path.lstrip("/"), f"is an HDF5 external link to {link.filename}:{link.path}; a network "
                                           "file is self-contained (links that leave the file are refused)")
            if isinstance(link, h5py.SoftLink):
                ctx.fail(path.lstrip("/"), f"is an HDF5 soft link to {link.path}; a network file holds its "
                                           "members directly (soft and external links are refused)")
            if not isinstance(link, h5py.HardLink):
                ctx.fail(path.lstrip("/"), f"is an HDF5 link of an unknown kind ({type(link).__name__})")
            obj = g[name]
            if isinstance(obj, h5py.Dataset):
                if obj.external or obj.is_virtual:
                    ctx.fail(path.lstrip("/"), "keeps its data in other files (HDF5 external storage or a "
                                               "virtual dataset); a network file is self-contained")
            elif isinstance(obj, h5py.Group):
                addr = h5py.h5o.get_info(obj.id).addr
                if addr not in seen:                # a hard link back up the tree: walk each group once
                    seen.add(addr)
                    stack.append((obj, path))


def _value_attr(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def _json_attrs(attrs: dict, ctx: _Ctx) -> None:
    """Decode every attribute the writer stores as JSON (``JSON_ATTRS``) into the dict it was."""
    for k in JSON_ATTRS:
        if k not in attrs:
            continue
        v = attrs[k]
        if not isinstance(v, str):
            ctx.fail("/", f"attribute {k} is {_describe(v)}; JSON text of an object belongs here")
        try:
            v = json.loads(v)
        except (json.JSONDecodeError, RecursionError):
            ctx.fail("/", f"attribute {k!r} is not valid JSON")
        if not isinstance(v, dict):
            ctx.fail("/", f"attribute {k} is {_describe(v)}; a JSON object belongs here")
        attrs[k] = v
    for site, ratio in attrs.get("mask", {}).items():
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
            ctx.fail("/", f"attribute mask: {site!r} has ratio {ratio!r}; a ratio is a number in [0, 1)")


def _read_file(f, ctx: _Ctx) -> NetxGraph:
    attrs = {k: _value_attr(v) for k, v in f.attrs.items()}
    _json_attrs(attrs, ctx)
    fmt = attrs.get("format")
    if fmt is None:
        kind = "netx"
    elif fmt != FORMAT:
        ctx.fail("/", f"format tag is {fmt!r}, expected {FORMAT!r}")
    else:
        kind = "mst"
        ver = attrs.get("format_version")
        if ver != FORMAT_VERSION or isinstance(ver, bool):
            hint = (" (version 1 files predate Loihi's bit widths: re-export with `mst-export`)"
                    if ver == 1 else " (re-export with this version's `mst-export`)")
            ctx.fail("/", f"format_version is {ver!r}; this mst_lava reads version {FORMAT_VERSION}{hint}")
        if attrs.get("precision") not in ("float", "fixed"):
            ctx.fail("/", f"attribute 'precision' is {attrs.get('precision')!r}, expected 'float' or 'fixed'")
    if "layer" not in f or not isinstance(f["layer"], h5py.Group):
        ctx.fail("/", "has no 'layer' group: not a netx network")
    lg = f["layer"]
    keys = list(lg.keys())
    if len(keys) > MAX_LAYERS:
        ctx.fail("/layer", f"has {len(keys)} members, more than {MAX_LAYERS}")
    bad = sorted(k for k in keys if not (k.isdigit() and k.isascii()))
    if bad:
        ctx.fail("/layer", f"has non-numeric members {bad[:5]}")
    idx = sorted(int(k) for k in keys)
    if idx != list(range(len(idx))):
        ctx.fail("/layer", f"layer numbers must be 0..{len(idx) - 1} without gaps, found {idx[:20]}")
    if not idx:
        ctx.fail("/layer", "is empty")
    layers = []
    for i in idx:
        where = f"layer/{i}"
        g = lg[str(i)]
        if not isinstance(g, h5py.Group):
            ctx.fail(where, "is not a group")
        typ = _type_str(g, ctx, where)
        label = where                   # "layer/i (name)" in messages once the name is known
        if kind == "mst" and "mst" in g and isinstance(g["mst"], h5py.Group) and \
                isinstance(g["mst"].get("name"), h5py.Dataset):
            nm = ctx.dataset(g["mst"]["name"], where + "/mst/name")
            if isinstance(nm, str) and nm:
                label = f"{where} ({nm})"
        shape = None
        if "shape" in g:
            if not isinstance(g["shape"], h5py.Dataset):
                ctx.fail(label, "'shape' is not a dataset")
            shape = _shape_of(ctx.dataset(g["shape"], where + "/shape"), ctx, label)
        params = {k: ctx.dataset(g[k], f"{where}/{k}") for k in _STD_KEYS if k in g and isinstance(g[k], h5py.Dataset)}
        neuron = None
        if "neuron" in g:
            if not isinstance(g["neuron"], h5py.Group):
                ctx.fail(where, "'neuron' is not a group")
            neuron = ctx.group(g["neuron"], where + "/neuron")
        layer = Layer(type=typ, shape=shape, params=params, neuron=neuron)
        if kind == "mst":
            if "mst" not in g or not isinstance(g["mst"], h5py.Group):
                ctx.fail(where, f"({typ}) has no 'mst' group, which every layer of an {FORMAT} file carries")
            m = ctx.group(g["mst"], where + "/mst")
            name = m.pop("name", "")
            if not isinstance(name, str):
                ctx.fail(where + "/mst/name", f"is {name!r}; a layer name (string) belongs here")
            layer.name = name
            layer.inputs = _inputs_of(m.pop("inputs", np.zeros(0, dtype=np.int64)), ctx, label)
            out = m.pop("output", "spikes")
            if not isinstance(out, str):
                ctx.fail(where + "/mst/output", f"is {out!r}; 'spikes' or 'graded' belongs here")
            layer.output = out
            for key, attr in (("float", "flt"), ("fixed", "fix")):
                v = m.pop(key, {}) or {}
                if not isinstance(v, dict):
                    ctx.fail(f"{where}/mst/{key}", "is not a group")
                setattr(layer, attr, v)
            layer.mst = m
        else:
            layer.name = f"layer{i}"
            layer.inputs = [i - 1] if i > 0 else []
            layer.output = "spikes" if neuron is not None else "graded"
        layers.append(layer)
    graph = NetxGraph(layers=layers, attrs=attrs, kind=kind)
    if kind == "mst":
        if "mst" not in f or not isinstance(f["mst"], h5py.Group):
            ctx.fail("/mst", "group is missing")
        mv = f["mst"].attrs.get("version")
        if mv is None:
            ctx.fail("/mst", "group or its 'version' attribute is missing")
        mv = _value_attr(mv)
        if not isinstance(mv, int) or isinstance(mv, bool) or mv not in MST_VERSIONS:
            newer = " (written by a newer mst_lava: update mst_lava)" if isinstance(mv, int) and mv > MST_VERSION \
                else ""
            ctx.fail("/mst", f"extension version {mv!r}; this mst_lava reads versions "
                             f"{', '.join(map(str, MST_VERSIONS))}{newer}")
        graph.mst_version = mv
        if "exp_table" in f["mst"]:
            _read_exp_table(f["mst"]["exp_table"], graph, ctx)
    return graph


def _shape_of(v, ctx: _Ctx, where: str) -> tuple:
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        ctx.fail(where, f"shape is {_describe(v)}; integers belong here")
    a = a.reshape(-1)
    if a.size == 0 or a.size > 4:
        ctx.fail(where, f"shape has {a.size} entries; a layer shape has 1 to 4")
    if np.any(a <= 0):
        ctx.fail(where, f"shape {tuple(int(s) for s in a)} has non-positive entries")
    n = float(np.prod(a.astype(np.float64)))
    if n > MAX_LAYER_ELEMENTS:
        ctx.fail(where, f"shape {tuple(int(s) for s in a)} is {n:,.0f} elements per sample, more than "
                        f"{MAX_LAYER_ELEMENTS:,}; refusing a layer that cannot fit in memory")
    return tuple(int(s) for s in a)


def _inputs_of(v, ctx: _Ctx, where: str) -> list:
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        ctx.fail(where + "/mst", f"inputs is {_describe(v)}; layer indices (integers) belong here")
    a = a.reshape(-1)
    if a.size > 64:
        ctx.fail(where + "/mst", f"inputs lists {a.size} layers; at most 64")
    return [int(x) for x in a]


def _read_exp_table(ds, graph: NetxGraph, ctx: _Ctx) -> None:
    where = "mst/exp_table"
    if not isinstance(ds, h5py.Dataset):
        ctx.fail(where, "is not a dataset")
    for k in ("frac_bits", "out_bits", "prob_bits"):
        if k not in ds.attrs:
            ctx.fail(where, f"lacks attribute {k!r}")
        graph.attrs[f"softmax_{k}"] = _int(ctx, where, f"attribute {k}", _value_attr(ds.attrs[k]), 0, 24)
    fb, ob = graph.attrs["softmax_frac_bits"], graph.attrs["softmax_out_bits"]
    if graph.attrs["softmax_prob_bits"] < 1 or ob < 1:
        ctx.fail(where, "out_bits and prob_bits must be at least 1")
    if ds.dtype.kind not in "iu":
        ctx.fail(where, f"has element type {ds.dtype}; the exp table holds integers")
    if ds.ndim != 1 or ds.shape[0] < 2 or ds.shape[0] > MAX_EXP_TABLE:
        ctx.fail(where, f"has shape {ds.shape}; a 1-D table of 2 to {MAX_EXP_TABLE:,} entries belongs here")
    want = ops.make_exp_table(fb, ob)
    if ds.shape[0] != want.shape[0]:
        ctx.fail(where, f"has {ds.shape[0]} entries; frac_bits {fb}, out_bits {ob} define a table of "
                        f"{want.shape[0]} (round(2**out_bits · exp(−k / 2**frac_bits)) up to the first 0)")
    tab = np.asarray(ctx.dataset(ds, where), dtype=np.int64)
    if not np.array_equal(tab, want):
        k = int(np.argmax(tab != want))
        ctx.fail(where, f"entry {k} is {int(tab[k])}, expected {int(want[k])} = round(2**{ob} · exp(−{k}/2**{fb}))")
    graph.exp_table = tab
