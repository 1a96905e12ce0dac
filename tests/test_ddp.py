"""DDP is exercised: `mst train` under `torchrun --nproc_per_node 2` (CPU, gloo) on digits."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from mst_lava.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["train", "--preset", "digits", "--epochs", "1", "--limit-train", "256", "--batch-size", "32",
         "--threads", "1"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def test_batch_loader_gives_every_rank_the_same_number_of_steps():
    """An odd number of samples: equal shards (else one rank takes a step more and DDP dies)."""
    from mst_lava.data import get_dataset
    from mst_lava.data.static import BatchLoader
    ds = get_dataset("digits", split="train")
    for limit, bs, drop in ((127, 32, True), (255, 50, False), (len(ds), 64, True)):
        shards = [BatchLoader(ds, bs, shuffle=True, drop_last=drop, seed=1, rank=r, world=2, limit=limit)
                  for r in (0, 1)]
        assert len(shards[0]) == len(shards[1])
        idx = [s._indices() for s in shards]
        assert len(idx[0]) == len(idx[1]) == limit // 2
        assert not set(idx[0].tolist()) & set(idx[1].tolist())          # disjoint
        assert [len(b[1]) for b in shards[0]] == [len(b[1]) for b in shards[1]]


def test_torchrun_two_processes_write_the_checkpoint_a_single_process_writes(tmp_path):
    ddp, single = tmp_path / "ddp.pt", tmp_path / "single.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mst_lava.cli", *TRAIN, "--out", str(ddp)]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("epoch 1/1") == 1, r.stdout                   # rank 0 alone reports
    r1 = subprocess.run([sys.executable, "-m", "mst_lava.cli", *TRAIN, "--out", str(single)], cwd=ROOT,
                        env=_env(), capture_output=True, text=True, timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]

    a, b = read_checkpoint(ddp), read_checkpoint(single)
    assert sorted(a) == sorted(b)
    for k in ("format", "version", "arch", "config", "mask", "dataset"):
        assert a[k] == b[k], k
    sa, sb = a["state_dict"], b["state_dict"]
    assert list(sa) == list(sb)                                          # no DDP "module." prefix
    for k in sa:
        assert sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype, k
        assert torch.isfinite(sa[k].float()).all(), k
    assert sorted(a["metrics"]) == sorted(b["metrics"])
    assert sorted(a["train_state"]) == sorted(b["train_state"]) and a["train_state"]["epoch"] == 0
    # 256 samples in batches of 32: 8 optimizer steps alone, 4 per rank on two ranks (each sees half)
    def steps(ck):
        return {int(s["step"]) for s in ck["train_state"]["optimizer"]["state"].values()}
    assert steps(b) == {8} and steps(a) == {4}
    # the DDP checkpoint loads and runs like any other
    from mst_lava.checkpoint import load_checkpoint
    model, _ = load_checkpoint(ddp)
    out = model.eval()(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 10)
