"""snn-eval on one process against two torchrun ranks, side by side in one run (issue 29).

    .venv/bin/python benchmarks/scale_out.py --out benchmarks/results/scale_out.md

Runs the same `mst snn-eval` three times on the first N Fashion-MNIST test images: 1 rank × 1 thread, 2 ranks × 1
thread (`torchrun --standalone --nproc_per_node 2`), 1 rank × 2 threads; records wall time and images/s of each and
checks that the two-rank report equals the one-rank report (accuracies, counts, energy).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(ROOT / "export" / "fmnist.pt"))
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--extra", default="--T 1 --burst 8 --seeds 1 --attention compensated --batch-size 100",
                    help="further snn-eval options")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="scale_out_"))
    base = ["snn-eval", args.ckpt, "--samples", str(args.samples), *args.extra.split(), "--no-plots"]
    py = sys.executable
    runs = [("1 rank × 1 thread", [py, "-m", "mst_lava.cli", *base, "--threads", "1"], "one"),
            ("2 ranks × 1 thread", [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                    "-m", "mst_lava.cli", *base, "--threads", "1"], "two"),
            ("1 rank × 2 threads", [py, "-m", "mst_lava.cli", *base, "--threads", "2"], "one2")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    rows = []
    load0 = os.getloadavg()
    for label, cmd, name in runs:
        t0 = time.perf_counter()
        r = subprocess.run([*cmd, "--report", str(tmp / name)], cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append((label, wall, json.loads((tmp / name / "report.json").read_text())))
        print(f"{label}: {wall:.1f} s, {args.samples / wall:.1f} images/s", flush=True)
    one, two = rows[0][2], rows[1][2]
    same = all(one[k] == two[k] for k in ("ann", "n_samples")) and \
        [(c["accuracy"], c["counts"], c["energy"]) for c in one["configs"]] == \
        [(c["accuracy"], c["counts"], c["energy"]) for c in two["configs"]]
    base_wall = rows[0][1]
    L = ["# snn-eval scaled out with torchrun: one process against two ranks", "",
         f"- command: `python benchmarks/scale_out.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
         f"- snn-eval options: `{' '.join(base)}`",
         f"- machine: {os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}; load "
         f"average before {tuple(round(v, 2) for v in load0)}, after {tuple(round(v, 2) for v in os.getloadavg())}",
         "- wall time of the whole command (process start, model load, the ANN accuracy pass, the simulation, the "
         "report), measured one after the other in this run", "",
         "| run | wall s | images/s | × 1 rank × 1 thread |", "|---|---|---|---|"]
    for label, wall, _ in rows:
        L.append(f"| {label} | {wall:.1f} | {args.samples / wall:.1f} | {base_wall / wall:.2f} |")
    L += ["", f"Two-rank report equal to the one-rank report (ANN accuracy, every configuration's accuracies, counts "
              f"and energy): **{'yes' if same else 'NO'}**."]
    text = "\n".join(L) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
