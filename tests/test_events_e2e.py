"""Issue 5 end to end: a tiny MST trains one epoch and runs snn-eval on event-format fixtures."""
import json

import pytest
from fixtures_events import write_cifar10dvs_fixture, write_ncars_fixture

from mst_lava.checkpoint import read_checkpoint
from mst_lava.cli import main


@pytest.mark.parametrize("name,writer", [("cifar10-dvs", write_cifar10dvs_fixture), ("n-cars", write_ncars_fixture)])
def test_train_one_epoch_then_snn_eval(tmp_path, name, writer):
    root = writer(tmp_path / "data")
    ckpt = tmp_path / "m.pt"
    assert main(["train", "--dataset", name, "--data", str(root), "--epochs", "1", "--batch-size", "4",
                 "--out", str(ckpt)]) == 0
    ck = read_checkpoint(ckpt)
    assert ck["dataset"] == name and ck["config"]["preset"] == "dvs"
    assert ck["config"]["num_classes"] == (10 if name == "cifar10-dvs" else 2)
    rep = tmp_path / "rep"
    assert main(["snn-eval", str(ckpt), "--data", str(root), "--T", "4,8", "--seeds", "2",
                 "--mask", "Q=0.5", "--report", str(rep), "--no-plots"]) == 0
    report = json.loads((rep / "report.json").read_text())
    assert report and (rep / "summary.md").exists()
