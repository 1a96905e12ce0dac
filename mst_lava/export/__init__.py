"""Export: trained MST → netx HDF5 (BN folding, fixed-point quantization), reader, torch executor.

    from mst_lava.export import export_checkpoint, read_network, NetSim
    export_checkpoint("export/digits.pt", "export/digits.net", precision="fixed")
    graph = read_network("export/digits.net")
    res = NetSim(graph).run(images, T=32)

The file format is specified in docs/netx-mst-format.md. The format core (``graph``, the reader
and writer in ``hdf5io``) needs numpy and h5py only; the exporter and ``NetSim`` (torch) are
imported on first use of their names, so ``from mst_lava.export import read_network`` loads no
torch (the Lava runtime runs without it).
"""
from __future__ import annotations

from mst_lava.export.graph import FORMAT, FORMAT_VERSION, Layer, NetxGraph
from mst_lava.lazy import lazy_attributes

# name → module that defines it (imported when the name is first used)
_LAZY = {"read_network": "mst_lava.export.hdf5io", "write_network": "mst_lava.export.hdf5io",
         **{name: "mst_lava.export.exporter" for name in ("bn_fold", "export_checkpoint", "export_model",
                                                          "merge_conv_weight", "quantize_graph")},
         **{name: "mst_lava.export.netsim" for name in ("NetSim", "SimResult", "count_synops")}}

__all__ = ["FORMAT", "FORMAT_VERSION", "Layer", "NetxGraph", "bn_fold", "export_checkpoint", "export_model",
           "merge_conv_weight", "quantize_graph", "read_network", "write_network", "NetSim", "SimResult",
           "count_synops"]


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
