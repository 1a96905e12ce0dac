"""Time to accuracy of `mst train` runs, read from their checkpoints' per-epoch history.

    python benchmarks/time_to_accuracy.py runs/s8/tta24.pt export/fmnist.pt --target 91.5
    python benchmarks/time_to_accuracy.py runs/s8/tta24.pt --save-history benchmarks/results/fmnist_tta24_history.json

Each input is a checkpoint or a ``.json`` file that ``--save-history`` wrote (``{"history": [...]}``,
so that a run's record outlives its checkpoint in runs/). For each: test accuracy and wall time
(``time_s``, counted from the first epoch's start, compilation included) after every epoch, and the
first epoch at or above ``--target`` percent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pct(acc) -> str:
    """An accuracy in percent, or a dash for an epoch `mst train --eval-from` did not evaluate."""
    return "–" if acc is None else f"{100 * acc:.2f}"


def first_at(history: list[dict], target_pct: float) -> dict | None:
    """The first epoch of a training history evaluated at ``target_pct`` percent or more (None: never)."""
    return next((e for e in history if e["ann_acc"] is not None and 100 * e["ann_acc"] >= target_pct), None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--target", type=float, default=91.5, help="test accuracy in percent (default 91.5)")
    p.add_argument("--save-history", metavar="JSON", default=None,
                   help="write the (single) input's per-epoch history to this JSON file instead of the table")
    a = p.parse_args(argv)
    import json

    from mst_lava.checkpoint import read_checkpoint
    from mst_lava.fileio import atomic_write

    def history(path: str) -> list[dict]:
        if path.endswith(".json"):
            return json.loads(Path(path).read_text())["history"]
        return read_checkpoint(path).get("metrics", {}).get("history", [])

    hist = {c: history(c) for c in a.checkpoints}
    if a.save_history:
        if len(hist) != 1:
            p.error("--save-history takes exactly one input")
        (c, h), = hist.items()
        text = json.dumps({"source": c, "history": h}, indent=1) + "\n"
        atomic_write(a.save_history, lambda tmp: Path(tmp).write_text(text), "history")
        return 0
    first = {}
    for c, h in hist.items():
        hit = first_at(h, a.target)
        first[c] = (f"epoch {hit['epoch'] + 1}, {hit['time_s'] / 60:.1f} min" if hit
                    else f"not reached in {len(h)} epochs ({h[-1]['time_s'] / 60:.1f} min)" if h else "no history")
    print("| epoch | " + " | ".join(f"`{c}` acc % | min" for c in hist) + " |")
    print("|---" * (1 + 2 * len(hist)) + "|")
    for i in range(max(len(h) for h in hist.values())):
        cells = [(" | " if i >= len(h) else f"{pct(h[i]['ann_acc'])} | {h[i]['time_s'] / 60:.1f}")
                 for h in hist.values()]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    print()
    for c, f in first.items():
        print(f"- `{c}`: first ≥ {a.target:g} %: {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
