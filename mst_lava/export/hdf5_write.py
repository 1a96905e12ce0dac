"""Writing a netx / mst_lava.netx HDF5 file (docs/netx-mst-format.md): ``write_network(path, graph)``.

The file is built in memory (h5py's core driver) and written atomically with plain file I/O, so a full disk is one
OSError and never a half-written HDF5 file. Reading and validating: :mod:`mst_lava.export.hdf5_read`.
"""
from __future__ import annotations

import json

import numpy as np

try:  # the torch executor and exporter work without h5py; only file I/O needs it
    import h5py
except ImportError:  # pragma: no cover
    h5py = None

from mst_lava.errors import MSTError
from mst_lava.export.graph import (
    FORMAT,
    FORMAT_VERSION,
    JSON_ATTRS,
    NetxGraph,
    extension_version,
)
from mst_lava.fileio import atomic_write

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


class _HDF5Image:
    """``with _HDF5Image(tmp) as f:`` builds the HDF5 file in memory (h5py's core driver, no
    backing store) and, when the block ends without error, writes the file image to ``tmp`` with
    plain file I/O. HDF5 itself never writes to the disk, so a full disk cannot leave it closing
    a half-written file (that printed thousands of h5py tracebacks and crashed with SIGSEGV): the
    write fails with one OSError, which ``atomic_write`` turns into one line. An interrupt that
    h5py's callbacks swallowed is raised before anything is written."""

    CHUNK = 1 << 24

    def __init__(self, path) -> None:
        self.path, self.file = str(path), None

    def __enter__(self):
        self.file = h5py.File(self.path, "w", driver="core", backing_store=False)
        return self.file

    def __exit__(self, exc_type, exc, tb) -> bool:
        from mst_lava import interrupts
        f, self.file, image = self.file, None, None
        try:
            if exc_type is None:
                f.flush()
                image = f.id.get_file_image()
        finally:
            f.close()
        if image is not None:
            interrupts.check()
            view = memoryview(image)
            with open(self.path, "wb") as out:
                for i in range(0, len(view), self.CHUNK):
                    out.write(view[i:i + self.CHUNK])
        return False


def _attr_value(key: str, v):
    """A file attribute as stored: the JSON attributes (``graph.JSON_ATTRS``) as JSON text, read back as
    dicts by ``read_network``; no other attribute may be a dict (it would not read back as one)."""
    if key in JSON_ATTRS:
        return json.dumps(json.loads(v) if isinstance(v, str) else v)
    if isinstance(v, dict):
        raise ValueError(f"attribute {key!r} is a dict; only {', '.join(JSON_ATTRS)} are stored as JSON")
    return v


def write_network(path, graph: NetxGraph) -> None:
    """Write ``graph`` to ``path`` (atomic). MST graphs get the format tag and ``mst/`` groups."""
    _need_h5py()
    def _write(tmp: str) -> None:
        with _HDF5Image(tmp) as f:
            if graph.kind == "mst":
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
            for k, v in graph.attrs.items():
                if k in ("format", "format_version"):
                    continue
                f.attrs[k] = _attr_value(k, v)
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
                mg.attrs["version"] = extension_version(graph)     # 1 unless a version-2 field is used
                if graph.exp_table is not None:
                    ds = mg.create_dataset("exp_table", data=np.asarray(graph.exp_table, dtype=np.int64))
                    for k in ("frac_bits", "out_bits", "prob_bits"):
                        ds.attrs[k] = int(graph.attrs[f"softmax_{k}"])
    atomic_write(path, _write)
