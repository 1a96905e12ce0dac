"""Operation counts → energy, through the hardware profiles in ``hw_profiles/*.json``.

Two views, both per inference (one sample, T steps), from :meth:`OpCounter.summary`:

(a) **hardware profile** (Loihi): synaptic ops × E_synop + neuron updates × E_update
    + delivered spikes × E_spike (within tile); the residual-stream accumulations are priced
    as synaptic ops (mapping assumption, on their own line). Loihi 2 has no published
    per-op constants: its view says so and lists the counts instead of inventing numbers.
(b) **theoretical energy** as SNN papers compute it (45 nm CMOS, Horowitz ISSCC 2014):
    E_MAC × MACs of layers with analog input + E_AC × synaptic ops. Residual accumulations
    and the two kinds of dynamic products (Q·Kᵀ coincidences, softmax·V accumulations, each
    one addition) are priced with E_AC on their own lines and reported in a second total;
    softmax evaluations have no constant and are listed as counts. Layers reading the input
    image directly (direct encoding: the same values every step) are counted every step, as
    the simulator runs them; ``papers_total_first_layer_once_pJ`` prices them once per inference.
    Patch merging is priced as the counts say it runs (``summary["merge_input"]``: dense MACs on
    the graded residual stream, or accumulations of the stream's spike events with composed
    weights); ``merge_alternative`` prices the other formulation from the same run.

The ANN baseline is E_MAC × the ANN's MACs (layers and attention matmuls) on the same input.
Operations without a neuromorphic mapping are never folded into a total silently.
"""
from __future__ import annotations

import json
from pathlib import Path

from mst_lava.errors import MSTError
from mst_lava.shipped import shipped_dir

PROFILE_DIR = shipped_dir("hw_profiles")    # the checkout's hw_profiles/, or the wheel's copy
KINDS = ("measured", "simulated", "derived")


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path) -> dict:
    """A profile by name (``loihi``, ``loihi2``, ``cmos45nm``) or path, validated."""
    p = Path(name_or_path)
    if not p.suffix:
        p = PROFILE_DIR / f"{name_or_path}.json"
    if not p.is_file():
        raise MSTError(f"hardware profile {name_or_path!r} not found; available: {', '.join(profile_names())}")
    try:
        prof = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise MSTError(f"hardware profile {p} is not valid JSON: {e}") from None
    for key in ("name", "title", "per_op_constants", "constants"):
        if key not in prof:
            raise MSTError(f"hardware profile {p} lacks {key!r}")
    for group in ("constants", "system_level"):
        for cname, c in prof.get(group, {}).items():
            missing = [k for k in ("value", "unit", "kind", "source") if k not in c]
            if missing:
                raise MSTError(f"hardware profile {p}: {cname} lacks {missing}")
            if c["kind"] not in KINDS:
                raise MSTError(f"hardware profile {p}: {cname} has kind {c['kind']!r}, not one of {KINDS}")
    if prof["per_op_constants"] and not prof["constants"]:
        raise MSTError(f"hardware profile {p} claims per-op constants but lists none")
    if not prof["per_op_constants"] and "statement" not in prof:
        raise MSTError(f"hardware profile {p} has no per-op constants and must say so in 'statement'")
    return prof


def _pj(prof: dict, key: str) -> float:
    c = prof["constants"][key]
    if c["unit"] != "pJ":
        raise MSTError(f"profile {prof['name']}: {key} is in {c['unit']}, expected pJ")
    return float(c["value"])


def _line(item: str, count: float, pj_each: float | None, note: str = "") -> dict:
    return {"item": item, "count": float(count), "pJ_each": pj_each,
            "energy_pJ": None if pj_each is None else float(count) * pj_each, "note": note}


class _Totals(dict):
    """Totals with 0 for counts a producer did not fill in (e.g. no attention in a baseline)."""

    def __missing__(self, key):
        return 0.0


def _totals(summary: dict) -> dict:
    return _Totals(summary.get("totals", {}))


def _unmapped(t: dict) -> list[dict]:
    return [
        _line("analog-input MACs (first layer, patch merging, head)", t["analog_macs"], None,
              "analog values: not a spike-driven operation on Loihi"),
        _line("Q·Kᵀ coincidences (spike·spike products)", t["qk_products"], None, "no fixed synapses"),
        _line("softmax·V accumulations (analog·spike products)", t["softmax_v_accumulations"], None,
              "no fixed synapses"),
        _line("softmax evaluations (elements)", t["softmax_elements"], None, "no neuromorphic mapping"),
        _line("analog matmul MACs", t["analog_matmul_macs"], None, "no neuromorphic mapping"),
    ]


def hardware_energy(summary: dict, profile="loihi") -> dict:
    """View (a): energy on a neuromorphic profile from synops, neuron updates and spikes."""
    prof = load_profile(profile) if not isinstance(profile, dict) else profile
    t = _totals(summary)
    base = {"profile": prof["name"], "title": prof["title"], "T": summary.get("T")}
    if not prof["per_op_constants"]:
        return {**base, "available": False, "statement": prof["statement"],
                "system_level": {k: {"value": v["value"], "unit": v["unit"], "source": v["source"]}
                                 for k, v in prof.get("system_level", {}).items()},
                "counts": {k: t[k] for k in ("synops", "neuron_updates", "spikes_emitted", "spikes_delivered",
                                             "residual_accumulations")},
                "notes": prof.get("notes", [])}
    e_syn, e_up = _pj(prof, "synaptic_spike_op"), _pj(prof, "neuron_update_active")
    e_up_low = _pj(prof, "neuron_update_inactive") if "neuron_update_inactive" in prof["constants"] else e_up
    e_spk = _pj(prof, "spike_within_tile") if "spike_within_tile" in prof["constants"] else 0.0
    lines = [
        _line("synaptic ops", t["synops"], e_syn),
        _line("neuron updates (active)", t["neuron_updates"], e_up),
        _line("spikes delivered (within tile)", t["spikes_delivered"], e_spk, "mesh hops not included"),
        _line("residual-stream accumulations (as synaptic ops)", t["residual_accumulations"], e_syn,
              "mapping assumption: each spike added to the residual stream is one synaptic op"),
    ]
    total = sum(x["energy_pJ"] for x in lines)
    low = total - t["neuron_updates"] * (e_up - e_up_low)
    return {**base, "available": True, "lines": lines, "total_pJ": total,
            "total_pJ_low": low, "unmapped": _unmapped(t), "notes": prof.get("notes", [])}


def theoretical_energy(summary: dict, profile="cmos45nm", precision: str = "fp32") -> dict:
    """View (b): E_MAC × analog-input MACs + E_AC × synops (+ own lines for the rest)."""
    prof = load_profile(profile) if not isinstance(profile, dict) else profile
    if precision not in ("fp32", "int8"):
        raise MSTError(f"precision must be fp32 or int8, not {precision!r}")
    e_ac, e_mac = _pj(prof, f"{precision}_add"), _pj(prof, f"{precision}_mac")
    t = _totals(summary)
    core = [_line("analog-input MACs (first layer, patch merging, head)", t["analog_macs"], e_mac),
            _line("synaptic ops (accumulates)", t["synops"], e_ac)]
    extra = [_line("residual-stream accumulations", t["residual_accumulations"], e_ac),
             _line("Q·Kᵀ coincidences (spike·spike, one add each)", t["qk_products"], e_ac),
             _line("softmax·V accumulations (analog·spike, one add each)", t["softmax_v_accumulations"], e_ac),
             _line("analog matmul MACs", t["analog_matmul_macs"], e_mac)]
    listed = [_line("softmax evaluations (elements)", t["softmax_elements"], None,
                    "no per-op constant in the profile: not priced")]
    papers = sum(x["energy_pJ"] for x in core)
    full = papers + sum(x["energy_pJ"] for x in extra)
    T = summary.get("T") or 1
    once = papers - e_mac * t["constant_input_macs"] * (1 - 1 / T)
    mode = summary.get("merge_input", "graded")
    delta = e_ac * t["merge_event_synops"] - e_mac * t["merge_graded_macs"]   # graded → events
    if mode == "events":
        delta = -delta
    other = "graded" if mode == "events" else "events"
    # burst neurons: the synaptic ops above count a burst of s spikes as s accumulations; priced instead
    # as one MAC per graded event (whatever its payload) at each synapse it reaches, with patch merging on
    # the graded stream (dense MACs: no burst there to price)
    graded = None
    if t["burst_synops"]:
        base = full + (delta if mode == "events" and t["merge_graded_macs"] else 0.0)
        graded = base - e_ac * t["burst_synops"] + e_mac * t["burst_event_synops"]
    return {"profile": prof["name"], "precision": precision, "T": summary.get("T"),
            "E_AC_pJ": e_ac, "E_MAC_pJ": e_mac, "lines": core + extra + listed,
            "papers_total_pJ": papers,
            "constant_input_macs": t["constant_input_macs"],
            "papers_total_first_layer_once_pJ": once,
            "total_with_residual_and_dynamic_pJ": full,
            "merge_input": mode,
            "graded_event_as_mac_pJ": graded,
            "merge_alternative": {"merge_input": other, "papers_total_pJ": papers + delta,
                                  "total_with_residual_and_dynamic_pJ": full + delta,
                                  "papers_total_first_layer_once_pJ": once + delta}
            if t["merge_graded_macs"] else None}


def formulation_totals(theoretical: dict) -> dict[tuple[str, bool], float]:
    """Totals with residual and dynamic products (pJ) of one run's counts in every formulation they price:
    ``(merge_input, image_once)`` → energy, for the merge as run and its alternative (when there is one),
    each with the image layer every step (False) or once per inference (True)."""
    th = theoretical
    once = th["papers_total_pJ"] - th["papers_total_first_layer_once_pJ"]
    forms = {th["merge_input"]: th["total_with_residual_and_dynamic_pJ"]}
    alt = th.get("merge_alternative")
    if alt:
        forms[alt["merge_input"]] = alt["total_with_residual_and_dynamic_pJ"]
    return {(m, o): pj - (once if o else 0.0) for m, pj in forms.items() for o in (False, True)}


def ann_energy(ann: dict, profile="cmos45nm", precision: str = "fp32") -> dict:
    """ANN baseline: E_MAC × MACs (layers + attention matmuls), softmax listed apart."""
    prof = load_profile(profile) if not isinstance(profile, dict) else profile
    e_mac = _pj(prof, f"{precision}_mac")
    return {"profile": prof["name"], "precision": precision, "E_MAC_pJ": e_mac, "macs": ann["macs"],
            "total_pJ": ann["macs"] * e_mac,
            "lines": [_line("layer MACs", ann["layer_macs"], e_mac),
                      _line("attention matmul MACs", ann["matmul_macs"], e_mac),
                      _line("softmax evaluations (elements)", ann["softmax_elements"], None, "not priced")]}


def snn_operations(summary: dict) -> float:
    """Every operation an SNN run counted per inference: synaptic ops, analog MACs, residual accumulations, the
    attention products and analog matmul MACs (neuron updates and softmax evaluations apart)."""
    t = _totals(summary)
    return float(t["synops"] + t["analog_macs"] + t["residual_accumulations"] + t["qk_products"]
                 + t["softmax_v_accumulations"] + t["analog_matmul_macs"])


def baselines(summary: dict, dense: dict, zero_skipping: dict, profile="cmos45nm") -> dict:
    """The SNN against the dense ANN and the zero-skipping ANN (:mod:`mst_lava.ann_ops`): plain operation counts
    and their ratios, and energies with fp32 and with int8 constants (the SNN's total with residual and dynamic
    products, each ANN's MACs × E_MAC of the same constants)."""
    prof = load_profile(profile) if not isinstance(profile, dict) else profile
    ops = snn_operations(summary)
    out = {"profile": prof["name"], "snn_operations": ops, "dense_ann_macs": dense["macs"],
           "zero_skipping_ann_macs": zero_skipping["macs"], "zero_skipping_source": zero_skipping.get("source"),
           "op_ratio_dense": ops / dense["macs"] if dense["macs"] else None,
           "op_ratio_zero_skipping": ops / zero_skipping["macs"] if zero_skipping["macs"] else None}
    for precision in ("fp32", "int8"):
        th = theoretical_energy(summary, prof, precision)
        e_mac = _pj(prof, f"{precision}_mac")
        snn = th["total_with_residual_and_dynamic_pJ"]
        d, z = dense["macs"] * e_mac, zero_skipping["macs"] * e_mac
        out[precision] = {"snn_pJ": snn, "dense_ann_pJ": d, "zero_skipping_ann_pJ": z,
                          "ratio_dense": snn / d if d else None, "ratio_zero_skipping": snn / z if z else None}
        if th["graded_event_as_mac_pJ"] is not None:
            out[precision]["graded_event_as_mac_ratio_zero_skipping"] = th["graded_event_as_mac_pJ"] / z if z else None
    return out


def baseline_lines(b: dict) -> list[str]:
    """What a command prints of :func:`baselines`: operation counts next to every energy ratio, each named."""
    lines = [f"operations per inference: SNN {b['snn_operations'] / 1e6:.3g} M; dense ANN "
             f"{b['dense_ann_macs'] / 1e6:.3g} M MACs (SNN/ANN {b['op_ratio_dense']:.3f}); zero-skipping ANN "
             f"{b['zero_skipping_ann_macs'] / 1e6:.3g} M MACs (SNN/ANN {b['op_ratio_zero_skipping']:.3f})"]
    for p in ("fp32", "int8"):
        e = b[p]
        lines.append(f"SNN/ANN energy, 45 nm {p} constants, residual and dynamic products included: "
                     f"{e['ratio_dense']:.3f} vs the dense ANN, {e['ratio_zero_skipping']:.3f} vs the zero-skipping "
                     "ANN")
    return lines


def energy_report(summary: dict, ann: dict | None = None, precision: str = "fp32",
                  hardware=("loihi", "loihi2"), theory="cmos45nm", zero_skipping: dict | None = None) -> dict:
    """Both views for one set of counts, plus the ANN baseline and the SNN/ANN ratio; with ``zero_skipping``
    (and ``ann``) also :func:`baselines`: both ANNs, operation counts, fp32 and int8 constants."""
    out = {"hardware": [hardware_energy(summary, h) for h in hardware],
           "theoretical": theoretical_energy(summary, theory, precision)}
    if ann is not None and zero_skipping is not None:
        out["baselines"] = baselines(summary, ann, zero_skipping, theory)
    if ann is not None:
        a = ann_energy(ann, theory, precision)
        out["ann"] = a
        if a["total_pJ"]:
            out["theoretical"]["ratio_to_ann"] = out["theoretical"]["papers_total_pJ"] / a["total_pJ"]
            out["theoretical"]["ratio_to_ann_with_extra"] = \
                out["theoretical"]["total_with_residual_and_dynamic_pJ"] / a["total_pJ"]
            if out["theoretical"]["graded_event_as_mac_pJ"] is not None:
                out["theoretical"]["graded_event_as_mac_ratio_to_ann"] = \
                    out["theoretical"]["graded_event_as_mac_pJ"] / a["total_pJ"]
            alt = out["theoretical"]["merge_alternative"]
            if alt is not None:
                alt["ratio_to_ann"] = alt["papers_total_pJ"] / a["total_pJ"]
                alt["ratio_to_ann_with_extra"] = alt["total_with_residual_and_dynamic_pJ"] / a["total_pJ"]
    return out


def format_energy(pj: float | None) -> str:
    """Human units: 1234.5 → '1.23 nJ'."""
    if pj is None:
        return "—"
    for unit, f in (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= f:
            return f"{pj / f:.3g} {unit}"
    return f"{pj:.3g} pJ"
