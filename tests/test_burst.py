"""Burst (graded-payload) neurons: hand-computed bursts, multi-step == per-step reference, the one-step
network with burst = L equals the QCFS ANN, and the counts follow the per-spike rule."""
from __future__ import annotations

import json

import pytest
import torch
from model_fixtures import spiky_mst

from mst_lava.errors import MSTError
from mst_lava.model import build_model
from mst_lava.model.qcfs import iter_sites, set_levels
from mst_lava.snn import Clock, IFNeuron, OpCounter, StepIFNeuron, simulate, simulate_reference

MASK = {"Q": 0.5, "K": 0.75, "A": 0.5, "MLP1@2": 0.3, "merge": 0.5}


def test_burst_neuron_by_hand():
    from mst_lava.model.qcfs import QCFS
    site = QCFS("act", 0, lam_init=1.0)           # B = 4: unit 0.25, v0 = 0.125
    clock = Clock(batch=1)
    nrn = IFNeuron(site, clock, burst=4)
    xs = torch.tensor([0.0, 0.6, 2.0, -0.1, 0.05], dtype=torch.float64)
    clock.t0, clock.steps = 0, len(xs)
    out = nrn(site, xs.view(-1, 1)).view(-1)
    # v: .125 → .125 (0) | .725 → 2 spikes, .225 | 2.225 → 4 (clipped), 1.225 | 1.125 → 4, .125 | .175 → 0
    assert out.tolist() == [0.0, 0.5, 1.0, 1.0, 0.0]
    with pytest.raises(MSTError, match="burst"):
        IFNeuron(site, clock, burst=0)
    with pytest.raises(MSTError, match="burst"):
        StepIFNeuron(site, clock, burst=2.5)


@pytest.mark.parametrize("attention", ["paper", "compensated"])
def test_burst_multistep_equals_per_step_reference(mst, x, attention):
    c_ms, c_ref = OpCounter(mst, "events"), OpCounter(mst, "events")
    ms = simulate(mst, x, 6, mask=MASK, seed=1000, t_chunk=4, checkpoints=[2], counter=c_ms,
                  attention=attention, burst=3)
    ref = simulate_reference(mst, x, 6, mask=MASK, seed=1000, checkpoints=[2], counter=c_ref,
                             attention=attention, burst=3)
    assert torch.equal(ms.logits, ref.logits) and torch.equal(ms.logits_at[2], ref.logits_at[2])
    assert c_ms.raw(6) == c_ref.raw(6)
    # bursts happen: more spikes than neurons that fired
    assert c_ms.summary(6)["totals"]["burst_synops"] > c_ms.summary(6)["totals"]["burst_event_synops"] > 0


def _ann_levels(model, x):
    """Per site name: the ANN's QCFS levels q = y·L/λ (integers), from forward hooks."""
    levels, hooks = {}, []
    names = {m: n for n, m in model.named_modules()}
    for _, site in iter_sites(model):
        def hook(mod, inp, out):
            levels[names[mod]] = torch.round(out * mod.L / mod.lam.detach())
        hooks.append(site.register_forward_hook(hook))
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in hooks:
            h.remove()
    return y, levels


@pytest.mark.parametrize("attention", ["paper", "compensated"])
def test_one_step_with_burst_L_is_the_ann(x, attention):
    m = spiky_mst(1)
    set_levels(m, 4)
    ann, levels = _ann_levels(m, x)
    c = OpCounter(m)
    res = simulate(m, x, 1, counter=c, attention=attention, burst=4)
    assert torch.allclose(res.logits, ann, rtol=0, atol=1e-9)
    assert torch.equal(res.logits.argmax(-1), ann.argmax(-1))
    # every site fires exactly its ANN level as a burst; the per-site spike counts are the sums of the levels
    s = c.summary(1)
    assert sum(q.sum().item() for q in levels.values()) > 0
    for site in s["sites"]:
        assert site["spikes_emitted"] * x.shape[0] == pytest.approx(levels[site["name"]].sum().item())
    # fc2 reads the MLP1 site: synops = Σ level × non-zero fan-out of its input feature (the per-spike rule)
    from mst_lava.netx_ops import dense_fanout
    name = "stages.0.0.fc2"
    fc2 = dict(m.named_modules())[name]
    q = levels["stages.0.0.mlp1"]
    fan = torch.as_tensor(dense_fanout(fc2.weight.detach().numpy()), dtype=torch.float64)
    expected = (q.reshape(-1, fc2.in_features).sum(0) * fan).sum().item() / x.shape[0]
    assert expected > 0
    layer = next(e for e in s["layers"] if e["name"] == name)
    assert layer["synops"] == pytest.approx(expected)
    assert s["totals"]["burst_event_synops"] < s["totals"]["burst_synops"]


def test_snn_eval_burst_option(tmp_path):
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.cli import main
    torch.manual_seed(0)
    ck = tmp_path / "m.pt"
    save_checkpoint(ck, build_model("digits", embed_dim=8, heads=(2, 2), mlp_ratio=1.0), dataset="digits")
    rep = tmp_path / "rep"
    assert main(["snn-eval", str(ck), "--T", "1,2", "--n", "8", "--burst", "3", "--no-plots", "--report", str(rep),
                 "--threads", "1"]) == 0
    text = (rep / "summary.md").read_text()
    assert "up to 3 spikes per step" in text
    assert json.loads((rep / "report.json").read_text())["burst"] == 3


def test_energy_prices_graded_events_as_macs_on_the_graded_merge():
    from mst_lava.energy import theoretical_energy
    tot = {"synops": 100.0, "analog_macs": 50.0, "burst_synops": 60.0, "burst_event_synops": 20.0,
           "merge_graded_macs": 30.0, "merge_event_synops": 70.0, "residual_accumulations": 5.0}
    for mode in ("graded", "events"):
        th = theoretical_energy({"T": 1, "totals": tot, "merge_input": mode})
        ac, mac = th["E_AC_pJ"], th["E_MAC_pJ"]
        graded_full = th["total_with_residual_and_dynamic_pJ"] if mode == "graded" else \
            th["merge_alternative"]["total_with_residual_and_dynamic_pJ"]
        assert th["graded_event_as_mac_pJ"] == pytest.approx(graded_full - 60 * ac + 20 * mac)
    assert theoretical_energy({"T": 1, "totals": {"synops": 3.0}})["graded_event_as_mac_pJ"] is None
