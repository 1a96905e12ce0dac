"""Reports of an SNN evaluation: ``report.json``, ``summary.md`` and PNG plots (matplotlib Agg).

Input is the dict built by :func:`mst_lava.snn.evaluate.run_snn_eval` (see there); every
figure in the Markdown comes from that dict, so the JSON is the complete record.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from mst_lava.checkpoint import atomic_write, ensure_dir
from mst_lava.energy import format_energy

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


def _num(v: float) -> str:
    if v is None:
        return "—"
    v = float(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g} G"
    if a >= 1e6:
        return f"{v / 1e6:.3g} M"
    if a >= 1e3:
        return f"{v / 1e3:.3g} k"
    return f"{v:.3g}"


def markdown_summary(r: dict) -> str:
    Ts = [int(t) for t in r["T"]]
    tm = str(max(Ts))
    L = [f"# SNN evaluation: {r.get('arch', '?')} on {r.get('dataset', '?')}", ""]
    L += [f"- command: `{r.get('command', '')}`",
          f"- checkpoint: `{r.get('checkpoint')}` ({_num(r.get('params', 0))} parameters), "
          f"trained with mask {r.get('trained_mask') or 'none'}",
          f"- samples: {r['n_samples']}; device {r.get('device')}, {r.get('dtype')}; "
          f"threads {r.get('machine', {}).get('threads')}; wall time {r.get('wall_s', 0):.1f} s "
          f"(simulation {r.get('sim_wall_s', 0):.1f} s)",
          f"- attention products: {r.get('attention', 'paper')} ("
          + ("expectation-compensated, as the exported network runs" if r.get("attention") == "compensated"
             else "the paper's: Q·Kᵀ and softmax·V of each step's spikes") + ")",
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
        L.append(f"| {c['label']} | {_num(t['spikes_emitted'])} | {_num(t['spikes_delivered'])} | "
                 f"{t['firing_rate']:.4f} | {_num(t['synops'])} | {rel} | {_num(t['neuron_updates'])} | "
                 f"{_num(t['analog_macs'])} | {_num(t['residual_accumulations'])} | {_num(t['qk_products'])} | "
                 f"{_num(t['softmax_v_accumulations'])} | {_num(t['softmax_elements'])} |")
    ann = r.get("ann_counts", {})
    L += ["", f"ANN on the same input: {_num(ann.get('macs', 0))} MACs per inference "
              f"({_num(ann.get('layer_macs', 0))} in layers, {_num(ann.get('matmul_macs', 0))} in attention "
              f"matmuls), {_num(ann.get('softmax_elements', 0))} softmax elements."]
    L += ["", f"## Energy per inference at T={tm}", ""]
    L += ["| mask | Loihi (synops+updates+spikes) | Loihi, inactive-update price | 45 nm theoretical "
          f"({r.get('precision', 'fp32')}, papers' formula) | + residual & dynamic products | ANN (45 nm) | "
          "SNN/ANN |", "|---|---|---|---|---|---|---|"]
    for c in r["configs"]:
        e = c["energy"][tm]
        lo = next((h for h in e["hardware"] if h["profile"] == "loihi" and h.get("available")), None)
        th = e["theoretical"]
        an = e.get("ann", {})
        L.append(f"| {c['label']} | {format_energy(lo['total_pJ']) if lo else '—'} | "
                 f"{format_energy(lo['total_pJ_low']) if lo else '—'} | {format_energy(th['papers_total_pJ'])} | "
                 f"{format_energy(th['total_with_residual_and_dynamic_pJ'])} | "
                 f"{format_energy(an.get('total_pJ'))} | {th.get('ratio_to_ann', float('nan')):.3f} |")
    e0 = r["configs"][0]["energy"][tm]
    th0 = e0["theoretical"]
    if th0.get("constant_input_macs"):
        L += ["", f"The layer reading the input image sees the same values every step (direct encoding); it is "
                  f"counted every step above ({_num(th0['constant_input_macs'])} MACs per inference). Computed once "
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
        L.append(f"| {ln['item']} | {_num(ln['count'])} | {ln['pJ_each'] if ln['pJ_each'] is not None else '—'} | "
                 f"{format_energy(ln['energy_pJ'])} |")
    lo = next((h for h in e0["hardware"] if h.get("available")), None)
    if lo:
        L += ["", f"Loihi lines ({lo['title']}):", "", "| item | count | pJ each | energy |", "|---|---|---|---|"]
        for ln in lo["lines"] + lo["unmapped"]:
            L.append(f"| {ln['item']} | {_num(ln['count'])} | "
                     f"{ln['pJ_each'] if ln['pJ_each'] is not None else 'not mapped'} | "
                     f"{format_energy(ln['energy_pJ'])} |")
    c0 = r["configs"][0]
    rows, total = energy_breakdown(c0, tm)
    L += ["", f"## Where the energy goes ({c0['label']}, T={tm}, 45 nm theoretical with residual and dynamic "
              "products)", "", "| layer or operation class | synops (accumulates) | MACs (multiply-accumulates) | "
              "energy | share |", "|---|---|---|---|---|"]
    for row in rows:
        L.append(f"| {row['name']} | {_num(row['synops'])} | {_num(row['macs'])} | "
                 f"{format_energy(row['energy_pJ'])} | {100 * row['energy_pJ'] / total if total else 0:.1f} % |")
    L += ["", f"## Per layer ({c0['label']}, T={tm})", "", "| layer | type | input | from site | synops | MACs |",
          "|---|---|---|---|---|---|"]
    for ly in c0["counts"][tm]["layers"]:
        L.append(f"| {ly['name']} | {ly['type']} | {ly['input']} | {ly['source'] or '—'} | {_num(ly['synops'])} | "
                 f"{_num(ly['macs'])} |")
    L += ["", f"## Per site ({c0['label']}, T={tm})", "",
          "| site | block | neurons | firing rate | delivered rate | spikes emitted | delivered | synops out |",
          "|---|---|---|---|---|---|---|---|"]
    for s in c0["counts"][tm]["sites"]:
        L.append(f"| {s['site']} | {s['block']} | {s['neurons']} | {s['firing_rate']:.4f} | "
                 f"{s['delivered_rate']:.4f} | {_num(s['spikes_emitted'])} | {_num(s['spikes_delivered'])} | "
                 f"{_num(s['synops_out'])} |")
    L += ["", "## What is counted", ""] + [f"- {n}" for n in COUNT_NOTES]
    L += ["", "Plots: `accuracy_vs_T.png`, `firing_rate.png`, `spikes_per_block.png`, `energy_breakdown.png`.", ""]
    return "\n".join(L)


def energy_breakdown(config: dict, t: str) -> tuple[list[dict], float]:
    """Theoretical (45 nm) energy per layer and per non-layer operation class, largest first,
    and their total (= the report's "+ residual & dynamic products" figure)."""
    th = config["energy"][t]["theoretical"]
    e_ac, e_mac = th["E_AC_pJ"], th["E_MAC_pJ"]
    rows = [{"name": f"{ly['name']} ({ly['input']})", "synops": ly["synops"], "macs": ly["macs"],
             "energy_pJ": ly["synops"] * e_ac + ly["macs"] * e_mac} for ly in config["counts"][t]["layers"]]
    for ln in th["lines"][2:]:               # after the two layer lines: residual, dynamic products, matmuls
        if ln["energy_pJ"]:
            acc = ln["pJ_each"] == e_ac
            rows.append({"name": ln["item"], "synops": ln["count"] if acc else 0.0,
                         "macs": 0.0 if acc else ln["count"], "energy_pJ": ln["energy_pJ"]})
    rows.sort(key=lambda row: -row["energy_pJ"])
    return rows, sum(row["energy_pJ"] for row in rows)


def plot_energy_breakdown(r: dict, path) -> None:
    plt = _plt()
    tm = str(max(int(t) for t in r["T"]))
    rows, total = energy_breakdown(r["configs"][0], tm)
    rows = rows[:15][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    ax.barh([row["name"] for row in rows], [row["energy_pJ"] / 1e6 for row in rows], color="tab:orange")
    ax.set_xlabel(f"energy per inference, µJ (45 nm theoretical, T={tm}); total {total / 1e6:.3g} µJ")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"where the energy goes: {r['configs'][0]['label']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def _json_default(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_report(r: dict, out_dir, plots: bool = True) -> list[Path]:
    """Write report.json, summary.md and (unless ``plots=False``) three PNG plots into ``out_dir``."""
    out = ensure_dir(out_dir, "report folder")
    paths = [out / "report.json", out / "summary.md"]
    text = json.dumps(r, indent=1, default=_json_default, ensure_ascii=False)
    atomic_write(paths[0], lambda tmp: Path(tmp).write_text(text), "report file")
    md = markdown_summary(r)
    atomic_write(paths[1], lambda tmp: Path(tmp).write_text(md), "report file")
    if plots:
        for name, fn in (("accuracy_vs_T.png", plot_accuracy), ("firing_rate.png", plot_firing_rates),
                         ("spikes_per_block.png", plot_spikes_per_block),
                         ("energy_breakdown.png", plot_energy_breakdown)):
            p = out / name
            atomic_write(p, lambda tmp, fn=fn: _plot_into(fn, r, tmp), "plot")
            paths.append(p)
    return paths


def _plot_into(fn, r: dict, tmp) -> None:
    with open(tmp, "wb") as f:      # a file object: the format is PNG whatever the temp file's name
        fn(r, f)
