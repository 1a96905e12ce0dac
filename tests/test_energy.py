"""Hardware profiles (every constant sourced and typed) and the two energy views."""
from __future__ import annotations

import json

import pytest

from mst_lava.energy import (
    ann_energy,
    energy_report,
    format_energy,
    hardware_energy,
    load_profile,
    profile_names,
    theoretical_energy,
)
from mst_lava.errors import MSTError

TOTALS = {"synops": 1000.0, "neuron_updates": 200.0, "spikes_emitted": 60.0, "spikes_delivered": 50.0,
          "residual_accumulations": 10.0, "analog_macs": 300.0, "qk_products": 40.0,
          "softmax_v_accumulations": 70.0, "softmax_elements": 500.0, "analog_matmul_macs": 0.0,
          "constant_input_macs": 200.0}
SUMMARY = {"T": 8, "totals": TOTALS}


def test_profiles_present_and_sourced():
    assert {"loihi", "loihi2", "cmos45nm"} <= set(profile_names())
    for name in ("loihi", "loihi2", "cmos45nm"):
        p = load_profile(name)
        for group in ("constants", "system_level"):
            for k, c in p.get(group, {}).items():
                assert c["kind"] in ("measured", "simulated", "derived"), (name, k)
                assert len(c["source"]) > 10 and c["unit"], (name, k)


def test_profile_values_match_the_literature():
    lo = load_profile("loihi")["constants"]
    assert (lo["synaptic_spike_op"]["value"], lo["neuron_update_active"]["value"],
            lo["neuron_update_inactive"]["value"], lo["spike_within_tile"]["value"],
            lo["mesh_hop_east_west"]["value"], lo["mesh_hop_north_south"]["value"]) == (23.6, 81, 52, 1.7, 3.0, 4.0)
    assert all(c["kind"] == "simulated" for c in lo.values())          # pre-silicon figures
    cm = load_profile("cmos45nm")["constants"]
    assert (cm["fp32_add"]["value"], cm["fp32_mac"]["value"], cm["int8_add"]["value"],
            cm["int8_mult"]["value"]) == (0.9, 4.6, 0.03, 0.2)
    assert cm["fp32_mac"]["kind"] == "derived"
    assert cm["fp32_mac"]["value"] == pytest.approx(cm["fp32_mult"]["value"] + cm["fp32_add"]["value"])
    l2 = load_profile("loihi2")
    assert l2["per_op_constants"] is False and l2["constants"] == {}
    assert "no per-operation energy" in l2["statement"].lower()
    assert l2["system_level"]["hala_point_max_power"]["value"] == 2600


def test_hardware_energy_loihi():
    e = hardware_energy(SUMMARY, "loihi")
    lines = {ln["item"]: ln for ln in e["lines"]}
    assert lines["synaptic ops"]["energy_pJ"] == pytest.approx(1000 * 23.6)
    assert lines["neuron updates (active)"]["energy_pJ"] == pytest.approx(200 * 81)
    assert lines["spikes delivered (within tile)"]["energy_pJ"] == pytest.approx(50 * 1.7)
    total = 1000 * 23.6 + 200 * 81 + 50 * 1.7 + 10 * 23.6
    assert e["total_pJ"] == pytest.approx(total)
    assert e["total_pJ_low"] == pytest.approx(total - 200 * (81 - 52))
    unm = {ln["item"]: ln for ln in e["unmapped"]}
    assert all(ln["energy_pJ"] is None for ln in e["unmapped"])
    assert unm["softmax evaluations (elements)"]["count"] == 500          # listed, never folded away
    assert unm["Q·Kᵀ coincidences (spike·spike products)"]["count"] == 40


def test_loihi2_reports_no_numbers():
    e = hardware_energy(SUMMARY, "loihi2")
    assert e["available"] is False and "total_pJ" not in e
    assert e["counts"]["synops"] == 1000 and "statement" in e


def test_theoretical_energy_and_ann_baseline():
    th = theoretical_energy(SUMMARY, "cmos45nm", "fp32")
    assert th["papers_total_pJ"] == pytest.approx(4.6 * 300 + 0.9 * 1000)
    assert th["total_with_residual_and_dynamic_pJ"] == pytest.approx(4.6 * 300 + 0.9 * (1000 + 10 + 40 + 70))
    assert th["papers_total_first_layer_once_pJ"] == pytest.approx(4.6 * (100 + 200 / 8) + 0.9 * 1000)
    soft = [ln for ln in th["lines"] if ln["item"].startswith("softmax evaluations")][0]
    assert soft["count"] == 500 and soft["energy_pJ"] is None
    i8 = theoretical_energy(SUMMARY, "cmos45nm", "int8")
    assert i8["papers_total_pJ"] == pytest.approx(0.23 * 300 + 0.03 * 1000)
    ann = {"macs": 5000.0, "layer_macs": 4000.0, "matmul_macs": 1000.0, "softmax_elements": 64.0}
    a = ann_energy(ann)
    assert a["total_pJ"] == pytest.approx(4.6 * 5000)
    rep = energy_report(SUMMARY, ann)
    assert rep["theoretical"]["ratio_to_ann"] == pytest.approx((4.6 * 300 + 900) / (4.6 * 5000))
    assert [h["profile"] for h in rep["hardware"]] == ["loihi", "loihi2"]
    with pytest.raises(MSTError, match="precision"):
        theoretical_energy(SUMMARY, "cmos45nm", "fp16")


def test_bad_profiles_are_refused(tmp_path):
    with pytest.raises(MSTError, match="not found"):
        load_profile("nonexistent")
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"name": "bad", "title": "t", "per_op_constants": True,
                             "constants": {"x": {"value": 1, "unit": "pJ", "kind": "guessed", "source": "me"}}}))
    with pytest.raises(MSTError, match="kind"):
        load_profile(p)
    p.write_text(json.dumps({"name": "bad", "title": "t", "per_op_constants": True,
                             "constants": {"x": {"value": 1, "unit": "pJ", "kind": "measured"}}}))
    with pytest.raises(MSTError, match="lacks"):
        load_profile(p)
    p.write_text("{not json")
    with pytest.raises(MSTError, match="JSON"):
        load_profile(p)


def test_format_energy():
    assert format_energy(None) == "—"
    assert format_energy(12.0) == "12 pJ"
    assert format_energy(1234.0) == "1.23 nJ"
    assert format_energy(2.5e9) == "2.5 mJ"
