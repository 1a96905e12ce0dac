"""Build step of the wheel: everything else is in pyproject.toml.

The hardware profiles and the default network live in the top-level folders ``hw_profiles/`` and
``export/`` (their source of truth, see mst_lava/shipped.py); ``build_py`` copies them into the
built package as ``mst_lava/_shipped/<folder>/``, so a non-editable install has ``mst demo`` and
energy reports. Editable installs read the folders themselves and get no copies.

``build_py`` also puts the Lava start-up hook (``mst_lava_lava_compat.pth``, one line that registers
mst_lava's Python 3.11 import hook for lava-nc, see mst_lava/lava/compat.py) at the top of the
wheel, so it lands in site-packages and any ``import lava`` works in that environment. An editable
install (``make setup``) gets it from ``mst_lava.lava.compat.install_pth()``.
"""
import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = runpy.run_path(str(ROOT / "mst_lava" / "shipped.py"))
COMPAT = runpy.run_path(str(ROOT / "mst_lava" / "lava" / "compat.py"))   # standard library only


class BuildPyWithShipped(build_py):
    def _shipped(self):
        dest = Path(self.build_lib) / "mst_lava" / "_shipped"
        return [(src, dest / rel) for src, rel in SHIPPED["files_to_ship"](ROOT)]

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for src, dst in self._shipped():
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))
        pth = Path(self.build_lib) / COMPAT["PTH_NAME"]
        if not self.dry_run:
            pth.write_text(COMPAT["PTH_LINE"], encoding="ascii")

    def get_source_files(self):      # the sdist includes what the wheel will copy
        shipped = [src.relative_to(ROOT).as_posix() for src, _ in SHIPPED["files_to_ship"](ROOT)]
        return super().get_source_files() + shipped

    def get_outputs(self, include_bytecode=True):
        extra = [] if getattr(self, "editable_mode", False) else \
            [str(d) for _, d in self._shipped()] + [str(Path(self.build_lib) / COMPAT["PTH_NAME"])]
        return super().get_outputs(include_bytecode) + extra


setup(cmdclass={"build_py": BuildPyWithShipped})
