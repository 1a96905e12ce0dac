"""Training throughput: the previous training loop and today's, side by side in one run.

    python benchmarks/train_speed.py                      # fmnist preset, batch 128, 40 steps, 3 rounds
    python benchmarks/train_speed.py --compile            # also the --compile path
    python benchmarks/train_speed.py --eval --checkpoint export/fmnist.pt   # per-epoch test evaluation

Paths (same model init, same data, same optimizer and loss):
  * old:  per-sample ``DataLoader`` over the dataset (the per-image crop/flip/normalize code
          the loop used before, kept below verbatim as ``OldPerSample``), QCFS through its
          autograd-primitive definition (``qcfs_reference``), fp32;
  * new:  ``BatchLoader`` (batch-wise augmentation from the uint8 tensor), fused QCFS,
          bf16 autocast when the CPU has native bf16 (``--precision auto``), as ``mst train`` runs;
  * compile (optional): new + ``torch.compile`` (compile time reported separately, not in images/s).
``--eval`` times instead what ``mst train`` does after every epoch: the ANN over the whole test set
(fp32, batch 256), eager (before) and through ``torch.compile`` (``--compile`` now; compilation, the
first pass, reported apart), with the accuracies of both.
Rounds alternate old/new so that drift of a shared machine hits both; the median of the
rounds is reported with the machine and the load average.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mst_lava.data import get_dataset  # noqa: E402
from mst_lava.data.static import BatchLoader  # noqa: E402
from mst_lava.model import build_model  # noqa: E402
from mst_lava.train import autocast_dtype, evaluate  # noqa: E402

qcfs_mod = importlib.import_module("mst_lava.model.qcfs")


class OldPerSample(Dataset):
    """The per-sample item code of the loop before this change (numpy RNG, one image at a time)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        ds = self.ds
        x = ds.images[i].to(torch.float32) / ds.scale
        pad = ds.pad
        H, W = x.shape[-2:]
        xp = F.pad(x, (pad, pad, pad, pad))
        dy, dx = np.random.randint(0, 2 * pad + 1, size=2)
        x = xp[:, dy:dy + H, dx:dx + W]
        if ds.flip and np.random.rand() < 0.5:
            x = x.flip(-1)
        x = (x - ds.mean) / ds.std
        return x, int(ds.labels[i])


def run_path(name, ds, args, compiled_cache):
    torch.manual_seed(0)
    model = build_model(args.preset)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    old = name == "old"
    qcfs_mod.qcfs = qcfs_mod.qcfs_reference if old else FUSED
    dtype = None if old else autocast_dtype(torch.device("cpu"), "auto")
    if old:
        loader = DataLoader(OldPerSample(ds), args.batch_size, shuffle=True, drop_last=True)
    else:
        loader = BatchLoader(ds, args.batch_size, shuffle=True, drop_last=True)
    net = model
    if name == "compile":
        net = torch.compile(model)
    it = iter(loader)

    def step():
        x, y = next(it)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if name == "compile":
        compiled_cache.setdefault("compile_s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    dt = time.perf_counter() - t0
    qcfs_mod.qcfs = FUSED
    return args.steps * args.batch_size / dt, loss


FUSED = qcfs_mod.qcfs


def time_eval(args) -> int:
    """Test-set evaluation, eager vs compiled, alternating rounds on one model."""
    torch.manual_seed(0)
    if args.checkpoint:
        from mst_lava.checkpoint import load_checkpoint
        model, _ = load_checkpoint(args.checkpoint)
    else:
        model = build_model(args.preset)
    mcfg = model.cfg
    test = get_dataset(args.dataset, None, "test", img_size=mcfg.img_size, in_chans=mcfg.in_chans, augment=False)
    cpu = torch.device("cpu")
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    evaluate(compiled, BatchLoader(test, 256), cpu)
    compile_s = time.perf_counter() - t0
    times: dict = {"eager": [], "compiled": []}
    accs: dict = {}
    for r in range(args.rounds):
        for name, net in (("eager", model), ("compiled", compiled)):
            t0 = time.perf_counter()
            accs[name] = evaluate(net, BatchLoader(test, 256), cpu)
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {name:8s} {times[name][-1]:6.1f} s", flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    print(f"preset {args.preset}, {len(test)} {args.dataset} test images, fp32, batch 256, "
          f"{args.rounds} rounds (median); model: {args.checkpoint or 'untrained ' + args.preset}")
    print("| evaluation | s per pass (median) | rounds | accuracy | vs eager |")
    print("|---|---|---|---|---|")
    for n in times:
        print(f"| {n} | {med[n]:.1f} | {', '.join(f'{v:.1f}' for v in times[n])} | {100 * accs[n]:.2f} % "
              f"| {med['eager'] / med[n]:.2f}x |")
    print(f"compilation + first pass: {compile_s:.1f} s (once per run)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fmnist")
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="timed training steps per path and round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time the torch.compile path")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--eval", action="store_true",
                   help="time the per-epoch test evaluation (eager vs compiled) instead of training steps")
    p.add_argument("--checkpoint", default=None, help="--eval: a trained checkpoint to evaluate (default: untrained)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval:
        return time_eval(args)
    mcfg = build_model(args.preset).cfg
    ds = get_dataset(args.dataset, None, "train", img_size=mcfg.img_size, in_chans=mcfg.in_chans, augment=True)
    paths = ["old", "new"] + (["compile"] if args.compile else [])
    rates = {n: [] for n in paths}
    cache: dict = {}
    for r in range(args.rounds):
        for n in paths:
            ips, loss = run_path(n, ds, args, cache)
            rates[n].append(ips)
            print(f"round {r + 1}: {n:8s} {ips:7.1f} images/s (last loss {loss:.3f})", flush=True)
    med = {n: statistics.median(v) for n, v in rates.items()}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, bf16 autocast: {autocast_dtype(torch.device('cpu'), 'auto')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"preset {args.preset}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds (median)")
    print("| path | images/s (median) | rounds | vs old |")
    print("|---|---|---|---|")
    for n in paths:
        print(f"| {n} | {med[n]:.1f} | {', '.join(f'{v:.0f}' for v in rates[n])} | {med[n] / med['old']:.2f}x |")
    if "compile_s" in cache:
        print(f"compile + warm-up: {cache['compile_s']:.1f} s (once per run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
