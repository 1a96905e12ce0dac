"""Export: trained MST → netx HDF5 (BN folding, fixed-point quantization), reader, torch executor.

    from mst_lava.export import export_checkpoint, read_network, NetSim
    export_checkpoint("export/digits.pt", "export/digits.net", precision="fixed")
    graph = read_network("export/digits.net")
    res = NetSim(graph).run(images, T=32)

The file format is specified in docs/netx-mst-format.md.
"""
from mst_lava.export.graph import FORMAT, FORMAT_VERSION, Layer, NetxGraph
from mst_lava.export.exporter import bn_fold, export_checkpoint, export_model, merge_conv_weight, quantize_graph
from mst_lava.export.hdf5io import read_network, write_network
from mst_lava.export.netsim import NetSim, SimResult, count_synops

__all__ = ["FORMAT", "FORMAT_VERSION", "Layer", "NetxGraph", "bn_fold", "export_checkpoint", "export_model",
           "merge_conv_weight", "quantize_graph", "read_network", "write_network", "NetSim", "SimResult",
           "count_synops"]
