"""Re-estimate a checkpoint's BatchNorm statistics over many training batches, then evaluate it.

    python benchmarks/precise_bn.py runs/s8/tta24.pt --batches 100

``mst train`` leaves each BatchNorm's running statistics as an exponential average (momentum 0.1)
of the last few dozen batches. This script resets them, averages them over ``--batches`` augmented
training batches of 128 (cumulative average, weights untouched), and reports the test accuracy
before and after: how much of an epoch-to-epoch swing is BatchNorm-statistics noise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--batches", type=int, default=100, help="training batches of 128 (default 100)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from mst_lava.checkpoint import load_checkpoint
    from mst_lava.data import get_dataset
    from mst_lava.data.static import BatchLoader
    from mst_lava.train import evaluate
    model, ck = load_checkpoint(a.checkpoint)
    kw = dict(img_size=model.cfg.img_size, in_chans=model.cfg.in_chans, frames=None)
    name = ck.get("dataset") or "fmnist"
    train = get_dataset(name, None, "train", augment=True, **kw)
    test = BatchLoader(get_dataset(name, None, "test", augment=False, **kw), 256)
    cpu = torch.device("cpu")
    before = evaluate(model, test, cpu)
    bns = [b for b in model.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None                       # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(BatchLoader(train, 128, shuffle=True, drop_last=True, seed=1)):
            if i == a.batches:
                break
            model(x)
    after = evaluate(model, test, cpu)
    print(f"{a.checkpoint}: test accuracy {100 * before:.2f} % as trained, {100 * after:.2f} % with BatchNorm "
          f"statistics averaged over {a.batches} training batches of 128 ({len(bns)} BatchNorm layers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
