"""Time to accuracy of `mst train` runs, read from their checkpoints' per-epoch history.

    python benchmarks/time_to_accuracy.py runs/s6/tta20.pt export/fmnist.pt --target 91.5

For each checkpoint: test accuracy and wall time (``time_s``, counted from the first epoch's start,
compilation included) after every epoch, and the first epoch at or above ``--target`` percent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--target", type=float, default=91.5, help="test accuracy in percent (default 91.5)")
    a = p.parse_args(argv)
    from mst_lava.checkpoint import read_checkpoint
    hist = {c: read_checkpoint(c).get("metrics", {}).get("history", []) for c in a.checkpoints}
    first = {}
    for c, h in hist.items():
        hit = next((e for e in h if 100 * e["ann_acc"] >= a.target), None)
        first[c] = (f"epoch {hit['epoch'] + 1}, {hit['time_s'] / 60:.1f} min" if hit
                    else f"not reached in {len(h)} epochs ({h[-1]['time_s'] / 60:.1f} min)" if h else "no history")
    print("| epoch | " + " | ".join(f"`{c}` acc % | min" for c in hist) + " |")
    print("|---" * (1 + 2 * len(hist)) + "|")
    for i in range(max(len(h) for h in hist.values())):
        cells = [f"{100 * h[i]['ann_acc']:.2f} | {h[i]['time_s'] / 60:.1f}" if i < len(h) else " | "
                 for h in hist.values()]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    print()
    for c, f in first.items():
        print(f"- `{c}`: first ≥ {a.target:g} %: {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
