"""The Lava half of mst_lava: processes, models, the HDF5 → Lava builder and the runner.

Importing this package registers the Python 3.11 compatibility hook for lava-nc
(:mod:`mst_lava.lava.compat`). In the environment ``make setup`` creates, a start-up ``.pth``
file registers it already, so any ``import lava`` works there; elsewhere import this package
before anything imports ``lava``.
"""
from mst_lava.lava.compat import install as _install_compat

_install_compat()
