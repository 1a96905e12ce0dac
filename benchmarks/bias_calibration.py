"""Experiment (issue 16, item 3): post-conversion bias calibration of a converted MST at low T.

    python benchmarks/bias_calibration.py CKPT --T 16 --calib 256 --test 500 --iters 3 --alpha 1.0

For every site whose input has a bias (embed, SC1, Q, K, V, Proj, SC2, MLP1, MLP2), measure on `--calib`
training images the per-channel mean of the ANN's QCFS output and of the SNN's output (spikes × λ averaged
over T steps, compensated attention), add alpha × (ANN − SNN) to that bias, and repeat `--iters` times,
printing the SNN's accuracy on the first `--test` test images at T = 8, 12, 16 (≤ T) before and after each
round. Prints only; changes no file. Result on the L = 4 Fashion-MNIST model (2026-11-29, default options,
1 thread, 417 s; see benchmarks/results/energy_fmnist.md): it hurts: 89.2 % at T = 16 before, 78.8, 80.2,
84.2 % after rounds 1-3 (T = 12: 87.4 → 78.6, 76.2, 83.8 %). The mean error it corrects is mostly the
transient of the first steps (deep sites start late), which a constant bias cannot fix; not part of the
toolkit.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mst_lava.checkpoint import load_checkpoint  # noqa: E402
from mst_lava.data import get_dataset  # noqa: E402
from mst_lava.snn.simulate import simulate  # noqa: E402


def targets(model) -> list[tuple]:
    """(site, the bias added to its input) for every site whose input has one."""
    out = [(model.embed_act, model.embed_norm.bias)]
    for blk in model.blocks():
        C = blk.norm1.num_features
        qb = blk.attn.qkv.bias
        out += [(blk.sc1, blk.norm1.bias), (blk.attn.q_act, qb[:C]), (blk.attn.k_act, qb[C:2 * C]),
                (blk.attn.v_act, qb[2 * C:]), (blk.attn.proj_act, blk.attn.proj.bias), (blk.sc2, blk.norm2.bias),
                (blk.mlp1, blk.fc1.bias), (blk.mlp2, blk.fc2.bias)]
    return out


def channel_sum(o: torch.Tensor, site) -> tuple[torch.Tensor, int]:
    """Sum over everything but the channel ((Bn, heads, N, d) for Q/K/V: channel = head·d + j; (..., C)
    otherwise) and the number of values summed per channel."""
    s = o.double().sum(dim=(0, 2)).reshape(-1) if site.site in ("Q", "K", "V") \
        else o.double().reshape(-1, o.shape[-1]).sum(0)
    return s, o.numel() // s.numel()


def site_means(model, x, T: int | None) -> dict:
    """Per-channel mean output of every target site: the ANN's (T None) or the SNN's over T steps."""
    sums, counts = {}, {}

    def hook(m, i, o):
        s, n = channel_sum(o, m)
        sums[m] = sums.get(m, 0) + s
        counts[m] = counts.get(m, 0) + n
    hooks = [s.register_forward_hook(hook) for s, _ in targets(model)]
    try:
        with torch.no_grad():
            simulate(model, x, T, attention="compensated") if T else model(x)
    finally:
        for h in hooks:
            h.remove()
    return {m: sums[m] / counts[m] for m in sums}


def accuracy(model, x, y, T: int) -> dict:
    r = simulate(model, x, T, attention="compensated", checkpoints=[t for t in (8, 12) if t < T])
    return {t: round(100 * float((v.argmax(-1) == y).float().mean()), 2) for t, v in sorted(r.logits_at.items())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--calib", type=int, default=256, help="training images for the calibration")
    p.add_argument("--test", type=int, default=500, help="first N test images for the accuracy")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--alpha", type=float, default=1.0, help="fraction of the measured error corrected per round")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, ck = load_checkpoint(a.checkpoint)
    model.eval()
    kw = dict(img_size=model.cfg.img_size, in_chans=model.cfg.in_chans)
    tr = get_dataset(ck["dataset"], None, "train", **kw)
    te = get_dataset(ck["dataset"], None, "test", **kw)
    idx = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[:a.calib]
    xc = torch.stack([tr[int(i)][0] for i in idx])
    xt = torch.stack([te[i][0] for i in range(a.test)])
    yt = torch.tensor([int(te[i][1]) for i in range(a.test)])
    t0 = time.time()
    print("before:", accuracy(model, xt, yt, a.T), f"({time.time() - t0:.0f} s)", flush=True)
    ann = site_means(model, xc, None)
    for it in range(a.iters):
        snn = site_means(model, xc, a.T)
        err = 0.0
        with torch.no_grad():
            for s, b in targets(model):
                e = ann[s] - snn[s]
                b += a.alpha * e.to(b.dtype)
                err += float(e.abs().mean())
        print(f"round {it + 1}: mean |ANN − SNN| {err / len(targets(model)):.4f}; after:",
              accuracy(model, xt, yt, a.T), f"({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
