"""benchmarks/paper: every step's command is one the `mst` CLI accepts, and tables.py turns
reports laid out as run.py leaves them into the tables and figures (a tiny real snn-eval)."""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module(name):
    spec = importlib.util.spec_from_file_location(f"paper_{name}", ROOT / "benchmarks" / "paper" / f"{name}.py")
    m = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = m                  # dataclasses look their module up there
    spec.loader.exec_module(m)
    return m


def test_every_step_is_a_valid_mst_command(tmp_path, monkeypatch):
    from mst_lava.cli import build_parser
    run = _module("run")
    a = argparse.Namespace(n=2000, seeds=5, attention="compensated", batch_size=100, baseline_epochs=8,
                           ft_epochs=1, ablation_ratio=0.75, ablation_seeds=1, pepper="0.01,0.05,0.1",
                           pepper_seeds=2)
    monkeypatch.setattr(run, "RES", tmp_path)
    (tmp_path / "search.json").write_text(json.dumps({"mask": {"Q": 0.75, "MLP1": 0.25}}))
    steps = run.steps(a)
    assert {s.group for s in steps} == {"power", "ablation", "search", "pepper"}
    names = {s.name for s in steps}
    assert all(d in names for s in steps for d in s.after)
    for s in steps:
        cmd = s.command()
        assert Path(cmd[0]).name == "mst", cmd
        args = build_parser().parse_args(cmd[1:])        # exits (fails the test) on a bad option
        assert callable(args.func), s.name
    abl = next(s for s in steps if s.name == "ablation").command()
    assert abl.count("--mask") == 10
    rows = next(s for s in steps if s.name == "ablation_paper").command()
    assert rows.count("--mask") == 10 and "--no-unmasked" in rows        # the paper's Table 2 rows
    assert "Q=0.5,K=0.5,A=0.5,V=0.5,AV=0.5,Proj=0.5,MLP2=0.1" in rows
    ft = next(s for s in steps if s.name == "ft_searched").command()
    assert "Q=0.75" in ft and "MLP1=0.25" in ft


def test_tables_from_reports(tmp_path, monkeypatch):
    """Reports in run.py's layout (here: one tiny real snn-eval copied to every place) → README and PNGs."""
    import torch

    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.cli import main
    from mst_lava.model import build_model
    torch.manual_seed(0)
    ck = tmp_path / "tiny.pt"
    save_checkpoint(ck, build_model("digits", embed_dim=8, heads=(2, 2), mlp_ratio=1.0), dataset="digits")
    rep = tmp_path / "rep"
    assert main(["snn-eval", str(ck), "--T", "8,64", "--n", "4", "--batch-size", "4", "--seeds", "2",
                 "--mask", "Q=0.5", "--threads", "1", "--no-plots", "--pepper", "0.1", "--report", str(rep)]) == 0
    r = json.loads((rep / "report.json").read_text())
    tables = _module("tables")
    res = tmp_path / "paper"
    monkeypatch.setattr(tables, "RES", res)
    for key in ("mst", "resnet18"):
        for p in (0, 50, 75):
            d = res / "power" / f"{key}_r{p}"
            d.mkdir(parents=True)
            rr = dict(r, configs=r["configs"][1:] if p else r["configs"][:1])
            (d / "report.json").write_text(json.dumps(rr))
            if key == "mst":
                (res / "pepper" / f"mst_r{p}").mkdir(parents=True)
                (res / "pepper" / f"mst_r{p}" / "report.json").write_text(json.dumps(rr))
    (res / "ablation").mkdir()
    shutil.copy(rep / "report.json", res / "ablation" / "report.json")
    (res / "ablation_paper").mkdir()
    (res / "ablation_paper" / "report.json").write_text(json.dumps(dict(r, configs=r["configs"][1:])))
    assert tables.main() == 0
    md = (res / "README.md").read_text()
    assert "| MST (Q, K, A masked) | 50 % |" in md and "QCFS VGG-16 (every block) | 0 % | not run yet" in md
    assert "| Q=0.5 |" in md and "## `mst rsm-search`" in md and "not run yet" in md
    assert "| SC1 | Q | K | A | V | AV | Proj | SC2 | MLP1 | MLP2 | accuracy % |" in md
    assert "| 0 | 0.5 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | " in md            # the masked row, in the paper's columns
    for f in ("fig2_accuracy_vs_T.png", "fig3_firing_rates_QKAV.png", "fig4_spikes_per_block.png", "fig6_pepper.png"):
        assert (res / f).stat().st_size > 0, f
    row = next(line for line in md.splitlines() if line.startswith("| MST (Q, K, A masked) | 0 % |"))
    assert "| 1.00 |" in row                                  # the unmasked row against itself


def test_training_steps_resume_only_an_interrupted_checkpoint(tmp_path):
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.model import build_model
    run = _module("run")
    ck = tmp_path / "r.pt"
    assert run._train_resume(ck) == []                                  # nothing yet: a fresh run
    m = build_model("digits", embed_dim=8, heads=(2, 2), mlp_ratio=1.0)
    save_checkpoint(ck, m, dataset="digits", train_state={"epoch": 0, "optimizer": {}})
    assert run._train_resume(ck) == ["--resume"]
    save_checkpoint(ck, m, dataset="digits")                            # finished, no training state
    assert run._train_resume(ck) == []
    ck.write_bytes(b"not a checkpoint")
    assert run._train_resume(ck) == []
