"""The Lava half of mst_lava: processes, models, the HDF5 → Lava builder and the runner.

Importing this package first installs the Python 3.11 compatibility shim for lava-nc
(:mod:`mst_lava.lava.compat`), so it must be imported before anything imports ``lava``.
"""
from mst_lava.lava.compat import install as _install_compat

_install_compat()
