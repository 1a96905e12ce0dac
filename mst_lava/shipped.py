"""The data files mst_lava ships: the hardware profiles and the default network of ``mst demo``.

Their source of truth is the checkout's top-level folders (``hw_profiles/*.json``,
``export/digits.net``, ``export/fmnist.net``). A wheel carries copies in ``mst_lava/_shipped/<folder>/``, written by the
build step in ``setup.py``; an installed package reads those, a checkout (editable install, or
``python -m mst_lava.cli`` in the repository) reads the folders themselves.

Standard library only: ``setup.py`` loads this file without importing the package.
"""
from __future__ import annotations

from pathlib import Path

# top-level folder → the files of it that go into the wheel (glob patterns; each must match)
FILES = {"hw_profiles": ("*.json",), "export": ("digits.net", "fmnist.net", "digits_burst.net", "fmnist_burst.net")}

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGED = PACKAGE_DIR / "_shipped"


def shipped_dir(folder: str) -> Path:
    """The folder holding the shipped files of ``folder`` (``hw_profiles`` or ``export``): the
    wheel's copy in an installed package, the checkout's own folder otherwise."""
    packaged = PACKAGED / folder
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / folder


def files_to_ship(root) -> list[tuple[Path, str]]:
    """``(source file, path under _shipped/)`` for every shipped file of the checkout at ``root``;
    a pattern that matches nothing raises (a wheel must not silently lack its demo or profiles)."""
    root = Path(root)
    out = []
    for folder, patterns in FILES.items():
        for pattern in patterns:
            found = sorted(p for p in (root / folder).glob(pattern) if p.is_file())
            if not found:
                raise FileNotFoundError(f"{root / folder / pattern}: no file to ship; the wheel would lack it")
            out += [(p, f"{folder}/{p.name}") for p in found]
    return out
