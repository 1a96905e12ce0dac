"""Collect the Fashion-MNIST end-to-end results into benchmarks/results/fmnist.md.

    python benchmarks/fmnist_summary.py

Reads what the runs left (nothing is re-run here, nothing is typed in by hand):
  * export/fmnist.pt, export/fmnist_rsm50.pt, export/fmnist_rsm75.pt: training histories;
  * benchmarks/results/fmnist_snn_{paper,compensated,rsm50,rsm75}[_10k]/report.json: `mst snn-eval` reports
    (the full test set's folder `..._10k` when it exists, else the subset's);
  * benchmarks/results/fmnist_run_{lava,torch,torch_float}/report.json: `mst run` on export/fmnist.net;
  * benchmarks/results/fmnist_verify.txt: the output of `mst verify`.
The commands that made each file are in benchmarks/results/fmnist.md's "Commands" section.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RES = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from time_to_accuracy import first_at  # noqa: E402  (the script beside this one)
from time_to_accuracy import pct as _pct  # noqa: E402


def _hist(path: Path) -> tuple[list[dict], dict]:
    from mst_lava.checkpoint import read_checkpoint
    ck = read_checkpoint(path)
    return list(ck["metrics"].get("history", [])), ck


def _report(*names: str) -> dict | None:
    """The first of these report folders that holds a report.json (full test set first, then subsets)."""
    for name in names:
        p = RES / name / "report.json"
        if p.exists():
            return json.loads(p.read_text())
    return None


def _wall(r: dict) -> str:
    """A report's wall time. ``wall_s`` is the last ``snn-eval`` invocation's; a run continued with ``--resume``
    across sessions holds its simulation's wall time summed over them in ``sim_wall_s`` (pauses included)."""
    last, total = r.get("wall_s", 0), r.get("sim_wall_s", 0)
    if total <= last:
        return f"Wall time {last:.0f} s"
    return (f"Wall time of the simulation {total:.0f} s, summed over the runs continued with `--resume` "
            f"(pauses included; the last run {last:.0f} s)")


def _in_progress(name: str) -> list[str]:
    """What an unfinished ``snn-eval --resume`` has done so far (its progress.json), seed by seed."""
    p = RES / name / "progress.json"
    if (RES / name / "report.json").exists() or not p.exists():
        return []
    prog = json.loads(p.read_text())
    st = prog["settings"]
    runs = prog["phases"].get("clean", {}).get("runs", {})
    n_seeds = len(st["seeds"]) * sum(1 for c in st["configs"] if c)
    L = [f"### `{name}`: in progress ({len(runs)} of {n_seeds} seed runs started, "
         f"{prog['phases'].get('clean', {}).get('wall_s', 0):.0f} s so far; `--resume` continues it)", "",
         *([f"ANN on all {st['n']} images: without masks {_pct(prog['ann']['accuracy'])} %; "
            + "; ".join(f"with RSM {lab}: {_pct(a['mean'])} ± {_pct(a['std'])} %"
                        for lab, a in prog["ann"]["masked"].items()) + ".", ""] if prog.get("ann") else []),
         "| run (config:seed) | images done | " + " | ".join(f"T={t}" for t in st["T"]) + " |",
         "|---|---|" + "---|" * len(st["T"])]
    for key, run in runs.items():
        acc = " | ".join(f"{100 * run['correct'][str(t)] / max(run['total'], 1):.2f}" for t in st["T"])
        L.append(f"| {key} | {run['total']} of {st['n']} | {acc} |")
    return L + [""]


def training_section() -> list[str]:
    L = ["## Training (ANN, full 10,000-image test set after every epoch)", ""]
    hist, ck = _hist(ROOT / "export" / "fmnist.pt")
    cfg = ck["config"]
    L += [f"Model: `fmnist` preset, {cfg['embed_dim']}-wide, depths {cfg['depths']}, heads {cfg['heads']}, "
          f"patch {cfg['patch_size']}, window {cfg['window']}, mlp ratio {cfg['mlp_ratio']}, L = {cfg['L']}.", "",
          "| epoch | train loss | test accuracy % | wall time since start (s) |", "|---|---|---|---|"]
    for h in hist:
        L.append(f"| {h['epoch'] + 1} | {h['loss']:.4f} | {_pct(h['ann_acc'])} | {h['time_s']:.0f} |")
    hit = first_at(hist, 91.5)
    final_ok = hist[-1]["ann_acc"] >= 0.915
    L += ["", f"Final (the shipped checkpoint): **{_pct(hist[-1]['ann_acc'])} %** after {len(hist)} epochs, target "
              f"91.5 %: **{'met' if final_ok else 'not met'}**. "
              + (f"First epoch at ≥ 91.5 %: {hit['epoch'] + 1}, {hit['time_s'] / 60:.1f} min of wall time"
                 + ("." if final_ok else " (not kept by the last epoch).") if hit else "91.5 % was not reached.")]
    for r in (50, 75):
        p = ROOT / "export" / f"fmnist_rsm{r}.pt"
        if p.exists():
            h, c = _hist(p)
            L.append(f"- `fmnist_rsm{r}.pt` (Q, K, A at {r} %, fine-tuned from fmnist.pt): ANN with its RSM masks on "
                     f"**{_pct(h[-1]['ann_acc'])} %** on the 10,000 test images after {len(h)} epoch(s) "
                     f"({h[-1]['time_s']:.0f} s).")
    return L


def snn_section() -> list[str]:
    L = ["## Conversion (`mst snn-eval`)", ""]
    for mode in ("paper", "compensated"):
        r = _report(f"fmnist_snn_{mode}_10k", f"fmnist_snn_{mode}")
        if r is None:
            L.append(f"- unmasked, {mode} attention: not run")
            continue
        c = r["configs"][0]
        Ts = [str(t) for t in r["T"]]
        ann = r["ann"]["accuracy"]
        L += [f"### Unmasked `fmnist.pt`, {mode} attention products, first {r['n_samples']} test images", "",
              f"ANN on the same images: **{_pct(ann)} %**. {_wall(r)}, "
              f"{r.get('machine', {}).get('threads')} thread(s).", "",
              "| T | " + " | ".join(Ts) + " |", "|---|" + "---|" * len(Ts),
              "| SNN accuracy % | " + " | ".join(_pct(c["accuracy"][t]["mean"]) for t in Ts) + " |",
              "| SNN − ANN (points) | " + " | ".join(f"{100 * (c['accuracy'][t]['mean'] - ann):+.2f}"
                                                   for t in Ts) + " |",
              "| SNN/ANN energy (45 nm) | " + " | ".join(f"{c['energy'][t]['theoretical'].get('ratio_to_ann', 0):.2f}"
                                                       for t in Ts) + " |", ""]
        if mode == "compensated":
            checks = []
            for t, tol in (("32", 1.0), ("64", 0.5)):
                if t in c["accuracy"]:
                    d = 100 * (c["accuracy"][t]["mean"] - ann)
                    checks.append(f"T = {t} within {tol:g} point of the ANN: **{'met' if d >= -tol else 'missed'}** "
                                  f"({d:+.2f})")
            if checks:
                L += ["Targets: " + "; ".join(checks) + f" ({r['n_samples']} images).", ""]
    for r_ in (50, 75):
        L += _in_progress(f"fmnist_snn_rsm{r_}_10k")
        r = _report(f"fmnist_snn_rsm{r_}_10k", f"fmnist_snn_rsm{r_}")
        if r is None:
            L.append(f"- `fmnist_rsm{r_}.pt`: not run")
            continue
        Ts = [str(t) for t in r["T"]]
        masked = "; ".join(f"with RSM {lab}: {_pct(a['mean'])} ± {_pct(a['std'])} %"
                           for lab, a in r["ann"].get("masked", {}).items())
        L += [f"### `fmnist_rsm{r_}.pt` (Q, K, A at {r_} %), {r['attention']} attention, first {r['n_samples']} test "
              f"images", "", f"ANN on the same images: without masks {_pct(r['ann']['accuracy'])} %; {masked}. "
              f"{_wall(r)}.", "",
              "| mask | seeds | " + " | ".join(f"T={t}" for t in Ts) + " | SNN/ANN energy at T=64 |",
              "|---|---|" + "---|" * (len(Ts) + 1)]
        for c in r["configs"]:
            acc = " | ".join(f"{_pct(c['accuracy'][t]['mean'])} ± {_pct(c['accuracy'][t]['std'])}" for t in Ts)
            e64 = c["energy"].get("64", {}).get("theoretical", {}).get("ratio_to_ann")
            L.append(f"| {c['label']} | {len(c['seeds'])} | {acc} | {e64:.2f} |" if e64 else
                     f"| {c['label']} | {len(c['seeds'])} | {acc} | — |")
        L.append("")
    return L


def lava_section() -> list[str]:
    L = ["## Lava vs the torch fixed-point executor on `export/fmnist.net`", ""]
    lv, tc = _report("fmnist_run_lava"), _report("fmnist_run_torch")
    if lv is None or tc is None:
        return L + ["not run"]
    same_pred = lv["predictions"] == tc["predictions"]
    diff = [(k, f) for k, c in tc["counts_per_layer_total"].items() for f, v in c.items()
            if isinstance(v, (int, float)) and lv["counts_per_layer_total"].get(k, {}).get(f) != v]
    th = lv["throughput"]
    L += [f"- {lv['n_samples']} test images, T = {lv['T']}, RSM seed {lv['rsm_seed']}, {lv['precision']} point.",
          f"- predictions identical: **{'yes' if same_pred else 'no'}**; per-layer counts that differ: "
          f"**{len(diff)}**" + (f" (first: {diff[:3]})" if diff else "") + ".",
          f"- accuracy: Lava {_pct(lv['accuracy'])} %, torch {_pct(tc['accuracy'])} %.",
          f"- Lava: {th['steps_per_s']:.1f} steps/s with {th['processes']} Lava processes ({th['process_kinds']}); "
          f"{th['steps']} steps in {th['run_s']:.0f} s (+ {th['compile_s']:.0f} s compile, {th['build_s']:.0f} s "
          "build).",
          _torch_line("torch executor, fixed point", tc["throughput"])]
    fl = RES / "fmnist_run_torch_float" / "report.json"
    if fl.exists():
        f = json.loads(fl.read_text())
        agree = sum(a == b for a, b in zip(f["predictions"], tc["predictions"]))
        L += [_torch_line("torch executor, float", f["throughput"]),
              f"- fixed vs float on these images: accuracy {_pct(tc['accuracy'])} % vs {_pct(f['accuracy'])} % "
              f"({100 * (tc['accuracy'] - f['accuracy']):+.2f} points), predictions agree on "
              f"{agree}/{len(f['predictions'])}."]
    v = RES / "fmnist_verify.txt"
    if v.exists():
        L += ["", "`mst verify` output:", "", "```", v.read_text().strip()[-1500:], "```"]
    return L


def _torch_line(what: str, th: dict) -> str:
    return (f"- {what}: {th['samples_per_s']:.3f} images/s ({th['sample_steps_per_s']:.1f} image-steps/s; "
            f"{th['samples']} images in {th['run_s']:.0f} s, batches of {th['batch_size']}, {th['torch_threads']} "
            "thread, next to other jobs)")


def main() -> int:
    L = ["# Fashion-MNIST end to end", "",
         "Made by `python benchmarks/fmnist_summary.py` from the files the runs left; commands below. "
         "Machine: 2 CPU cores (x86_64, AVX-512 with AVX512-BF16), 23 GiB RAM, no GPU, shared with other "
         "jobs while these ran (wall times are those of a busy machine).", ""]
    L += training_section() + [""] + snn_section() + [""] + lava_section()
    cmds = RES / "fmnist_commands.md"
    if cmds.exists():
        L += ["", cmds.read_text().strip()]
    out = RES / "fmnist.md"
    out.write_text("\n".join(L) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
