"""benchmarks/time_to_accuracy.py: a run's per-epoch history saved to JSON reads back as the checkpoint's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mst_lava.checkpoint import save_checkpoint
from mst_lava.model import build_model

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_accuracy.py"


def _run(*args) -> str:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], check=True, capture_output=True,
                          text=True).stdout


def test_time_to_accuracy_from_checkpoint_and_saved_history(tmp_path):
    hist = [{"epoch": 0, "loss": 1.0, "ann_acc": 0.90, "time_s": 60.0},
            {"epoch": 1, "loss": 0.9, "ann_acc": 0.9160, "time_s": 120.0},
            {"epoch": 2, "loss": 0.8, "ann_acc": 0.9140, "time_s": 180.0}]
    ck = tmp_path / "run.pt"
    save_checkpoint(ck, build_model("digits"), metrics={"ann_acc": 0.914, "history": hist})
    js = tmp_path / "run.json"
    assert _run(ck, "--save-history", js) == ""
    assert json.loads(js.read_text())["history"] == hist
    a, b = _run(ck, "--target", 91.5), _run(js, "--target", 91.5)
    assert "| 2 | 91.60 | 2.0 |" in a and "first ≥ 91.5 %: epoch 2, 2.0 min" in a
    assert a.replace(str(ck), "X") == b.replace(str(js), "X")
    assert "not reached in 3 epochs (3.0 min)" in _run(js, "--target", 95)
    # epochs that `mst train --eval-from` did not evaluate show a dash and never count as reached
    hist[0]["ann_acc"] = hist[1]["ann_acc"] = None
    save_checkpoint(ck, build_model("digits"), metrics={"ann_acc": 0.914, "history": hist})
    c = _run(ck, "--target", 91.0)
    assert "| 1 | – | 1.0 |" in c and "first ≥ 91 %: epoch 3, 3.0 min" in c


def test_precise_bn_reestimates_the_statistics(tmp_path):
    """benchmarks/precise_bn.py on a digits checkpoint whose BatchNorm statistics are far from the data's:
    re-estimating them changes the test accuracy."""
    import re

    import torch
    torch.manual_seed(0)
    ck = tmp_path / "d.pt"
    model = build_model("digits")
    for b in model.modules():           # statistics far from the data's: mean 5, variance 100
        if isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
            b.running_mean.fill_(5.0)
            b.running_var.fill_(100.0)
    save_checkpoint(ck, model, dataset="digits")
    out = subprocess.run([sys.executable, str(SCRIPT.parent / "precise_bn.py"), str(ck), "--batches", "3"],
                         check=True, capture_output=True, text=True).stdout
    before, after = map(float, re.findall(r"([\d.]+) %", out))
    assert "averaged over 3 training batches" in out and before != after
