"""`snn-eval` under torchrun (issue 29): 2 processes (CPU, gloo) give the report one process gives."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "export" / "digits.pt"
ARGS = ["snn-eval", str(CKPT), "--samples", "40", "--batch-size", "8", "--T", "2,4", "--seeds", "2", "--mask", "Q=0.5",
        "A=0.5", "--attention", "compensated", "--threads", "1", "--no-plots"]

pytestmark = pytest.mark.skipif(not CKPT.exists(), reason="export/digits.pt is absent")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


def _same(a: dict, b: dict) -> None:
    assert a["ann"] == b["ann"]
    assert [c["accuracy"] for c in a["configs"]] == [c["accuracy"] for c in b["configs"]]
    assert [c["counts"] for c in a["configs"]] == [c["counts"] for c in b["configs"]]
    assert [c["energy"] for c in a["configs"]] == [c["energy"] for c in b["configs"]]
    assert a["n_samples"] == b["n_samples"] == 40


def test_two_ranks_write_the_report_one_process_writes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, "-m", "mst_lava.cli", *ARGS, "--report", str(one)], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mst_lava.cli", *ARGS, "--report", str(two)]
    r2 = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = (json.loads((d / "report.json").read_text()) for d in (one, two))
    _same(a, b)
    assert b["machine"]["ranks"] == 2 and a["machine"]["ranks"] == 1
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())   # no rank files left
