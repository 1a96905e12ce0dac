"""Resumable ``mst snn-eval``: the state of an evaluation, saved after every batch.

A 10,000-image evaluation at T = 128 takes hours on two CPU cores. While it runs, ``snn-eval``
keeps ``<report>/progress.json`` up to date (atomically, after every batch): per phase (the
clean test set, each pepper-noise density), per (mask configuration, seed) run the batches done
and the correct predictions at every T, the op counters' integer totals, and the ANN accuracies.
``mst snn-eval ... --resume`` with the same settings continues from there and gives the report
an uninterrupted run gives (counts and accuracies are sums of per-batch integers). The file names
the settings it belongs to; resuming with other settings is refused. It is removed once the
report is written.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mst_lava.errors import MSTError
from mst_lava.fileio import atomic_write

VERSION = 1


def file_sha256(path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise MSTError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


class EvalProgress:
    """``<report>/progress.json`` (or ``name``): settings (``fingerprint``) and per-phase state, saved on demand."""

    NAME = "progress.json"

    def __init__(self, report_dir, fingerprint: dict, resume: bool, name: str | None = None):
        self.path = Path(report_dir) / (name or self.NAME)
        self.fingerprint = json.loads(json.dumps(fingerprint))      # as it reads back
        self.data = {"format": "mst_lava.snn_eval_progress", "version": VERSION,
                     "settings": self.fingerprint, "ann": None, "phases": {}}
        self.resumed = False
        if not self.path.exists():
            return
        if not resume:
            raise MSTError(f"{self.path} holds the progress of an interrupted evaluation: add --resume to "
                           f"continue it, or delete the file (or choose another --report) to start over")
        try:
            old = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MSTError(f"{self.path} is not a readable progress file ({e}); delete it to start over") from None
        if not isinstance(old, dict) or old.get("format") != self.data["format"] or old.get("version") != VERSION \
                or not isinstance(old.get("phases"), dict):
            raise MSTError(f"{self.path} is not an snn-eval progress file of version {VERSION}; delete it to "
                           f"start over")
        if old.get("settings") != self.fingerprint:
            diff = sorted(k for k in set(self.fingerprint) | set(old.get("settings") or {})
                          if (old.get("settings") or {}).get(k) != self.fingerprint.get(k))
            raise MSTError(f"{self.path} was written by an evaluation with other settings (different: "
                           f"{', '.join(diff)}); run the same command to resume, or delete the file to start over")
        self.data = old
        self.resumed = True

    def phase(self, name: str) -> dict:
        return self.data["phases"].setdefault(name, {"runs": {}, "counters": None, "wall_s": 0.0})

    @property
    def ann(self):
        return self.data.get("ann")

    @ann.setter
    def ann(self, value) -> None:
        self.data["ann"] = value

    def save(self) -> None:
        text = json.dumps(self.data)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text), "progress file")

    def finish(self) -> None:
        """The report is written: the progress file is no longer needed."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise MSTError(f"cannot remove {self.path}: {e.strerror or e}") from None
