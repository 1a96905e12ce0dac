"""`mst run --backend torch`: the torch executor (NetSim) behind the `mst run` command, without Lava.

Parity with Lava (predictions and every count, fixed point) is in tests/test_lava_commands.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mst_lava.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "export" / "digits.pt"


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.export import export_checkpoint
    from mst_lava.model import build_model
    d = tmp_path_factory.mktemp("run_torch")
    torch.manual_seed(0)
    save_checkpoint(d / "m.pt", build_model("digits").eval(), dataset="digits")
    export_checkpoint(d / "m.pt", d / "fixed.net", precision="fixed", mask=["Q=0.75", "K=0.75", "A=0.75"])
    export_checkpoint(d / "m.pt", d / "float.net", precision="float")
    if SHIPPED.exists():     # a trained network: its attention sites spike, so RSM has something to drop
        export_checkpoint(SHIPPED, d / "trained_qka.net", precision="fixed", mask=["Q=0.75", "K=0.75", "A=0.75"])
    return d


def _run(net, *extra):
    return main(["run", str(net), "--backend", "torch", "--dataset", "digits", "--no-progress", *extra])


def test_torch_backend_never_imports_lava(nets, tmp_path):
    code = ("import sys\nfrom mst_lava.cli import main\n"
            f"rc = main(['run', {str(nets / 'fixed.net')!r}, '--backend', 'torch', '--dataset', 'digits', '--n', '2', "
            f"'--T', '4', '--no-progress', '--report', {str(tmp_path)!r}])\n"
            "assert rc == 0, rc\n"
            "lava = sorted(m for m in sys.modules if m == 'lava' or m.startswith('lava.'))\n"
            "assert not lava, lava[:5]\n"
            # the run left multiprocessing's start method unset, so Lava can still be imported afterwards
            "import multiprocessing as mp\n"
            "assert mp.get_start_method(allow_none=True) is None, mp.get_start_method()\n"
            "import mst_lava.lava.models\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "summary.md").read_text().startswith("# torch run (NetSim)")


def test_whole_split_from_offset_and_batches_do_not_change_results(nets, tmp_path, capsys):
    """--n 0 runs to the end of the test split (digits: 360 images); batch chunking changes nothing."""
    if not (nets / "trained_qka.net").exists():
        pytest.skip("the shipped export/digits.pt is absent")
    reps = []
    for bs in ("2", "5"):
        rc = _run(nets / "trained_qka.net", "--n", "0", "--offset", "355", "--T", "6", "--batch-size", bs,
                  "--seed", "7",
                  "--report", str(tmp_path / bs))
        assert rc == 0, capsys.readouterr().err
        reps.append(json.loads((tmp_path / bs / "report.json").read_text()))
    a, b = reps
    assert a["n_samples"] == 5 and len(a["predictions"]) == 5 and a["rsm_seed"] == 7
    for k in ("predictions", "scores", "counts_per_layer_total", "per_inference"):
        assert a[k] == b[k], k
    assert a["per_inference"]["totals"]["spikes_delivered"] < a["per_inference"]["totals"]["spikes_emitted"]


def test_float_precision_runs(nets, capsys):
    assert _run(nets / "float.net", "--n", "2", "--T", "4", "--precision", "float") == 0
    out = capsys.readouterr().out
    assert "float precision" in out and "accuracy" in out and "energy" in out


def test_cuda_without_a_gpu_is_a_clear_error(nets, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _run(nets / "fixed.net", "--n", "1", "--T", "2", "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu" in err and "Traceback" not in err


@pytest.mark.parametrize("extra,msg", [
    (["--device", "tpu"], "expected a device name"),
    (["--batch-size", "0"], "--batch-size"),
    (["--threads", "0"], "--threads"),
    (["--granularity", "layer"], "--backend torch has none"),
    (["--n", "-1"], "--n: expected a non-negative integer"),
    (["--offset", "360", "--n", "0"], "leaves none"),
])
def test_bad_options_are_clear_errors(nets, capsys, extra, msg):
    assert _run(nets / "fixed.net", "--T", "2", *extra) == 2
    assert msg in capsys.readouterr().err


def test_fixed_on_a_float_file_is_refused(nets, capsys):
    assert _run(nets / "float.net", "--n", "1", "--T", "2", "--precision", "fixed") == 2
    assert "--precision fixed" in capsys.readouterr().err
