"""`mst snn-eval` end to end on a tiny checkpoint and the real digits test set; error messages."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from mst_lava.checkpoint import save_checkpoint
from mst_lava.errors import MSTError
from mst_lava.model import build_model
from mst_lava.snn import evaluate as ev


def _parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    ev.register(sub)
    return p


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model("digits", embed_dim=8, heads=(2, 2), mlp_ratio=1.0)
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    save_checkpoint(path, m, dataset="digits", mask={"Q": 0.5})
    return path


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def test_snn_eval_writes_report(ckpt, tmp_path):
    out = tmp_path / "rep"
    rc = _run(["snn-eval", str(ckpt), "--T", "4,2", "--seeds", "2", "--n", "8", "--batch-size", "4",
               "--mask", "Q=0.5", "K=0.5", "--mask", "ckpt", "--threads", "1", "--report", str(out)])
    assert rc == 0
    for f in ("report.json", "summary.md", "accuracy_vs_T.png", "firing_rate.png", "spikes_per_block.png",
              "energy_breakdown.png"):
        assert (out / f).stat().st_size > 0, f
    r = json.loads((out / "report.json").read_text())
    assert r["T"] == [2, 4] and r["n_samples"] == 8 and r["dataset"] == "digits"
    labels = [c["label"] for c in r["configs"]]
    assert labels == ["unmasked", "K=0.5,Q=0.5", "Q=0.5"]
    unm, masked = r["configs"][0], r["configs"][1]
    assert unm["seeds"] == [0] and masked["seeds"] == [0, 1000]
    assert len(masked["accuracy"]["4"]["per_seed"]) == 2
    t4 = masked["counts"]["4"]["totals"]
    assert t4["neuron_updates"] == 2 * masked["counts"]["2"]["totals"]["neuron_updates"]
    assert t4["spikes_delivered"] <= t4["spikes_emitted"]
    e = masked["energy"]["4"]
    assert e["hardware"][1]["available"] is False and e["theoretical"]["papers_total_pJ"] > 0
    assert r["ann_counts"]["macs"] > 0 and 0 <= r["ann"]["accuracy"] <= 1
    assert "K=0.5,Q=0.5" in r["ann"]["masked"]
    md = (out / "summary.md").read_text()
    assert "| unmasked |" in md and "Loihi 2" in md and "What is counted" in md
    # the energy breakdown: layers plus the other op classes add up to the report's total
    from mst_lava.report import energy_breakdown
    rows, total = energy_breakdown(unm["counts"]["4"], unm["energy"]["4"]["theoretical"])
    assert total == pytest.approx(unm["energy"]["4"]["theoretical"]["total_with_residual_and_dynamic_pJ"], rel=1e-9)
    assert rows == sorted(rows, key=lambda row: -row["energy_pJ"]) and "Where the energy goes" in md


@pytest.mark.parametrize("argv,msg", [
    (["--T", "0,4"], "positive"),
    (["--T", "a"], "comma-separated"),
    (["--mask", "Z=0.5"], "unknown RSM site"),
    (["--mask", "Q=2"], "outside"),
])
def test_snn_eval_errors(ckpt, tmp_path, argv, msg):
    with pytest.raises(MSTError, match=msg):
        _run(["snn-eval", str(ckpt), "--report", str(tmp_path / "r"), "--no-plots", "--T", "2", "--n", "4",
              *argv] if "--T" not in argv else ["snn-eval", str(ckpt), "--report", str(tmp_path / "r"), *argv])


@pytest.mark.parametrize("argv,msg", [
    (["--seeds", "0"], "--seeds: expected a positive integer"),
    (["--device", "tpu"], "cpu, cuda or cuda:N"),
    (["--n", "0"], "--n: expected a positive integer"),
])
def test_snn_eval_bad_arguments(ckpt, tmp_path, capsys, argv, msg):
    from mst_lava.cli import main
    assert main(["snn-eval", str(ckpt), "--report", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_snn_eval_missing_things(tmp_path):
    with pytest.raises(MSTError, match="does not exist"):
        _run(["snn-eval", str(tmp_path / "none.pt")])
    m = build_model("digits", embed_dim=8, heads=(2, 2), mlp_ratio=1.0)
    save_checkpoint(tmp_path / "nods.pt", m)
    with pytest.raises(MSTError, match="--dataset"):
        _run(["snn-eval", str(tmp_path / "nods.pt"), "--T", "2"])
    if not torch.cuda.is_available():
        with pytest.raises(MSTError, match="no CUDA"):
            _run(["snn-eval", str(tmp_path / "nods.pt"), "--device", "cuda"])
    with pytest.raises(MSTError, match="trained without masking"):
        _run(["snn-eval", str(tmp_path / "nods.pt"), "--dataset", "digits", "--T", "2", "--n", "4",
              "--mask", "ckpt"])


def test_snn_eval_records_the_attention_mode(ckpt, tmp_path):
    for mode in ("compensated", "paper"):
        out = tmp_path / mode
        argv = ["snn-eval", str(ckpt), "--T", "3", "--seeds", "1", "--n", "4", "--batch-size", "4",
                "--mask", "Q=0.5", "--threads", "1", "--no-plots", "--report", str(out)]
        assert _run(argv + (["--attention", mode] if mode != "paper" else [])) == 0
        r = json.loads((out / "report.json").read_text())
        assert r["attention"] == mode
        assert f"- attention products: {mode}" in (out / "summary.md").read_text()
        t = r["configs"][0]["counts"]["3"]["totals"]
        assert t["qk_products"] >= 0 and t["softmax_elements"] > 0


def test_snn_eval_resume_gives_the_uninterrupted_report(ckpt, tmp_path, monkeypatch):
    """An evaluation stopped after some batches and resumed reports exactly what one run reports."""
    from mst_lava.snn import progress
    argv = ["snn-eval", str(ckpt), "--T", "2,4", "--seeds", "2", "--n", "12", "--batch-size", "4",
            "--mask", "ckpt", "--pepper", "0.1", "--threads", "1", "--no-plots"]
    assert _run(argv + ["--report", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert not (tmp_path / "whole" / "progress.json").exists()

    part = tmp_path / "part"
    saves = {"n": 0}
    real_save = progress.EvalProgress.save

    def stop_after_five(self):
        real_save(self)
        saves["n"] += 1
        if saves["n"] == 5:            # 1 (ANN accuracies) + 4 batches: inside the first masked run
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.EvalProgress, "save", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        _run(argv + ["--report", str(part)])
    monkeypatch.setattr(progress.EvalProgress, "save", real_save)
    assert (part / "progress.json").exists() and not (part / "report.json").exists()
    state = json.loads((part / "progress.json").read_text())
    assert state["phases"]["clean"]["runs"]["1:0"]["batches"] == 1

    with pytest.raises(MSTError, match="--resume"):                 # not silently overwritten
        _run(argv + ["--report", str(part)])
    with pytest.raises(MSTError, match="other settings.*n"):        # other settings: refused
        _run([a if a != "12" else "8" for a in argv] + ["--report", str(part), "--resume"])
    assert _run(argv + ["--report", str(part), "--resume"]) == 0
    resumed = json.loads((part / "report.json").read_text())
    assert not (part / "progress.json").exists()
    for key in ("ann", "configs", "pepper", "ann_counts", "T", "n_samples"):
        assert resumed[key] == whole[key], key


def test_snn_eval_resume_refuses_a_corrupt_progress_file(ckpt, tmp_path):
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "progress.json").write_text("{not json")
    with pytest.raises(MSTError, match="not a readable progress file"):
        _run(["snn-eval", str(ckpt), "--T", "2", "--n", "4", "--report", str(tmp_path / "rep"), "--resume"])
