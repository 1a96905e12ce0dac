"""The wheel: built as `python -m build` would (sdist, then a wheel from the unpacked sdist),
installed without dependencies into a folder of its own, then `mst demo` run from elsewhere on
the packaged hardware profiles and network (dependencies from this interpreter's environment)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from mst_lava.lava.compat import PTH_LINE, PTH_NAME
from mst_lava.shipped import FILES, files_to_ship

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env=None, timeout=300):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _source_copy(dest: Path) -> Path:
    """The files a build reads, copied so that nothing is written into the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "mst_lava", dest / "mst_lava",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_shipped", "*.egg-info"))
    for src, rel in files_to_ship(ROOT):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


def test_wheel_ships_profiles_and_demo(tmp_path):
    src = _source_copy(tmp_path / "src")
    # sdist by the PEP 517 backend (what `python -m build` calls), then the wheel from the sdist
    sdist = _run([sys.executable, "-c", "from setuptools import build_meta as b; print(b.build_sdist('../dist'))"],
                 cwd=src).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / "dist" / sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = next((tmp_path / "unpacked").iterdir())
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(tmp_path / "wheel"), str(unpacked)], cwd=tmp_path)
    wheel, = (tmp_path / "wheel").glob("mst_lava-*.whl")
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
         cwd=tmp_path)
    shipped = site / "mst_lava" / "_shipped"
    assert (site / PTH_NAME).read_text() == PTH_LINE      # the Lava start-up hook lands in site-packages
    for folder in FILES:
        assert sorted(p.name for p in (shipped / folder).iterdir()) == \
            sorted(p.name for p, rel in files_to_ship(ROOT) if rel.startswith(folder + "/"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = _run([sys.executable, "-c", "import mst_lava, mst_lava.energy as e; print(mst_lava.__file__); "
                  "print(e.PROFILE_DIR); print(','.join(e.profile_names()))"], cwd=elsewhere, env=env).stdout.split()
    assert where == [str(site / "mst_lava" / "__init__.py"), str(shipped / "hw_profiles"), "cmos45nm,loihi,loihi2"]

    mst = site / "bin" / "mst"                       # the console script, run by this interpreter
    _run([str(mst), "demo", "--n", "5", "--T", "16", "--report", "rep"], cwd=elsewhere, env=env, timeout=600)
    rep = json.loads((elsewhere / "rep" / "report.json").read_text())
    assert rep["network"] == str(shipped / "export" / "digits.net")
    loihi, = [h for h in rep["energy"]["hardware"] if h["profile"] == "loihi"]   # priced by the packaged profile
    assert loihi["available"] and loihi["total_pJ"] > 0
