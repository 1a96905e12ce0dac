"""`mst run` and `mst verify` end to end on a small exported network."""
from __future__ import annotations

import json

import pytest
import torch

import mst_lava.lava  # noqa: F401
from mst_lava.cli import main
from mst_lava.run.verify import compare_counts


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
    torch.manual_seed(1)                       # the same config, other weights
    save_checkpoint(d / "retrained.pt", build_model("digits").eval(), dataset="digits")
    return d


def test_run_writes_predictions_counts_and_energy(tiny, capsys):
    rep = tiny / "report"
    rc = main(["run", str(tiny / "fixed.net"), "--dataset", "digits", "--n", "3", "--T", "8", "--report", str(rep),
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
    assert r["energy"] is not None
    assert (rep / "summary.md").read_text().startswith("# Lava run")
    # where the energy goes: every layer and operation class once, summing to the report's total
    from mst_lava.report import energy_breakdown
    th = r["energy"]["theoretical"]
    rows, total = energy_breakdown(r["per_inference"], th)
    assert total == pytest.approx(th["total_with_residual_and_dynamic_pJ"], rel=1e-12)
    names = [row["name"] for row in rows]
    assert "merge1" in names and "readout" in names and len(names) == len(set(names))
    assert "## Where the energy goes" in (rep / "summary.md").read_text()
    assert (rep / "energy_breakdown.png").read_bytes()[:4] == b"\x89PNG"


def test_run_loihi_backend_without_lava_loihi_is_a_clear_error(tiny, capsys):
    rc = main(["run", str(tiny / "fixed.net"), "--dataset", "digits", "--n", "1", "--T", "4", "--backend", "loihi"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "lava-loihi" in err and "--backend lava-cpu" in err


def test_run_fixed_on_a_float_file_is_refused(tiny, capsys):
    rc = main(["run", str(tiny / "float.net"), "--dataset", "digits", "--n", "1", "--T", "4", "--precision", "fixed"])
    assert rc == 2
    assert "--precision fixed" in capsys.readouterr().err


def test_run_missing_file(tiny, capsys):
    rc = main(["run", str(tiny / "nope.net"), "--dataset", "digits"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("net,prec", [("fixed.net", "fixed"), ("float.net", "float")])
def test_verify_passes(tiny, capsys, net, prec):
    rc = main(["verify", str(tiny / "tiny.pt"), str(tiny / net), "--precision", prec, "--n", "2", "--T", "8",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS" in out and "Q@0" in out and "largest per-site difference" in out
    assert "is the file's source (source_sha256" in out


def test_verify_refuses_a_checkpoint_that_is_not_the_source(tiny, capsys):
    rc = main(["verify", str(tiny / "other.pt"), str(tiny / "fixed.net"), "--n", "1", "--T", "4"])
    assert rc == 2 and "not exported from" in capsys.readouterr().err


def test_verify_refuses_other_weights_of_the_same_config(tiny, capsys):
    """Same config, other weights: the file's source_sha256 (written by the exporter) tells them apart."""
    rc = main(["verify", str(tiny / "retrained.pt"), str(tiny / "fixed.net"), "--n", "1", "--T", "4"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "not exported from the weights of" in err[0] and "source_sha256" in err[0]


def test_weights_fingerprint_is_the_exporters(tiny):
    from mst_lava.checkpoint import load_checkpoint, weights_fingerprint
    from mst_lava.export import read_network
    model, _ = load_checkpoint(tiny / "tiny.pt")
    fp = weights_fingerprint(model.state_dict())
    assert read_network(tiny / "fixed.net").attrs["source_sha256"] == fp
    assert read_network(tiny / "float.net").attrs["source_sha256"] == fp
    other, _ = load_checkpoint(tiny / "retrained.pt")
    assert weights_fingerprint(other.state_dict()) != fp


def test_verify_of_a_file_without_fingerprint_says_so(tiny, tmp_path, capsys):
    """Files of older versions record no source_sha256: verify still runs, with a note."""
    import shutil

    import h5py
    old = tmp_path / "old.net"
    shutil.copy(tiny / "fixed.net", old)
    with h5py.File(old, "r+") as f:
        del f.attrs["source_sha256"]
    rc = main(["verify", str(tiny / "tiny.pt"), str(old), "--n", "1", "--T", "4", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS" in out
    assert "records no source_sha256" in out and "could not be checked" in out


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


def _shipped_net():
    from pathlib import Path
    p = Path(__file__).resolve().parents[1] / "export" / "digits.net"
    if not p.exists():
        pytest.skip("the shipped export/digits.net is absent")
    return p


@pytest.mark.parametrize("which", ["tiny_rsm_qka", "shipped"])
def test_torch_backend_fixed_equals_lava_fixed(tiny, capsys, which):
    """`mst run --backend torch --precision fixed` (NetSim, batched) and `--backend lava-cpu` on 3 digits
    images at T=16: identical predictions, integer scores, every per-layer count and so every reported figure."""
    net = tiny / "fixed.net" if which == "tiny_rsm_qka" else _shipped_net()
    reps = {}
    for backend, extra in (("lava-cpu", []), ("torch", ["--batch-size", "2"])):       # torch: 2 batches (2 + 1)
        rep = tiny / f"rep16_{which}_{backend}"
        rc = main(["run", str(net), "--dataset", "digits", "--n", "3", "--T", "16", "--precision", "fixed",
                   "--backend", backend, "--report", str(rep), "--no-progress"] + extra)
        assert rc == 0, capsys.readouterr()
        reps[backend] = json.loads((rep / "report.json").read_text())
    lava, tor = reps["lava-cpu"], reps["torch"]
    assert tor["backend"] == "torch" and tor["batch_size"] == 2 and tor["n_samples"] == 3
    assert tor["predictions"] == lava["predictions"] and tor["labels"] == lava["labels"]
    assert tor["scores"] == lava["scores"]                           # Σ_t integer readout, exactly
    assert tor["counts_per_layer_total"] == lava["counts_per_layer_total"]
    assert tor["per_inference"] == lava["per_inference"] and tor["energy"] == lava["energy"]
    assert tor["per_inference"]["totals"]["spikes_emitted"] > 0
    if which == "tiny_rsm_qka":
        assert tor["per_inference"]["totals"]["spikes_delivered"] < tor["per_inference"]["totals"]["spikes_emitted"]
    out = capsys.readouterr().out
    assert "samples/s" in out and "accuracy" in out


def test_device_and_batch_size_are_torch_only(tiny, capsys):
    rc = main(["run", str(tiny / "fixed.net"), "--dataset", "digits", "--n", "1", "--T", "4", "--device", "cpu"])
    assert rc == 2 and "--backend torch" in capsys.readouterr().err
