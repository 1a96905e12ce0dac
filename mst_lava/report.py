"""Reports: the numbers, JSON and Markdown of every command that writes one.

- shared by all: :func:`fmt_num` (counts in k/M/G), :func:`json_default` and :func:`write_json`/:func:`write_text`
  (atomic), :func:`machine_info`;
- ``mst snn-eval``: ``report.json``, ``summary.md`` and PNG plots (matplotlib Agg) of the dict built by
  :func:`mst_lava.snn.evaluate.run_snn_eval` (see there); every figure in the Markdown comes from that dict,
  so the JSON is the complete record;
- ``mst run`` (both backends): per-inference counts in the structure :mod:`mst_lava.energy` expects
  (:func:`per_inference_summary`), the overflow line and ``summary.md`` (:func:`run_markdown`).

No torch: ``mst run`` on Lava imports this module (tests/test_format_core.py); matplotlib is imported
when a plot is drawn.
"""
from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

from mst_lava.energy import format_energy, formulation_totals
from mst_lava.fileio import atomic_write, atomic_write_all, ensure_dir
from mst_lava.model.rsm import format_mask

COUNT_NOTES = [
    "**Synaptic ops** (synops) are counted for every Linear/Conv2d whose input is spikes: each delivered spike "
    "times its nonzero outgoing synapses (exact at convolution borders, stride, dilation and groups included), "
    "attributed to the site that produced the spikes. In the MST these are qkv (SC1 spikes), proj (soft(A)·V "
    "spikes), fc1 (SC2 spikes) and fc2 (MLP1 spikes); in the baselines every conv after the first and the "
    "classifier (average pooling of spikes is folded into the next layer's fan-out).",
    "**Analog-input MACs**: layers whose input is not spikes run dense multiply-accumulates every step: the first "
    "layer (direct encoding: the analog image every step, marked 'analog, constant input'), and in the MST the "
    "patch-merging linear layer and the head, which read the BatchNorm of the residual stream.",
    "**Dynamic products** have no fixed synapses and are counted apart: Q·Kᵀ coincidences (pairs of a Q spike "
    "and a K spike meeting in the product) and softmax·V accumulations (nonzero softmax weight × V spike). "
    "With compensated attention they are counted as the exported network counts them: Q·Kᵀ = (Q + K delivered "
    "spikes) × N tokens of the window, softmax·V = V spikes × N + A spikes × d (head width).",
    "**Softmax** evaluations (elements, floating point every step) are listed on their own; the relative-position "
    "bias and shift-mask additions belong to the softmax input and are not counted separately.",
    "**Residual-stream accumulations**: each spike added to the residual stream (embed, Proj, MLP2 and merge spikes "
    "in the MST; identity shortcuts in ResNet) is one accumulation, on its own line.",
    "**Neuron updates** = neurons × time steps (every IF neuron is updated every step). Spikes *emitted* are counted "
    "before RSM drops them, spikes *delivered* after; the membrane is never affected by masking.",
    "All counts are per inference (one sample, T steps), averaged over the evaluated samples and mask seeds.",
]


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def fmt_num(v: float | None) -> str:
    """A count in three significant digits with k, M or G: 1234567 → '1.23 M'; None → '—'."""
    if v is None:
        return "—"
    v = float(v)
    if v == 0:
        return "0"
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g}"


def json_default(o):
    """``json.dumps(default=...)`` of every report: numpy scalars and arrays as Python values, paths as text."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_text(path, text: str, what: str = "report file") -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), what)


def write_json(path, obj, what: str = "report file") -> None:
    write_text(path, json_text(obj), what)


def json_text(obj) -> str:
    """A report's JSON text, as :func:`write_json` writes it."""
    return json.dumps(obj, indent=1, default=json_default, ensure_ascii=False)


def text_writer(text: str):
    """A writer for :func:`mst_lava.fileio.atomic_write_all`: ``text`` into the temp file."""
    return lambda tmp: Path(tmp).write_text(text)


def write_report_folder(out_dir, files) -> list[Path]:
    """Write a report's files (``(name, writer)`` pairs) into ``out_dir`` all or nothing
    (:func:`mst_lava.fileio.atomic_write_all`); a folder this call created is removed again when the
    writing fails."""
    out = Path(out_dir)
    existed = out.is_dir()
    out = ensure_dir(out, "report folder")
    try:
        return atomic_write_all([(out / name, w) for name, w in files])
    except BaseException:
        if not existed:
            try:
                out.rmdir()         # only if empty
            except OSError:
                pass
        raise


def machine_info() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}


def markdown_summary(r: dict) -> str:
    Ts = [int(t) for t in r["T"]]
    tm = str(max(Ts))
    L = [f"# SNN evaluation: {r.get('arch', '?')} on {r.get('dataset', '?')}", ""]
    L += [f"- command: `{r.get('command', '')}`",
          f"- checkpoint: `{r.get('checkpoint')}` ({fmt_num(r.get('params', 0))} parameters), "
          f"trained with mask {r.get('trained_mask') or 'none'}",
          f"- samples: {r['n_samples']}; device {r.get('device')}, {r.get('dtype')}; "
          f"threads {r.get('machine', {}).get('threads')}; wall time {r.get('wall_s', 0):.1f} s "
          f"(simulation {r.get('sim_wall_s', 0):.1f} s)",
          f"- attention products: {r.get('attention', 'paper')} ("
          + ("expectation-compensated, as the exported network runs" if r.get("attention") == "compensated"
             else "the paper's: Q·Kᵀ and softmax·V of each step's spikes") + ")",
          f"- patch merging reads: {_MERGE_WORDS[r.get('merge_input', 'graded')]}",
          "- neurons: " + (f"burst, up to {r['burst']} spikes per step, each worth λ/{r['burst']} and counted as "
                            "one spike" if r.get("burst", 1) > 1 else "binary integrate-and-fire"),
          f"- ANN accuracy: **{_pct(r['ann']['accuracy'])} %**"]
    for lab, a in r["ann"].get("masked", {}).items():
        L.append(f"- ANN accuracy with RSM {lab}: {_pct(a['mean'])} ± {_pct(a['std'])} % "
                 f"({len(a['per_seed'])} seeds)")
    L += ["", "## Accuracy (%) vs time steps", "",
          "| mask | seeds | " + " | ".join(f"T={t}" for t in Ts) + " |",
          "|---|---|" + "---|" * len(Ts)]
    for c in r["configs"]:
        cells = [f"{_pct(c['accuracy'][str(t)]['mean'])} ± {_pct(c['accuracy'][str(t)]['std'])}"
                 if len(c["seeds"]) > 1 else _pct(c["accuracy"][str(t)]["mean"]) for t in Ts]
        L.append(f"| {c['label']} | {len(c['seeds'])} | " + " | ".join(cells) + " |")
    base = next((c for c in r["configs"] if not c["mask"]), None)
    L += ["", f"## Operations per inference at T={tm}", "",
          "| mask | spikes emitted | delivered | firing rate | synops | synops vs unmasked | neuron updates | "
          "analog MACs | residual acc. | Q·Kᵀ coinc. | softmax·V acc. | softmax elems |",
          "|---|" + "---|" * 11]
    for c in r["configs"]:
        t = c["counts"][tm]["totals"]
        rel = "—"
        if base is not None and base["counts"][tm]["totals"]["synops"]:
            rel = f"×{t['synops'] / base['counts'][tm]['totals']['synops']:.3f}"
        L.append(f"| {c['label']} | {fmt_num(t['spikes_emitted'])} | {fmt_num(t['spikes_delivered'])} | "
                 f"{t['firing_rate']:.4f} | {fmt_num(t['synops'])} | {rel} | {fmt_num(t['neuron_updates'])} | "
                 f"{fmt_num(t['analog_macs'])} | {fmt_num(t['residual_accumulations'])} | "
                 f"{fmt_num(t['qk_products'])} | "
                 f"{fmt_num(t['softmax_v_accumulations'])} | {fmt_num(t['softmax_elements'])} |")
    ann = r.get("ann_counts", {})
    L += ["", f"ANN on the same input: {fmt_num(ann.get('macs', 0))} MACs per inference "
              f"({fmt_num(ann.get('layer_macs', 0))} in layers, {fmt_num(ann.get('matmul_macs', 0))} in attention "
              f"matmuls), {fmt_num(ann.get('softmax_elements', 0))} softmax elements."]
    L += ["", f"## Energy per inference at T={tm}", ""]
    L += ["| mask | Loihi (synops+updates+spikes) | Loihi, inactive-update price | 45 nm theoretical "
          f"({r.get('precision', 'fp32')}, papers' formula) | + residual & dynamic products | ANN (45 nm) | "
          "SNN/ANN | SNN/ANN, + residual & dynamic |", "|---|---|---|---|---|---|---|---|"]
    for c in r["configs"]:
        e = c["energy"][tm]
        lo = next((h for h in e["hardware"] if h["profile"] == "loihi" and h.get("available")), None)
        th = e["theoretical"]
        an = e.get("ann", {})
        L.append(f"| {c['label']} | {format_energy(lo['total_pJ']) if lo else '—'} | "
                 f"{format_energy(lo['total_pJ_low']) if lo else '—'} | {format_energy(th['papers_total_pJ'])} | "
                 f"{format_energy(th['total_with_residual_and_dynamic_pJ'])} | "
                 f"{format_energy(an.get('total_pJ'))} | {th.get('ratio_to_ann', float('nan')):.3f} | "
                 f"{th.get('ratio_to_ann_with_extra', float('nan')):.3f} |")
    e0 = r["configs"][0]["energy"][tm]
    th0 = e0["theoretical"]
    alt = th0.get("merge_alternative")
    if alt:
        L += ["", f"With patch merging reading {_MERGE_WORDS[alt['merge_input']]} (`--merge-input "
                  f"{alt['merge_input']}`, same run): {format_energy(alt['papers_total_pJ'])} (papers' formula), "
                  f"{format_energy(alt['total_with_residual_and_dynamic_pJ'])} with residual and dynamic products, "
                  f"SNN/ANN {alt.get('ratio_to_ann', float('nan')):.3f} / "
                  f"{alt.get('ratio_to_ann_with_extra', float('nan')):.3f} ({r['configs'][0]['label']})."]
    if th0.get("graded_event_as_mac_pJ") is not None:
        L += ["", f"Burst neurons: the synaptic ops above count a burst of s spikes as s accumulations at each "
                  f"synapse it reaches. Priced instead as one MAC per graded event (any payload), patch merging "
                  f"on the graded stream: "
                  f"{format_energy(th0['graded_event_as_mac_pJ'])} with residual and dynamic products, SNN/ANN "
                  f"{th0.get('graded_event_as_mac_ratio_to_ann', float('nan')):.3f} ({r['configs'][0]['label']})."]
    if "baselines" in e0:
        L += ["", "Baselines (45 nm, residual and dynamic products included; the zero-skipping ANN counted on "
                  f"{e0['baselines'].get('zero_skipping_source') or 'the first batch'}):", ""]
        L += ["| mask | SNN operations | SNN / dense ANN MACs | SNN / zero-skipping ANN MACs | "
              "energy vs dense, fp32 | vs zero-skipping, fp32 | vs dense, int8 | vs zero-skipping, int8 |",
              "|---|---|---|---|---|---|---|---|"]
        for c in r["configs"]:
            b = c["energy"][tm].get("baselines")
            if b:
                L.append(f"| {c['label']} | {fmt_num(b['snn_operations'])} | {b['op_ratio_dense']:.3f} | "
                         f"{b['op_ratio_zero_skipping']:.3f} | {b['fp32']['ratio_dense']:.3f} | "
                         f"{b['fp32']['ratio_zero_skipping']:.3f} | {b['int8']['ratio_dense']:.3f} | "
                         f"{b['int8']['ratio_zero_skipping']:.3f} |")
    L += energy_vs_T(r)
    if th0.get("constant_input_macs"):
        L += ["", f"The layer reading the input image sees the same values every step (direct encoding); it is "
                  f"counted every step above ({fmt_num(th0['constant_input_macs'])} MACs per inference). Computed once "
                  f"per inference instead, the papers' formula gives "
                  f"{format_energy(th0['papers_total_first_layer_once_pJ'])} ({r['configs'][0]['label']})."]
    for h in e0["hardware"]:
        if not h.get("available"):
            L += ["", f"**{h['title']}**: {h['statement']}"]
            for k, v in h.get("system_level", {}).items():
                L.append(f"- {k}: {v['value']:g} {v['unit']} ({v['source']})")
    th = e0["theoretical"]
    L += ["", f"Theoretical energy lines ({r['configs'][0]['label']}, E_AC = {th['E_AC_pJ']} pJ, "
              f"E_MAC = {th['E_MAC_pJ']} pJ):", "", "| item | count | pJ each | energy |", "|---|---|---|---|"]
    for ln in th["lines"]:
        L.append(f"| {ln['item']} | {fmt_num(ln['count'])} | {ln['pJ_each'] if ln['pJ_each'] is not None else '—'} | "
                 f"{format_energy(ln['energy_pJ'])} |")
    lo = next((h for h in e0["hardware"] if h.get("available")), None)
    if lo:
        L += ["", f"Loihi lines ({lo['title']}):", "", "| item | count | pJ each | energy |", "|---|---|---|---|"]
        for ln in lo["lines"] + lo["unmapped"]:
            L.append(f"| {ln['item']} | {fmt_num(ln['count'])} | "
                     f"{ln['pJ_each'] if ln['pJ_each'] is not None else 'not mapped'} | "
                     f"{format_energy(ln['energy_pJ'])} |")
    c0 = r["configs"][0]
    L += breakdown_markdown(*energy_breakdown(c0["counts"][tm], c0["energy"][tm]["theoretical"]),
                            f"{c0['label']}, T={tm}")
    L += ["", f"## Per layer ({c0['label']}, T={tm})", "", "| layer | type | input | from site | synops | MACs |",
          "|---|---|---|---|---|---|"]
    for ly in c0["counts"][tm]["layers"]:
        L.append(f"| {ly['name']} | {ly['type']} | {ly['input']} | {ly['source'] or '—'} | {fmt_num(ly['synops'])} | "
                 f"{fmt_num(ly['macs'])} |")
    L += ["", f"## Per site ({c0['label']}, T={tm})", "",
          "| site | block | neurons | firing rate | delivered rate | spikes emitted | delivered | synops out |",
          "|---|---|---|---|---|---|---|---|"]
    for s in c0["counts"][tm]["sites"]:
        L.append(f"| {s['site']} | {s['block']} | {s['neurons']} | {s['firing_rate']:.4f} | "
                 f"{s['delivered_rate']:.4f} | {fmt_num(s['spikes_emitted'])} | {fmt_num(s['spikes_delivered'])} | "
                 f"{fmt_num(s['synops_out'])} |")
    L += ["", "## What is counted", ""] + [f"- {n}" for n in COUNT_NOTES]
    L += ["", "Plots: `accuracy_vs_T.png`, `firing_rate.png`, `spikes_per_block.png`, `energy_breakdown.png`.", ""]
    return "\n".join(L)


_MERGE_WORDS = {"graded": "the graded residual stream (dense MACs every step)",
                "events": "the residual stream's spike trains (composed weights, accumulations per spike)"}


def _ratio(pj: float, ann: float | None) -> str:
    return f"{pj / ann:.3f}" if ann else "—"


def energy_vs_T(r: dict) -> list[str]:
    """Markdown: accuracy and 45 nm energy (with residual and dynamic products) against the ANN at every T,
    as run and with the other patch-merging formulation, each also with the image encoded once."""
    L = ["", "## Energy vs time steps (45 nm theoretical, with residual and dynamic products)", "",
         "SNN/ANN with the same constants. *Image once*: the layer reading the constant image computed once "
         "per inference instead of every step.", "",
         "| mask | T | SNN accuracy (%) | energy | SNN/ANN | image once | merge on the other input | "
         "other input, image once |", "|---|---|---|---|---|---|---|---|"]
    for c in r["configs"]:
        for t in r["T"]:
            e = c["energy"][str(t)]
            th, ann = e["theoretical"], e.get("ann", {}).get("total_pJ")
            ratio = functools.partial(_ratio, ann=ann)
            tot = formulation_totals(th)
            mine = th["merge_input"]
            other = "graded" if mine == "events" else "events"
            cells = [format_energy(tot[mine, False]), ratio(tot[mine, False]), ratio(tot[mine, True])]
            if (other, False) in tot:
                cells += [f"{ratio(tot[other, False])} ({other})", ratio(tot[other, True])]
            else:
                cells += ["—", "—"]
            L.append(f"| {c['label']} | {t} | {_pct(c['accuracy'][str(t)]['mean'])} | " + " | ".join(cells) + " |")
    return L


def energy_breakdown(counts: dict, theoretical: dict) -> tuple[list[dict], float]:
    """Theoretical (45 nm) energy per layer and per non-layer operation class, largest first,
    and their total (= the report's "+ residual & dynamic products" figure); ``counts`` is a
    per-inference summary (``snn-eval``'s or ``mst run``'s), ``theoretical`` its energy view."""
    th = theoretical
    e_ac, e_mac = th["E_AC_pJ"], th["E_MAC_pJ"]
    rows = [{"name": f"{ly['name']} ({ly['input']})" if ly.get("input") else ly["name"], "synops": ly["synops"],
             "macs": ly["macs"], "energy_pJ": ly["synops"] * e_ac + ly["macs"] * e_mac} for ly in counts["layers"]]
    for ln in th["lines"][2:]:               # after the two layer lines: residual, dynamic products, matmuls
        if ln["energy_pJ"]:
            acc = ln["pJ_each"] == e_ac
            rows.append({"name": ln["item"], "synops": ln["count"] if acc else 0.0,
                         "macs": 0.0 if acc else ln["count"], "energy_pJ": ln["energy_pJ"]})
    rows.sort(key=lambda row: -row["energy_pJ"])
    return rows, sum(row["energy_pJ"] for row in rows)


def breakdown_markdown(rows: list[dict], total: float, what: str) -> list[str]:
    """The "Where the energy goes" table of :func:`energy_breakdown`'s rows."""
    L = ["", f"## Where the energy goes ({what}, 45 nm theoretical with residual and dynamic products)", "",
         "| layer or operation class | synops (accumulates) | MACs (multiply-accumulates) | energy | share |",
         "|---|---|---|---|---|"]
    for row in rows:
        L.append(f"| {row['name']} | {fmt_num(row['synops'])} | {fmt_num(row['macs'])} | "
                 f"{format_energy(row['energy_pJ'])} | {100 * row['energy_pJ'] / total if total else 0:.1f} % |")
    return L


def plot_breakdown(rows: list[dict], total: float, title: str, path) -> None:
    """Bar chart of the 15 largest rows of :func:`energy_breakdown`."""
    plt = _plt()
    rows = rows[:15][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    ax.barh([row["name"] for row in rows], [row["energy_pJ"] / 1e6 for row in rows], color="tab:orange")
    ax.set_xlabel(f"energy per inference, µJ (45 nm theoretical); total {total / 1e6:.3g} µJ")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run_breakdown(r: dict, path) -> bool:
    """``mst run``'s chart of :func:`energy_breakdown`; False (nothing drawn) without matplotlib or energy."""
    write = run_breakdown_writer(r)
    if write is None:
        return False
    atomic_write(Path(path), write, "plot")
    return True


def run_breakdown_writer(r: dict):
    """The writer (``write(tmp)``) of ``mst run``'s energy_breakdown.png, or None without matplotlib or energy."""
    if not r.get("energy"):
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    th = r["energy"]["theoretical"]
    rows, total = energy_breakdown(r["per_inference"], th)
    title = f"where the energy goes: {r['network']}, T={r['T']}, {th['precision']}"
    return lambda tmp: _plot_into(lambda _, f: plot_breakdown(rows, total, title, f), r, tmp)


def plot_energy_breakdown(r: dict, path) -> None:
    tm = str(max(int(t) for t in r["T"]))
    c0 = r["configs"][0]
    rows, total = energy_breakdown(c0["counts"][tm], c0["energy"][tm]["theoretical"])
    plot_breakdown(rows, total, f"where the energy goes: {c0['label']}, T={tm}", path)


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_accuracy(r: dict, path) -> None:
    plt = _plt()
    Ts = [int(t) for t in r["T"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in r["configs"]:
        m = [100 * c["accuracy"][str(t)]["mean"] for t in Ts]
        s = [100 * c["accuracy"][str(t)]["std"] for t in Ts]
        ax.errorbar(Ts, m, yerr=s, marker="o", capsize=3, label=c["label"])
    ax.axhline(100 * r["ann"]["accuracy"], color="k", ls="--", lw=1, label="ANN")
    if len(Ts) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(Ts)
    ax.set_xticklabels([str(t) for t in Ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{r.get('arch', '')} on {r.get('dataset', '')}: SNN accuracy vs T")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_firing_rates(r: dict, path) -> None:
    plt = _plt()
    tm = str(max(int(t) for t in r["T"]))
    cfgs = r["configs"]
    fig, axes = plt.subplots(1, len(cfgs), figsize=(5.5 * len(cfgs), 4), squeeze=False, sharey=True)
    for ax, c in zip(axes[0], cfgs):
        by_site: dict[str, list] = {}
        for s in c["counts"][tm]["sites"]:
            by_site.setdefault(s["site"], []).append((s["block"], s["delivered_rate"]))
        for site, pts in by_site.items():
            pts.sort()
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker="o" if len(xs) > 1 else "s", label=site)
        ax.set_xlabel("block")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{c['label']} (T={tm})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("firing rate after RSM\n(delivered spikes / neuron / step)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_spikes_per_block(r: dict, path) -> None:
    plt = _plt()
    tm = str(max(int(t) for t in r["T"]))
    cfgs = r["configs"]
    groups = [g["group"] for g in cfgs[0]["counts"][tm]["per_block"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups) * max(1, len(cfgs)) / 2 + 3), 4))
    w = 0.8 / len(cfgs)
    for i, c in enumerate(cfgs):
        vals = {g["group"]: g["spikes_delivered"] for g in c["counts"][tm]["per_block"]}
        ax.bar([j + i * w for j in range(len(groups))], [vals.get(g, 0) for g in groups], w, label=c["label"])
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(groups))])
    ax.set_xticklabels(groups, rotation=45, fontsize=8)
    ax.set_xlabel("block (embed/merge sites apart)")
    ax.set_ylabel(f"spikes delivered per inference (T={tm})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# the files each command writes into its --report folder: checked against the command's inputs before
# any work (fileio.check_output_dir(..., names=..., inputs=...)), so that none of them is overwritten
EVAL_PLOTS = ("accuracy_vs_T.png", "firing_rate.png", "spikes_per_block.png", "energy_breakdown.png")
EVAL_REPORT_FILES = ("report.json", "summary.md", *EVAL_PLOTS)     # + snn-eval's progress.json
RUN_REPORT_FILES = ("report.json", "summary.md", "energy_breakdown.png")


def write_report(r: dict, out_dir, plots: bool = True, summary_extra: str = "") -> list[Path]:
    """Write report.json, summary.md (``summary_extra`` appended) and (unless ``plots=False``) four PNG plots
    into ``out_dir``, all or nothing (:func:`write_report_folder`)."""
    files = [("report.json", text_writer(json_text(r))), ("summary.md", text_writer(markdown_summary(r) +
                                                                                   summary_extra))]
    if plots:
        for name, fn in zip(EVAL_PLOTS, (plot_accuracy, plot_firing_rates, plot_spikes_per_block,
                                         plot_energy_breakdown)):
            files.append((name, lambda tmp, fn=fn: _plot_into(fn, r, tmp)))
    return write_report_folder(out_dir, files)


def _plot_into(fn, r: dict, tmp) -> None:
    with open(tmp, "wb") as f:      # a file object: the format is PNG whatever the temp file's name
        fn(r, f)


# ----------------------------------------------------------------------------------------
# mst run (both backends)

RUN_TOTALS = ("spikes_emitted", "spikes_delivered", "neuron_updates", "neurons", "synops", "analog_macs",
              "qk_products", "softmax_v_accumulations", "softmax_elements", "residual_accumulations",
              "analog_matmul_macs", "current_overflows", "voltage_overflows", "messages_delivered",
              "burst_synops", "burst_event_synops")


def per_inference_summary(res) -> dict:
    """Counts per inference (mean over samples) of a run result (``counts`` per layer, ``n_samples``, ``T``), in
    the structure :mod:`mst_lava.energy` expects."""
    n = max(res.n_samples, 1)
    sites, layers = [], []
    tot = dict.fromkeys(RUN_TOTALS, 0.0)
    overflows = []
    for name, c in res.counts.items():
        typ = c["type"]
        oc, ov = c.get("current_overflows", 0), c.get("voltage_overflows", 0)
        if oc or ov:                         # 24-bit wraps / saturations of the fixed-point neurons
            tot["current_overflows"] += oc / n
            tot["voltage_overflows"] += ov / n
            overflows.append({"name": name, "current_overflows": oc / n, "voltage_overflows": ov / n,
                              "per_neuron_step": (oc + ov) / max(c.get("neuron_updates", 0), 1)})
        if typ == "mst_residual":
            tot["residual_accumulations"] += c.get("residual_adds", 0) / n
        elif typ == "mst_qk":
            tot["qk_products"] += c.get("synops", 0) / n
        elif typ == "mst_softmax_av":
            tot["softmax_v_accumulations"] += c.get("synops", 0) / n
            tot["softmax_elements"] += c.get("softmax_elements", 0) / n
        elif typ == "mst_readout":
            tot["analog_macs"] += c.get("analog_macs", 0) / n
            layers.append({"name": name, "type": typ, "synops": 0.0, "macs": c.get("analog_macs", 0) / n})
        else:     # a graded input's work is its dense MACs; its events (format §7 synops) are listed apart
            graded = bool(c.get("analog_macs", 0))
            tot["analog_macs" if graded else "synops"] += c["analog_macs" if graded else "synops"] / n
            if not graded and c.get("synops_messages", c["synops"]) != c["synops"]:
                # graded payloads in: synops count s accumulations per synapse; also priced as one MAC per message
                tot["burst_synops"] += c["synops"] / n
                tot["burst_event_synops"] += c["synops_messages"] / n
            layers.append({"name": name, "type": typ, "synops": 0.0 if graded else c.get("synops", 0) / n,
                           "macs": c.get("analog_macs", 0) / n,
                           **({"graded_input_events_synops": c.get("synops", 0) / n} if graded else {})})
        if c["site"]:
            up = c.get("neuron_updates", 0)
            tot["spikes_emitted"] += c["spikes"] / n
            tot["spikes_delivered"] += c["delivered"] / n
            tot["messages_delivered"] += c.get("messages", c["delivered"]) / n
            tot["neuron_updates"] += up / n
            tot["neurons"] += c["neurons"]
            sites.append({"name": name, "site": c["site"], "block": c["block"], "neurons": c["neurons"],
                          "spikes_emitted": c["spikes"] / n, "spikes_delivered": c["delivered"] / n,
                          "dropped": c.get("dropped", 0) / n, "neuron_updates": up / n,
                          "firing_rate": c["spikes"] / up if up else 0.0})
    tot["firing_rate"] = tot["spikes_emitted"] / tot["neuron_updates"] if tot["neuron_updates"] else 0.0
    return {"T": res.T, "samples": res.n_samples, "sites": sites, "layers": layers, "totals": tot,
            "overflows": overflows}


def overflow_line(summary: dict) -> str | None:
    """One line on Loihi's 24-bit limits when a fixed-point run hit them (None otherwise)."""
    t, ov = summary["totals"], summary.get("overflows") or []
    if not ov:
        return None
    worst = sorted(ov, key=lambda o: -(o["current_overflows"] + o["voltage_overflows"]))[:3]
    where = ", ".join(f"{o['name']} ({fmt_num(o['current_overflows'])} wraps, {fmt_num(o['voltage_overflows'])} "
                      f"saturations)" for o in worst)
    return (f"24-bit overflow events per inference: {fmt_num(t['current_overflows'])} current wrap-arounds, "
            f"{fmt_num(t['voltage_overflows'])} voltage saturations in {len(ov)} layer(s); most in {where}")


def run_energy(summary: dict, precision: str, graph=None, images=None) -> tuple[dict | None, str | None]:
    """The energy report of a run's per-inference counts, or (None, why not); with ``graph`` (the run's network)
    the dense ANN baseline is the file's own graph (:func:`mst_lava.ann_ops.dense_counts`) and the report has
    ``theoretical.ratio_to_ann`` and ``ratio_to_ann_with_extra`` as ``snn-eval``'s; with ``images`` also the
    zero-skipping ANN counted on them (``energy.baselines``)."""
    from mst_lava import ann_ops, energy
    from mst_lava.errors import MSTError
    try:
        ann = ann_ops.dense_counts(graph) if graph is not None else None
        zs = ann_ops.zero_skipping_counts(graph, images) if graph is not None and images is not None else None
        return energy.energy_report(summary, ann, precision="int8" if precision == "fixed" else "fp32",
                                    zero_skipping=zs), None
    except (MSTError, KeyError, ValueError) as e:
        return None, f"energy report unavailable: {e}"


def run_lines(summary: dict, precision: str, energy: dict | None, energy_note: str | None) -> list[str]:
    """What ``mst run`` prints after predictions and accuracy: counts, overflows, energy per inference."""
    t = summary["totals"]
    lines = [f"per inference: spikes {fmt_num(t['spikes_emitted'])} emitted, {fmt_num(t['spikes_delivered'])} "
             f"delivered (firing rate {t['firing_rate']:.4f}); synaptic ops {fmt_num(t['synops'])}; neuron updates "
             f"{fmt_num(t['neuron_updates'])}; analog MACs {fmt_num(t['analog_macs'])}"]
    ovl = overflow_line(summary)
    if ovl:
        lines.append(ovl)
    elif precision == "fixed":
        lines.append("24-bit overflow events: none (no current wrapped, no voltage saturated)")
    if energy is None:
        return lines + [str(energy_note)]
    for h in energy["hardware"]:
        if h.get("available"):
            lines.append(f"energy ({h['title']}): {format_energy(h['total_pJ'])} per inference")
    th = energy["theoretical"]
    lines.append(f"energy (45 nm theoretical, {th['precision']}): {format_energy(th['papers_total_pJ'])} per inference "
                 f"({format_energy(th['total_with_residual_and_dynamic_pJ'])} with residual and dynamic products)")
    if "ann" in energy:
        a = energy["ann"]
        from mst_lava.energy import snn_operations
        snn_ops = snn_operations(summary)
        line = (f"ANN baseline (dense, from the file's graph, 45 nm {a['precision']}): {fmt_num(a['macs'])} MACs, "
                f"{format_energy(a['total_pJ'])}; SNN operations / ANN MACs {snn_ops / a['macs']:.3f}; "
                f"SNN/ANN energy {th['ratio_to_ann']:.3f} ({th['ratio_to_ann_with_extra']:.3f} with residual and "
                "dynamic products")
        if th.get("graded_event_as_mac_ratio_to_ann") is not None:
            line += f"; {th['graded_event_as_mac_ratio_to_ann']:.3f} pricing one MAC per graded message"
        lines.append(line + ")")
    if "baselines" in energy:
        from mst_lava.energy import baseline_lines
        lines += baseline_lines(energy["baselines"])
    return lines


def run_markdown(r: dict) -> str:
    """``summary.md`` of ``mst run`` from its ``report.json`` dict (either backend)."""
    s = r["per_inference"]
    t = s["totals"]
    th = r["throughput"]
    if r["backend"] == "torch":
        L = [f"# torch run (NetSim): {r['network']} on {r['dataset']}", "",
             f"- command: `{r['command']}`",
             f"- backend torch on {r['device']}, {r['precision']} point, T={r['T']}, {r['n_samples']} samples from "
             f"{r['offset']} in batches of {r['batch_size']}, RSM seed {r['rsm_seed']}, mask {format_mask(r['mask'])}",
             f"- accuracy: **{100 * r['accuracy']:.2f} %**",
             f"- throughput: {th['samples_per_s']:.2f} samples/s ({th['sample_steps_per_s']:.0f} sample-steps/s, "
             f"{th['run_s']:.2f} s)", "",
             "All counts below were counted by the torch executor of the file (mst_lava.export.NetSim), the same "
             "quantities the Lava processes count (per inference = mean over samples)."]
    else:
        L = [f"# Lava run: {r['network']} on {r['dataset']}", "",
             f"- command: `{r['command']}`",
             f"- backend {r['backend']}, {r['precision']} point, granularity {r['granularity']}, T={r['T']}, "
             f"{r['n_samples']} samples from {r['offset']}, RSM seed {r['rsm_seed']}, mask {format_mask(r['mask'])}",
             f"- accuracy: **{100 * r['accuracy']:.2f} %**",
             f"- throughput: {th['steps_per_s']:.1f} Lava steps/s, {th.get('images_per_s', float('nan')):.2f} images/s "
             f"({th['process_kinds']}; "
             f"compile {th['compile_s']:.2f} s)", "",
             "All counts below were counted by the Lava processes during the run (per inference = mean over "
             "samples)."]
    L += ["", "| quantity | per inference |", "|---|---|"]
    for k in ("spikes_emitted", "spikes_delivered", "messages_delivered", "firing_rate", "synops", "burst_synops",
              "burst_event_synops", "neuron_updates", "analog_macs", "residual_accumulations", "qk_products",
              "softmax_v_accumulations", "softmax_elements"):
        if k in t:
            L.append(f"| {k} | {fmt_num(t[k]) if k != 'firing_rate' else f'{t[k]:.4f}'} |")
    en = r.get("energy") or {}
    if "ann" in en:
        a, th_ = en["ann"], en["theoretical"]
        L += ["", f"ANN baseline (dense ANN from the file's graph, 45 nm {a['precision']} constants): "
              f"{fmt_num(a['macs'])} MACs; SNN/ANN energy {th_['ratio_to_ann']:.3f} (papers' formula), "
              f"{th_['ratio_to_ann_with_extra']:.3f} with residual and dynamic products"
              + (f", {th_['graded_event_as_mac_ratio_to_ann']:.3f} pricing one MAC per graded message"
                 if th_.get("graded_event_as_mac_ratio_to_ann") is not None else "") + "."]
    if r["precision"] == "fixed":
        L += ["", "## 24-bit overflow events (Loihi: the current wraps around, the voltage saturates)", ""]
        ov = s.get("overflows") or []
        if not ov:
            L.append("None: no neuron's current wrapped and no voltage saturated.")
        else:
            L += ["| layer | current wrap-arounds | voltage saturations | per neuron-step |", "|---|---|---|---|"]
            for o in ov:
                L.append(f"| {o['name']} | {fmt_num(o['current_overflows'])} | {fmt_num(o['voltage_overflows'])} | "
                         f"{o['per_neuron_step']:.2e} |")
    e = r.get("energy")
    L += ["", "## Energy per inference", ""]
    if e:
        for h in e["hardware"]:
            if h.get("available"):
                L.append(f"- {h['title']}: {format_energy(h['total_pJ'])}")
            else:
                L.append(f"- {h['title']}: {h.get('statement', 'no per-op constants')}")
        th = e["theoretical"]
        L.append(f"- 45 nm theoretical ({th['precision']}): {format_energy(th['papers_total_pJ'])} "
                 f"({format_energy(th['total_with_residual_and_dynamic_pJ'])} with residual and dynamic products)")
        L += breakdown_markdown(*energy_breakdown(s, th), f"T={r['T']}, {th['precision']}")
    else:
        L.append(f"- {r.get('energy_note')}")
    L += ["", "## Per site", "",
          "| site | block | neurons | spikes emitted | delivered | dropped by RSM | firing rate |",
          "|---|---|---|---|---|---|---|"]
    for x in s["sites"]:
        L.append(f"| {x['site']} | {x['block']} | {x['neurons']} | {fmt_num(x['spikes_emitted'])} | "
                 f"{fmt_num(x['spikes_delivered'])} | {fmt_num(x['dropped'])} | {x['firing_rate']:.4f} |")
    L += ["", "## Predictions", "", f"labels {r['labels']}", "", f"predictions {r['predictions']}", ""]
    return "\n".join(L)
