"""The netx HDF5 file's two ends, by job: :mod:`~mst_lava.export.hdf5_write` (writer),
:mod:`~mst_lava.export.hdf5_read` (reader) and :mod:`~mst_lava.export.validate` (the value checks the reader runs).

``write_network(path, graph)`` writes atomically; ``read_network(path)`` reads and validates (docs/netx-mst-format.md).
"""
from mst_lava.export.hdf5_read import read_network
from mst_lava.export.hdf5_write import write_network
from mst_lava.export.validate import MST_FILE_TYPES

__all__ = ["MST_FILE_TYPES", "read_network", "write_network"]
