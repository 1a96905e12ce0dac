"""Lava throughput (time steps per second) of an exported MST on Lava's CPU simulator.

    .venv/bin/python benchmarks/lava_throughput.py                      # default: export/digits.net
    .venv/bin/python benchmarks/lava_throughput.py --net export/digits.net --n 10 --T 64 \
        --out benchmarks/results/lava_throughput.md

Measures several runtime configurations on the same inputs (the first N test samples of the dataset
the file records):
fused wide processes pipelined (the default of ``mst run``) or not, with 75 % RSM on Q, K, A
(RSM processes cut the blocks), floating point, and optionally one process per layer part.
Steps/s = Lava steps run / wall time of the ``run`` calls (compilation excluded, reported
apart). The machine's load average is recorded before and after: the numbers are only as
good as the machine was quiet.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mst_lava.lava  # noqa: E402,F401


def _load():
    return tuple(round(v, 2) for v in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default=str(ROOT / "export" / "digits.net"))
    ap.add_argument("--ckpt", default=str(ROOT / "export" / "digits.pt"),
                    help="checkpoint to export the masked and float variants from")
    ap.add_argument("--n", type=int, default=10, help="samples per configuration")
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration (the best is kept)")
    ap.add_argument("--layer", action="store_true", help="also measure granularity=layer (slow to compile)")
    ap.add_argument("--out", default=None, help="write a Markdown table here")
    ap.add_argument("--graded", default=None, metavar="NET",
                    help="also run this graded (IF_BURST) file at --graded-T steps next to --net at --T, on the same "
                         "images, and compare images/s (e.g. export/fmnist_burst.net against export/fmnist.net)")
    ap.add_argument("--graded-T", type=int, default=1)
    ap.add_argument("--only-graded", action="store_true",
                    help="with --graded: measure only the two default-configuration runs (binary at --T, graded)")
    args = ap.parse_args(argv)

    from mst_lava.export import export_checkpoint, read_network
    from mst_lava.lava import runner
    from mst_lava.run.inputs import load_inputs

    default = read_network(args.net)
    x, _, dname = load_inputs(default, None, None, args.n)        # the dataset the file records
    tmp = Path(tempfile.mkdtemp(prefix="lava_bench_"))
    merge = "events" if default.mst_version >= 3 else "graded"     # the shipped file's patch-merging form
    masked = export_checkpoint(args.ckpt, tmp / "qka.net", precision=default.precision, merge_input=merge,
                               mask=["Q=0.75", "K=0.75", "A=0.75"]) if Path(args.ckpt).exists() else None

    configs = [] if args.only_graded else [
        ("default model, fused blocks, pipelined (mst run default)", default, default.precision, "block", True),
        ("default model, fused blocks, not pipelined", default, default.precision, "block", False),
        ("default model, floating point, fused, pipelined", default, "float", "block", True),
    ]
    if masked is not None and not args.only_graded:
        configs.append(("RSM 75 % on Q, K, A (12 RSM processes), pipelined", read_network(tmp / "qka.net"),
                        default.precision, "block", True))
    if args.layer:
        configs.append(("one process per layer part, pipelined synapses", default, default.precision, "layer", True))

    load0 = _load()
    graded_rows = []
    if args.graded:
        graded = read_network(args.graded)
        for label, graph, T in ((f"{os.path.relpath(args.net, ROOT)}, binary, T = {args.T}", default, args.T),
                                (f"{os.path.relpath(args.graded, ROOT)}, graded, T = {args.graded_T}", graded,
                                 args.graded_T)):
            best = None
            for _ in range(max(args.repeat, 1)):
                res = runner.run(graph, x, T, precision=default.precision)
                if best is None or res.run_s < best.run_s:
                    best = res
            graded_rows.append((label, T, best))
            print(f"{best.n_samples / best.run_s:8.2f} images/s {best.steps_per_s:8.1f} steps/s  {label}", flush=True)
    rows = []
    for label, graph, prec, gran, pipe in configs:
        best = None
        for _ in range(max(args.repeat, 1)):
            res = runner.run(graph, x, args.T, precision=prec, granularity=gran, pipeline=pipe)
            if best is None or res.steps_per_s > best.steps_per_s:
                best = res
        rows.append((label, prec, gran, pipe, best))
        print(f"{best.steps_per_s:8.1f} steps/s  {label}  [{best.meta['processes']}, latency "
              f"{best.meta['latency']}, compile {best.compile_s:.2f} s]", flush=True)
    load1 = _load()

    cmd = "python benchmarks/lava_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    L = [f"# Lava throughput: `{os.path.relpath(args.net, ROOT)}`", "",
         f"- command: `{cmd.strip()}`",
         f"- network: `{os.path.relpath(args.net, ROOT)}` ({default.precision} precision, mask "
         f"{default.attrs.get('mask') or 'none'}), {len(default.layers)} layers; {args.n} {dname} test images, "
         f"T = {args.T}; best of {args.repeat} runs",
         f"- machine: {os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}, "
         f"lava-nc 0.10.0 (Loihi2SimCfg); load average before {load0}, after {load1}",
         "- steps/s = Lava time steps / wall time of the `run` calls (compilation excluded, listed apart); "
         "the target is ≥ 64 steps/s", ""]
    if rows:
        L += ["| configuration | precision | processes | pipeline latency | steps/s | compile s |",
              "|---|---|---|---|---|---|"]
    for label, prec, _gran, _pipe, r in rows:
        L.append(f"| {label} | {prec} | {r.meta['processes']} | {r.meta['latency']} | **{r.steps_per_s:.1f}** | "
                 f"{r.compile_s:.2f} |")
    if graded_rows:
        base = graded_rows[0][2].n_samples / graded_rows[0][2].run_s
        L += ["", f"Binary against graded, side by side in this run (fused blocks, pipelined, {default.precision} "
              "point; images/s = images / wall time of the `run` calls, the pipeline's fill included):", "",
              "| network | T | Lava steps | steps/s | images/s | × binary |", "|---|---|---|---|---|---|"]
        for label, T, r in graded_rows:
            ips = r.n_samples / r.run_s
            L.append(f"| {label} | {T} | {r.steps} | {r.steps_per_s:.1f} | **{ips:.2f}** | {ips / base:.1f} |")
    text = "\n".join(L) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
