"""In-memory form of a netx / mst_lava.netx file: a list of layers in topological order.

A :class:`Layer` keeps the groups of one ``/layer/<i>`` HDF5 group apart:

* ``params``  standard netx datasets (``weight``, ``bias``, ``stride``, ...),
* ``neuron``  the ``neuron/`` group (dict) or None,
* ``mst``     the ``mst/`` scalars (name, inputs, site, layout, ...),
* ``flt``     ``mst/float/*`` and ``fix`` ``mst/fixed/*`` arrays and scalars.

See docs/netx-mst-format.md for the meaning of every key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "mst_lava.netx"
FORMAT_VERSION = 2          # 2: Loihi bit widths (vThMant is the 17-bit mantissa, threshold = vThMant << 6)
MST_VERSION = 4             # the newest /mst extension version this code reads and writes
MST_VERSIONS = (1, 2, 3, 4)  # 2 adds the official MST topology (format section 5a), 3 the event-driven merge (a conv
                            # with several spike inputs, one weight set each: section 5b), 4 graded IF_BURST neurons
                            # (section 2, "Neuron group"); 1 files are read as before
VTH_SHIFT = 6               # Loihi: the threshold mantissa is left-shifted by 6 (netx_ops.VTH_SHIFT)

STANDARD_TYPES = ("input", "conv", "dense", "flatten")
# the layer types of an MST file, what each outputs, whether it owns neurons: mst_lava.export.layers.LAYER_TYPES
LAYOUTS = ("grid", "window_heads", "window_tokens", "attn", "flat", "none")
# File attributes stored as JSON text (an HDF5 attribute holds no dict). In memory (a NetxGraph's
# ``attrs``) they are dicts: ``write_network`` encodes exactly these, ``read_network`` decodes them all.
JSON_ATTRS = ("model_config", "mask", "checkpoint_metrics")


@dataclass
class Layer:
    type: str
    shape: tuple
    name: str = ""
    inputs: list = field(default_factory=list)
    output: str = "spikes"           # "spikes" | "graded"
    params: dict = field(default_factory=dict)
    neuron: dict | None = None
    mst: dict = field(default_factory=dict)
    flt: dict = field(default_factory=dict)
    fix: dict = field(default_factory=dict)

    @property
    def site(self) -> str:
        """The RSM site name (``mst/site``), "" if none."""
        return str(self.mst.get("site", ""))

    @property
    def block(self) -> int:
        """The block index of the site (``mst/block``), -1 if none."""
        return int(self.mst.get("block", -1))

    @property
    def rsm_ratio(self) -> float:
        """The probability of dropping a spike at this layer (``mst/rsm_ratio``)."""
        return float(self.mst.get("rsm_ratio", 0.0))

    @property
    def has_neuron(self) -> bool:
        """Whether the layer owns a neuron population (a ``neuron/`` group)."""
        return self.neuron is not None

    def threshold(self, precision: str):
        """The neuron threshold in the precision's units (θ float; fixed: vth = vThMant << 6, membrane units)."""
        if self.neuron is None:
            raise ValueError(f"layer {self.name} has no neuron")
        if precision == "fixed":
            return int(self.neuron["vThMant"]) << VTH_SHIFT
        return float(self.neuron["threshold"])


@dataclass
class NetxGraph:
    layers: list
    attrs: dict = field(default_factory=dict)
    exp_table: np.ndarray | None = None
    kind: str = "mst"                # "mst" (an mst_lava.netx file) | "netx" (plain lava-dl netx)
    path: str | None = None
    mst_version: int | None = None   # the /mst extension version read from the file (None: not read from a file)

    @property
    def precision(self) -> str:
        """``float`` or ``fixed``: the file's precision attribute."""
        return str(self.attrs.get("precision", "float"))

    @property
    def seed(self) -> int:
        """The RSM seed written into the file (``rsm_seed``)."""
        return int(self.attrs.get("rsm_seed", 0))

    def __len__(self) -> int:
        return len(self.layers)

    def index(self, name: str) -> int:
        """The index of the layer named ``name`` (KeyError if none)."""
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(name)

    def sites(self) -> list[tuple[int, Layer]]:
        """(index, layer) of every layer that is an RSM site (owns a named neuron population)."""
        return [(i, layer) for i, layer in enumerate(self.layers) if layer.site]

    def summary(self) -> str:
        """A printable table of the layers: index, type, name, shape, inputs, site, threshold."""
        rows = []
        for i, layer in enumerate(self.layers):
            site = f"{layer.site}@{layer.block}" if layer.site else ""
            r = f" rsm={layer.rsm_ratio:g}" if layer.rsm_ratio else ""
            rows.append(f"{i:4d} {layer.type:15s} {str(tuple(int(s) for s in layer.shape)):18s} "
                        f"{layer.name:24s} in={list(layer.inputs)} {site}{r}")
        return "\n".join(rows)


def uses_stream_affine(layer: Layer) -> bool:
    """An ``mst_residual`` with a per-channel affine on its first input (extension version 2, §5a)."""
    return layer.type == "mst_residual" and ("scale" in layer.flt or "offset" in layer.flt)


def uses_source_weights(layer: Layer) -> bool:
    """A ``conv`` with several spike inputs and one weight set per input (extension version 3, §5b: the
    event-driven patch merging)."""
    return layer.type == "conv" and len(layer.inputs) > 1


def uses_graded_neurons(layer: Layer) -> bool:
    """A layer whose neurons send graded payloads (``neuron/type`` IF_BURST: extension version 4)."""
    return layer.neuron is not None and str(layer.neuron.get("type", "IF")) == "IF_BURST"


def uses_channel_exponents(layer: Layer) -> bool:
    """A single-input ``conv`` of a fixed file with one weight exponent per output channel (extension version 4)."""
    return layer.type == "conv" and len(layer.inputs) == 1 and layer.fix is not None \
        and np.size(layer.fix.get("weight_exp", 0)) > 1


def token_norm(layer: Layer) -> str:
    """The readout's per-token normalization: "none" or "layer" (extension version 2, §5a)."""
    return str(layer.mst.get("token_norm", "none"))


def extension_version(graph: NetxGraph) -> int:
    """The /mst extension version a graph needs: 3 if a conv has several spike inputs (§5b), else 2 if it uses
    a version-2 field (§5a), else 1 (so files of this project's own MST stay readable by the mst_lava releases
    that read version 1 only, and files of the official topology by those that read version 2)."""
    if any(uses_graded_neurons(layer) or uses_channel_exponents(layer) for layer in graph.layers):
        return 4
    if any(uses_source_weights(layer) for layer in graph.layers):
        return 3
    for layer in graph.layers:
        if uses_stream_affine(layer) or (layer.type == "mst_readout" and "token_norm" in layer.mst):
            return 2
    return 1


def jsonable(v: Any):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v
