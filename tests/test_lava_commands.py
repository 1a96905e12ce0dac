"""`mst run` and `mst verify` end to end on a small exported network."""
from __future__ import annotations

import json

import pytest
import torch

import mst_lava.lava  # noqa: F401
from mst_lava.cli import main
from mst_lava.lava.commands import compare_counts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.export import export_checkpoint
    from mst_lava.model import build_model
    d = tmp_path_factory.mktemp("lava_cmd")
    torch.manual_seed(0)
    model = build_model("digits").eval()
    save_checkpoint(d / "tiny.pt", model, dataset="digits")
    export_checkpoint(d / "tiny.pt", d / "fixed.net", precision="fixed", mask=["Q=0.75", "K=0.75", "A=0.75"])
    export_checkpoint(d / "tiny.pt", d / "float.net", precision="float")
    other = build_model("digits", embed_dim=16, heads=(2, 2)).eval()
    save_checkpoint(d / "other.pt", other, dataset="digits")
    return d


def test_run_writes_predictions_counts_and_energy(tiny, capsys):
    rep = tiny / "report"
    rc = main(["run", str(tiny / "fixed.net"), "--data", "digits", "--n", "3", "--T", "8", "--report", str(rep),
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "accuracy" in out and "steps/s" in out and "synaptic ops" in out
    r = json.loads((rep / "report.json").read_text())
    assert len(r["predictions"]) == 3 and r["precision"] == "fixed" and r["T"] == 8
    t = r["per_inference"]["totals"]
    assert t["spikes_emitted"] > 0 and t["spikes_delivered"] < t["spikes_emitted"]     # RSM dropped some
    assert t["synops"] > 0 and t["neuron_updates"] > 0
    sites = {(s["site"], s["block"]) for s in r["per_inference"]["sites"]}
    assert ("Q", 0) in sites and ("embed", 0) in sites
    assert r["energy"] is not None or r["energy_note"]
    assert (rep / "summary.md").read_text().startswith("# Lava run")


def test_run_loihi_backend_without_lava_loihi_is_a_clear_error(tiny, capsys):
    rc = main(["run", str(tiny / "fixed.net"), "--data", "digits", "--n", "1", "--T", "4", "--backend", "loihi"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "lava-loihi" in err and "--backend lava-cpu" in err


def test_run_fixed_on_a_float_file_is_refused(tiny, capsys):
    rc = main(["run", str(tiny / "float.net"), "--data", "digits", "--n", "1", "--T", "4", "--precision", "fixed"])
    assert rc == 2
    assert "--precision fixed" in capsys.readouterr().err


def test_run_missing_file(tiny, capsys):
    rc = main(["run", str(tiny / "nope.net"), "--data", "digits"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("net,prec", [("fixed.net", "fixed"), ("float.net", "float")])
def test_verify_passes(tiny, capsys, net, prec):
    rc = main(["verify", str(tiny / "tiny.pt"), str(tiny / net), "--precision", prec, "--n", "2", "--T", "8",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS" in out and "Q@0" in out and "largest per-site difference" in out


def test_verify_refuses_a_checkpoint_that_is_not_the_source(tiny, capsys):
    rc = main(["verify", str(tiny / "other.pt"), str(tiny / "fixed.net"), "--n", "1", "--T", "4"])
    assert rc == 2 and "not exported from" in capsys.readouterr().err


def test_compare_counts_tolerances():
    ref = {"Q@0": 1000, "K@0": 2000}
    rows, worst, ok = compare_counts(ref, {"Q@0": 1000, "K@0": 2000}, "fixed")
    assert ok and worst == 0
    rows, worst, ok = compare_counts(ref, {"Q@0": 1001, "K@0": 2000}, "fixed")
    assert not ok and [r[0] for r in rows if not r[5]] == ["Q@0"]
    rows, worst, ok = compare_counts(ref, {"Q@0": 1004, "K@0": 1992}, "float")      # 0.4 %: within
    assert ok and abs(worst - 0.004) < 1e-12
    rows, worst, ok = compare_counts(ref, {"Q@0": 1006, "K@0": 2000}, "float")      # 0.6 %: over
    assert not ok
