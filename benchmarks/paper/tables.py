"""Tables and figures of the paper's experiments on Fashion-MNIST, from what benchmarks/paper/run.py left.

    python benchmarks/paper/tables.py         # writes benchmarks/results/paper/README.md and fig*.png

Nothing is run or typed in here: every number is read from the `snn-eval` reports
(benchmarks/results/paper/{power,ablation,ablation_paper,searched,pepper}/…/report.json) and the `rsm-search`
result (search.json). A step that has not finished shows as "not run yet".
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
RES = ROOT / "benchmarks" / "results" / "paper"
sys.path.insert(0, str(ROOT))

from mst_lava.model.rsm import BLOCK_SITES  # noqa: E402

MODELS = (("mst", "MST (Q, K, A masked)"), ("resnet18", "QCFS ResNet-18 (every block)"),
          ("vgg16", "QCFS VGG-16 (every block)"))
T_TABLE = "64"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _pct(a: dict) -> str:
    return f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}" if a["std"] else f"{100 * a['mean']:.2f}"


def spike_driven_ops(t: dict) -> float:
    """Fixed-synapse synops plus the attention's spike-driven products (issue 11's measure)."""
    return t["synops"] + t["qk_products"] + t["softmax_v_accumulations"]


def _energy(c: dict, T: str) -> tuple[float, float | None]:
    """(45 nm total in µJ with residual and dynamic products, Loihi total in µJ or None)."""
    e = c["energy"][T]
    loihi = next((h for h in e["hardware"] if h["profile"] == "loihi" and h["available"]), None)
    return e["theoretical"]["total_with_residual_and_dynamic_pJ"] / 1e6, loihi["total_pJ"] / 1e6 if loihi else None


def _rel(row: dict, base: dict | None, key: str) -> str:
    """``row[key]`` against the unmasked row's, or — when there is none to compare with."""
    return f"{row[key] / base[key]:.2f}" if base and base[key] and row[key] is not None else "—"


def power_table() -> list[str]:
    L = ["## Power table (paper Table 3 analogue), T = 64", "",
         "Accuracy: mean ± std over the mask seeds on the evaluated test images; operations and energy per "
         "inference; × = against the same model's unmasked row. Masked rows are fine-tuned from the unmasked "
         "model with their masks for one epoch at lr 5e-4, as the MST (the baselines at 75 % also for 3 epochs "
         "at lr 2e-3).", "",
         "| model | masked | accuracy % | spikes | synops | Q·Kᵀ + softmax·V | analog MACs | spike-driven ops × "
         "| 45 nm µJ | × | Loihi µJ | × | images |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, title in MODELS:
        base = None
        variants = [(r, f"{r} %") for r in (0, 50, 75)]
        if key != "mst":              # run.py: the MST's one-epoch fine-tune, and a longer one at 75 %
            variants.append(("75_long", "75 % (3 epochs, lr 2e-3)"))
        for r, masked in variants:
            rep = _load(RES / "power" / f"{key}_r{r}" / "report.json")
            if rep is None:
                L.append(f"| {title} | {masked} | not run yet | | | | | | | | | | |")
                continue
            c = rep["configs"][0]
            t = c["counts"][T_TABLE]["totals"]
            e45, el = _energy(c, T_TABLE)
            row = {"ops": spike_driven_ops(t), "e45": e45, "el": el}
            base = base or (row if r == 0 else None)
            loihi = f"{el:.2f} | {_rel(row, base, 'el')}" if el is not None else "— | —"
            L.append(f"| {title} | {masked} | {_pct(c['accuracy'][T_TABLE])} | {t['spikes_delivered']:,.0f} | "
                     f"{t['synops']:,.0f} | {t['qk_products'] + t['softmax_v_accumulations']:,.0f} | "
                     f"{t['analog_macs']:,.0f} | {_rel(row, base, 'ops')} | {e45:.2f} | "
                     f"{_rel(row, base, 'e45')} | {loihi} | {rep['n_samples']} |")
    return L


SITES = BLOCK_SITES     # the ten sites of a block, in the paper's column order


def _ablation_rows(cfgs: list, base: dict, first: Callable[[dict], str]) -> list[str]:
    """One row per configuration: ``first`` column(s), accuracy, Δ against ``base``, synops, spike-driven ops ×."""
    b_acc = base["accuracy"][T_TABLE]["mean"]
    b_ops = spike_driven_ops(base["counts"][T_TABLE]["totals"])
    rows = []
    for c in cfgs:
        t = c["counts"][T_TABLE]["totals"]
        rows.append(f"| {first(c)} | {_pct(c['accuracy'][T_TABLE])} | "
                    f"{100 * (c['accuracy'][T_TABLE]['mean'] - b_acc):+.2f} | {t['synops']:,.0f} | "
                    f"{spike_driven_ops(t) / b_ops:.3f} |")
    return rows


def _seeds_note(rep: dict) -> str:
    ns = max(len(c["seeds"]) for c in rep["configs"] if c["mask"])
    return f"{rep['n_samples']} test images, {ns} seed{'s' if ns > 1 else ''}, {rep['attention']} attention"


def ablation_table() -> list[str]:
    L = ["## Per-site ablation (paper Table 2 analogue), `export/fmnist.pt`, T = 64", ""]
    rep, r0 = _load(RES / "ablation_paper" / "report.json"), _load(RES / "power" / "mst_r0" / "report.json")
    if rep is None or r0 is None:
        L += ["The paper's ten rows: not run yet.", ""]
    elif r0["n_samples"] != rep["n_samples"]:
        L += ["The paper's ten rows: the unmasked row (power/mst_r0) was evaluated on other images.", ""]
    else:
        base = r0["configs"][0]
        L += [f"The ten rows of the paper's Table 2 (ratios per site; soft(A)·V is AV). {_seeds_note(rep)}; the "
              "masks are applied to the unmasked model's weights, without fine-tuning (the paper reports its "
              "rows for trained models, dataset not stated; 86.7 % at Q, K, A = 50 %). Δ and × against the "
              "unmasked model on the same images (power table, T = 64).", "",
              "| " + " | ".join(SITES) + " | accuracy % | Δ points | synops | spike-driven ops × |",
              "|" + "---|" * (len(SITES) + 4)]
        L += _ablation_rows([dict(base, mask={})] + rep["configs"], base,
                            lambda c: " | ".join(f"{c['mask'].get(s, 0):g}" for s in SITES))
        L.append("")
    rep = _load(RES / "ablation" / "report.json")
    if rep is None:
        return L + ["One site at a time: not run yet."]
    L += [f"One site at a time: {_seeds_note(rep)}; each site masked in every block of the unmasked model's "
          "weights, without fine-tuning.", "",
          "| masked site | accuracy % | Δ points | synops | spike-driven ops × |", "|---|---|---|---|---|"]
    return L + _ablation_rows(rep["configs"], rep["configs"][0], lambda c: c["label"])


def search_table() -> list[str]:
    L = ["## `mst rsm-search` on `export/fmnist.pt`", ""]
    s = _load(RES / "search.json")
    if s is None:
        return L + ["not run yet"]
    L += [f"Found map: `{' '.join(f'{k}={v}' for k, v in s['mask'].items()) or '(none)'}`; budget "
          f"{s['budget_points']} points; scored on {s['search_samples']} held-out training images × "
          f"{len(s['search_seeds'])} seeds at T = {s['T']}; compared on {s['test_samples']} test images × "
          f"{s['final_seeds']} seeds; {s.get('attention', 'paper')} attention, patch merging on "
          f"{'spike events' if s.get('merge_input') == 'events' else 'the graded stream'} "
          f"({s['wall_s'] / 3600:.1f} h). Every row uses the unmasked model's weights (uniform = "
          f"`{' '.join(f'{k}={v:g}' for k, v in s['uniform_mask'].items())}` without fine-tuning; the fine-tuned "
          "masked models are in the power table).", "",
          "| configuration | accuracy % | loss (points) | synops × | spike-driven ops × |", "|---|---|---|---|---|"]
    for k, r in s["test"].items():
        L.append(f"| {k} | {r['acc']:.2f} | {r['acc_loss']:+.2f} | {r['synops_rel']:.3f} | {r['ops_rel']:.3f} |")
    rep = _load(RES / "searched" / "report.json")
    if rep is not None:
        c = next(c for c in rep["configs"] if c["mask"])
        L += ["", f"Fine-tuned with the found map (`export/fmnist_searched.pt`), `snn-eval`, {rep['n_samples']} "
                  f"images: {_pct(c['accuracy'][T_TABLE])} % at T = 64 with its masks, "
                  f"{_pct(rep['configs'][0]['accuracy'][T_TABLE])} % without."]
        r0 = _load(RES / "power" / "mst_r0" / "report.json")
        if r0 is not None and r0["n_samples"] == rep["n_samples"]:
            b = r0["configs"][0]
            ops = spike_driven_ops(c["counts"][T_TABLE]["totals"]) / spike_driven_ops(b["counts"][T_TABLE]["totals"])
            L[-1] += (f" Against the unmasked `fmnist.pt` at T = 64 on the same images (power table, "
                      f"{100 * b['accuracy'][T_TABLE]['mean']:.2f} %): "
                      f"{100 * (b['accuracy'][T_TABLE]['mean'] - c['accuracy'][T_TABLE]['mean']):.2f} points lost, "
                      f"spike-driven ops ×{ops:.3f}.")
    return L


def _merged(prefix: str) -> dict | None:
    """The three MST reports as one report with three configurations (for report.py's plots)."""
    reps = [_load(RES / prefix / f"mst_r{r}" / "report.json") for r in (0, 50, 75)]
    if any(r is None for r in reps):
        return None
    m = dict(reps[0])
    m["configs"] = [dict(r["configs"][0], label=f"{pct} % ({r['configs'][0]['label']})")
                    for pct, r in zip((0, 50, 75), reps)]
    return m


def figures() -> list[str]:
    from mst_lava import report as rp
    L = ["## Figures", ""]
    m = _merged("power")
    if m is None:
        return L + ["accuracy vs T, firing rates, spikes per block: not run yet (the three MST power steps)"]
    rp.plot_accuracy(m, RES / "fig2_accuracy_vs_T.png")
    keep = ("Q", "K", "A", "V")
    qkav = dict(m, configs=[dict(c, counts={t: dict(v, sites=[s for s in v["sites"] if s["site"] in keep])
                                            for t, v in c["counts"].items()}) for c in m["configs"]])
    rp.plot_firing_rates(qkav, RES / "fig3_firing_rates_QKAV.png")
    rp.plot_spikes_per_block(m, RES / "fig4_spikes_per_block.png")
    L += ["![accuracy vs T](fig2_accuracy_vs_T.png)", "![firing rates](fig3_firing_rates_QKAV.png)",
          "![spikes per block](fig4_spikes_per_block.png)"]
    pep = [(r, _load(RES / "pepper" / f"mst_r{r}" / "report.json")) for r in (0, 50, 75)]
    have = [(r, p) for r, p in pep if p is not None]
    if len(have) == len(pep):
        plt = rp._plt()
        fig, ax = plt.subplots(figsize=(6, 4))
        for r, p in have:
            c = p["configs"][0]
            xs = [0.0] + [e["density"] for e in p["pepper"]]
            ys = [c["accuracy"][T_TABLE]] + [e["accuracy"][c["label"]][T_TABLE] for e in p["pepper"]]
            ax.errorbar(xs, [100 * y["mean"] for y in ys], yerr=[100 * y["std"] for y in ys], marker="o",
                        capsize=3, label=f"{r} % masked")
        ax.set_xlabel("pepper-noise density")
        ax.set_ylabel(f"SNN accuracy % at T = {T_TABLE}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RES / "fig6_pepper.png", dpi=120)
        plt.close(fig)
        L.append("![pepper noise](fig6_pepper.png)")
    else:
        L.append("pepper-noise figure: not run yet (needs the three MST pepper steps; "
                 f"done: {', '.join(f'{r} %' for r, _ in have) or 'none'})")
    if have:
        dens = have[0][1]["pepper"]
        L += ["", f"SNN accuracy % at T = {T_TABLE} under pepper noise (mean ± std over the mask seeds, "
              f"{have[0][1]['n_samples']} test images):", "",
              "| masked | clean | " + " | ".join(f"density {e['density']:g}" for e in dens) + " |",
              "|---" * (len(dens) + 2) + "|"]
        for r, p in pep:
            if p is None:
                L.append(f"| {r} % | not run yet |" + " |" * len(dens))
                continue
            c = p["configs"][0]
            L.append(f"| {r} % | {_pct(c['accuracy'][T_TABLE])} | " + " | ".join(
                _pct(e["accuracy"][c["label"]][T_TABLE]) for e in p["pepper"]) + " |")
    return L


def main() -> int:
    RES.mkdir(parents=True, exist_ok=True)
    L = ["# The paper's experiments on Fashion-MNIST", "",
         "Made by `python benchmarks/paper/tables.py` from the reports that `python benchmarks/paper/run.py` "
         "left (each report records its command, machine and wall time in report.json).", ""]
    for part in (power_table, ablation_table, search_table, figures):
        L += part() + [""]
    out = RES / "README.md"
    out.write_text("\n".join(L))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
