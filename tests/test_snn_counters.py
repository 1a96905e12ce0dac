"""Counters checked by hand on a tiny network; exact convolution fan-out; MST attribution."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mst_lava.model import build_model, rsm
from mst_lava.model.qcfs import QCFS
from mst_lava.snn import OpCounter, ann_counts, conv_fanout, conv_synops_direct, simulate, simulate_reference
from mst_lava.snn.counters import _nz_pairs
from mst_lava.snn.testing import make_spiky


def _hand_net() -> nn.Module:
    l1, l2, l3 = nn.Linear(2, 3, bias=False), nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        l2.weight.copy_(torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]))   # fan-out of inputs: 1, 2, 1
        l3.weight.copy_(torch.tensor([[1.0, 0.0]]))                         # fan-out: 1, 0
    return nn.Sequential(l1, QCFS("act", 0, lam_init=1.0), l2, QCFS("act", 1, lam_init=1.0), l3).double().eval()


def test_counters_tiny_network_by_hand():
    """x = (1, 1/4), λ = 1, T = 4. Worked out on paper:

    site 0 inputs (1, 1/4, 0): trains 1111, 0100, 0000 → 5 spikes, 12 updates
    layer 2 synops: 4 spikes × fan-out 1 + 1 spike × fan-out 2 = 6
    site 1 inputs per step: (1, 0), (1.5, .5), (1, 0), (1, 0) → trains 1111, 0100 → 5 spikes, 8 updates
    layer 3 synops: 4 × 1 + 1 × 0 = 4; layer 1 (analog input): 3·2 MACs × 4 steps = 24
    at T = 2: site 0 → 3 spikes, site 1 → 3 spikes, synops 2·1+1·2 + 2·1 = 6, MACs 12.
    """
    model = _hand_net()
    x = torch.tensor([[1.0, 0.25], [1.0, 0.25]], dtype=torch.float64)   # two samples: per-sample figures
    for sim in (simulate, simulate_reference):
        c = OpCounter(model)
        sim(model, x, 4, checkpoints=[2], counter=c)
        s = c.summary(4)
        st = {d["block"]: d for d in s["sites"]}
        assert st[0]["spikes_emitted"] == 5 and st[0]["neuron_updates"] == 12 and st[0]["neurons"] == 3
        assert st[1]["spikes_emitted"] == 5 and st[1]["neuron_updates"] == 8
        assert st[0]["firing_rate"] == pytest.approx(5 / 12)
        ly = {d["name"]: d for d in s["layers"]}
        assert ly["0"] == {"name": "0", "type": "Linear", "input": "analog, constant input", "source": None,
                           "synops": 0.0, "macs": 24.0}
        assert ly["2"]["synops"] == 6 and ly["2"]["source"] == "act@0" and ly["2"]["input"] == "spikes"
        assert ly["4"]["synops"] == 4 and ly["4"]["source"] == "act@1"
        assert st[0]["synops_out"] == 6 and st[1]["synops_out"] == 4
        t = s["totals"]
        assert (t["spikes_emitted"], t["synops"], t["neuron_updates"], t["analog_macs"]) == (10, 10, 20, 24)
        assert t["residual_accumulations"] == 0 and t["qk_products"] == 0 and t["softmax_elements"] == 0
        assert t["constant_input_macs"] == 24
        s2 = c.summary(2)
        assert [d["spikes_emitted"] for d in s2["sites"]] == [3, 3]
        assert s2["totals"]["synops"] == 6 and s2["totals"]["analog_macs"] == 12
        assert c.samples[4] == 2
    a = ann_counts(model, x)
    assert a["macs"] == 2 * 3 + 3 * 2 + 2 * 1 and a["samples"] == 2


def test_counters_with_masking_by_hand():
    """RSM at site 0 (r = 0.5, seed 1000): delivered = emitted·keep, synops follow delivered spikes."""
    model = _hand_net()
    x = torch.tensor([[1.0, 0.25]] * 4, dtype=torch.float64)
    c = OpCounter(model)
    simulate(model, x, 4, mask={"act@0": 0.5}, seed=1000, counter=c)
    trains = np.array([[1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]])         # (neuron, step), from above
    keep = np.stack([rsm.keep_mask_numpy(1000, "act", 0, t, 3, 0.5) for t in range(4)], axis=1)
    delivered = trains * keep
    s = c.summary()
    st = {d["block"]: d for d in s["sites"]}
    assert st[0]["spikes_emitted"] == 5 and st[0]["spikes_delivered"] == delivered.sum()
    assert st[0]["mask_ratio"] == 0.5 and st[1]["mask_ratio"] == 0.0
    assert st[0]["synops_out"] == (delivered * np.array([[1], [2], [1]])).sum()
    c_ref = OpCounter(model)
    simulate_reference(model, x, 4, mask={"act@0": 0.5}, seed=1000, counter=c_ref)
    assert c.raw() == c_ref.raw()


def test_conv_fanout_by_hand():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    f = conv_fanout(conv, (4, 4))[0]
    assert f.tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)     # 5×5 → 3×3, outputs centred on 0, 2, 4
    nn.init.ones_(conv.weight)
    r = torch.tensor([1.0, 2, 1, 2, 1])
    assert torch.equal(conv_fanout(conv, (5, 5))[0], torch.outer(r, r))
    conv = nn.Conv2d(1, 1, 3, stride=3, bias=False)                # 8×8 → 2×2: rows/cols 6, 7 reach nothing
    nn.init.ones_(conv.weight)
    f = conv_fanout(conv, (8, 8))[0]
    assert f[:6, :6].eq(1).all() and f[6:].eq(0).all() and f[:, 6:].eq(0).all()


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,hw", [
    (4, 6, 3, 1, 1, 1, 1, (7, 9)),
    (4, 6, 3, 2, 1, 1, 2, (8, 7)),
    (6, 6, 3, 2, 0, 1, 6, (9, 9)),       # depthwise
    (4, 8, (3, 5), (2, 3), (1, 2), 1, 4, (10, 11)),
    (3, 4, 3, 1, 2, 2, 1, (6, 6)),       # dilation
    (4, 4, 1, 2, 0, 1, 1, (5, 5)),       # 1×1 stride-2 shortcut
    (2, 3, 4, 3, 1, 1, 1, (8, 8)),       # even kernel, uncovered border
])
def test_conv_fanout_exact_against_direct_count(cin, cout, k, stride, pad, dil, groups, hw):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups, bias=False)
    with torch.no_grad():
        conv.weight.mul_((torch.rand(conv.weight.shape, generator=g) > 0.3).float())   # some zero synapses
    x = (torch.rand(3, cin, *hw, generator=g) > 0.6).float() * 0.7
    fo = conv_fanout(conv, hw)
    assert int((x != 0).float().mul(fo).sum()) == conv_synops_direct(conv, x)


def test_conv_and_pooled_spikes_through_counter():
    """Synops of convs fed by spikes, by 2×2 average-pooled spikes, and of a linear after global pooling."""
    torch.manual_seed(0)
    conv1 = nn.Conv2d(2, 4, 3, padding=1)
    conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2)
    conv3 = nn.Conv2d(4, 6, 3, padding=1)
    fc = nn.Linear(6, 3)
    with torch.no_grad():
        conv2.weight[:, :, 0, 0] = 0                     # a few zero synapses
        fc.weight[0, :2] = 0
    s = [QCFS("act", i, lam_init=0.5) for i in range(3)]
    model = nn.Sequential(conv1, s[0], conv2, s[1], nn.AvgPool2d(2), conv3, s[2], nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), fc).double().eval()
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    outs = {i: [] for i in range(3)}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: outs[k].append(o.detach().clone()))
             for k, m in enumerate(s)]
    c = OpCounter(model)
    simulate_reference(model, x, 5, mask={"act@1": 0.4}, seed=0, counter=c)
    for h in hooks:
        h.remove()
    exp2 = sum(conv_synops_direct(conv2, o) for o in outs[0])
    pooled = [F.avg_pool2d((o != 0).double(), 2) * 4 for o in outs[1]]      # spike counts per pooled input
    w3 = (conv3.weight != 0).double()
    exp3 = sum(int(F.conv2d(p, w3, None, 1, 1).sum()) for p in pooled)
    fo = (fc.weight != 0).sum(0).double()
    expfc = sum(int(((o != 0).double().sum((2, 3)) * fo).sum()) for o in outs[2])
    ly = {d["name"]: d for d in c.summary()["layers"]}
    assert ly["0"]["input"] == "analog, constant input" and ly["0"]["macs"] == 5 * (4 * 8 * 8) * (2 * 9)
    assert ly["2"]["synops"] * 4 == exp2 and ly["2"]["source"] == "act@0"
    assert ly["5"]["synops"] * 4 == exp3 and ly["5"]["input"] == "pooled spikes" and ly["5"]["source"] == "act@1"
    assert ly["9"]["synops"] * 4 == expfc and ly["9"]["input"] == "pooled spikes"
    c2 = OpCounter(model)
    simulate(model, x, 5, mask={"act@1": 0.4}, seed=0, counter=c2, t_chunk=2)
    assert c2.raw() == c.raw()


def test_dynamic_product_count_formula():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(5, 3, 7, 4, generator=g) > 0.5).double()
    b = torch.rand(5, 3, 4, 6, generator=g) * (torch.rand(5, 3, 4, 6, generator=g) > 0.7)
    brute = ((a != 0).double() @ (b != 0).double()).sum()
    assert _nz_pairs((a != 0).float(), (b != 0).float()) == brute


def test_mst_attribution():
    """qkv/proj/fc1/fc2 synops = delivered spikes of SC1/AV/SC2/MLP1 × dense fan-out; Q·Kᵀ = brute force;
    residual accumulations = delivered spikes of embed, Proj, MLP2 and merge; analog layers as MACs."""
    torch.manual_seed(0)
    cfg = dict(embed_dim=16, heads=(2, 4), mlp_ratio=2.0)
    m = make_spiky(build_model("digits", **cfg), seed=0).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    qk = []
    store = {}
    hooks = []
    for blk in m.blocks():
        hooks.append(blk.attn.q_act.register_forward_hook(lambda mod, i, o: store.__setitem__("q", o)))
        hooks.append(blk.attn.k_act.register_forward_hook(
            lambda mod, i, o: qk.append(((store["q"] != 0).double() @ (o != 0).double().transpose(-2, -1)).sum())))
    c = OpCounter(m)
    T = 4
    simulate_reference(m, x, T, mask={"Q": 0.5, "K": 0.5}, seed=0, counter=c)
    for h in hooks:
        h.remove()
    s = c.summary()
    B = x.shape[0]
    assert sum(d["count"] for d in s["dynamic"] if d["op"] == "Q·Kᵀ") * B == pytest.approx(float(sum(qk)))
    assert s["totals"]["qk_products"] > 0 and s["totals"]["softmax_v_accumulations"] > 0
    assert {d["op"] for d in s["dynamic"]} == {"Q·Kᵀ", "softmax·V"}
    sites = {(d["site"], d["block"]): d for d in s["sites"]}
    ly = {d["name"]: d for d in s["layers"]}
    for b, blk in enumerate(m.blocks()):
        dim = blk.fc1.in_features
        pre = f"stages.{b // 2}.{b % 2}."
        assert ly[pre + "attn.qkv"]["synops"] == sites[("SC1", b)]["spikes_delivered"] * 3 * dim
        assert ly[pre + "attn.proj"]["synops"] == sites[("AV", b)]["spikes_delivered"] * dim
        assert ly[pre + "fc1"]["synops"] == sites[("SC2", b)]["spikes_delivered"] * blk.fc1.out_features
        assert ly[pre + "fc2"]["synops"] == sites[("MLP1", b)]["spikes_delivered"] * dim
        assert ly[pre + "attn.qkv"]["source"] == f"SC1@{b}"
        assert sites[("Q", b)]["spikes_delivered"] <= sites[("Q", b)]["spikes_emitted"]
    for d in s["sites"]:
        if d["site"] in ("embed", "Proj", "MLP2", "merge"):
            assert d["residual_accumulations"] == d["spikes_delivered"], d["name"]
        else:
            assert d["residual_accumulations"] == 0, d["name"]
    for name in ("patch_embed", "merges.0.reduction", "head"):
        assert ly[name]["input"].startswith("analog") and ly[name]["synops"] == 0 and ly[name]["macs"] > 0
    assert ly["patch_embed"]["input"] == "analog, constant input"                # the image, every step
    assert ly["head"]["input"] == ly["merges.0.reduction"]["input"] == "analog"  # BN of the residual stream
    assert s["totals"]["constant_input_macs"] == ly["patch_embed"]["macs"]
    kh, kw = m.patch_embed.kernel_size
    assert ly["patch_embed"]["macs"] == T * 16 * 8 * 8 * 1 * kh * kw
    assert ly["head"]["macs"] == T * 10 * 32
    # softmax: one row per (window, head, query) per step, w² elements each
    sm = {d["block"]: d for d in s["softmax"]}
    assert sm[0]["rows"] == T * 4 * 2 * 16 and sm[0]["elements"] == T * 4 * 2 * 16 * 16
    a = ann_counts(m, x)
    assert a["matmul_macs"] == sum(2 * 16 * 16 * (dim // h) * nw * h
                                   for dim, h, nw in ((16, 2, 4), (16, 2, 4), (32, 4, 1), (32, 4, 1)))
    assert a["macs"] == a["layer_macs"] + a["matmul_macs"]


def test_event_driven_merge_counts_and_re_expression(monkeypatch):
    """Patch merging as an exact re-expression on the stream's spike trains: the stage-0 stream is the
    sum of the embedding's and every block's Proj and MLP2 spike trains; merging each train with the
    composed weights gives the graded merge's current; its synaptic ops are each event × the non-zero
    composed synapses leaving it, recounted here by brute force; both formulations are in every run."""
    from mst_lava.model.mst import Block
    torch.manual_seed(0)
    m = make_spiky(build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0), seed=1).double()
    mg = m.merges[0]
    with torch.no_grad():
        mg.reduction.weight[:, :5] = 0.0          # zero synapses cost nothing
        mg.reduction.weight[3, 7] = 0.0
        mg.norm.weight[9] = 0.0                   # a BN scale of 0 removes a stream channel's synapses
    captured = {"src": [], "merge_in": []}
    for meth in ("attention_branch", "mlp_branch"):
        orig = getattr(Block, meth)

        def wrap(self, *a, _orig=orig, **k):
            out = _orig(self, *a, **k)
            if self.index < 2:                    # stage 0
                captured["src"].append(out.detach().clone())
            return out
        monkeypatch.setattr(Block, meth, wrap)
    hooks = [m.embed_act.register_forward_hook(lambda mod, i, o: captured["src"].append(o.detach().clone())),
             mg.register_forward_pre_hook(lambda mod, i: captured["merge_in"].append(i[0].detach().clone()))]
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    T = 3
    counts = {}
    for mode in ("graded", "events"):
        captured["src"].clear()
        captured["merge_in"].clear()
        c = OpCounter(m, merge_input=mode)
        simulate_reference(m, x, T, mask={"MLP2": 0.3, "Proj": 0.2}, seed=0, counter=c)
        counts[mode] = c.summary()
    for h in hooks:
        h.remove()
    g = mg.norm.weight / torch.sqrt(mg.norm.running_var + mg.norm.eps)
    h_ = mg.norm.bias - g * mg.norm.running_mean
    nz = ((mg.reduction.weight * g) != 0).double()                     # (2C, 4C)
    C = nz.shape[1] // 4
    srcs = captured["src"]                                            # per step: embed, 2 × (attn, mlp)
    assert len(srcs) == 5 * T and len(captured["merge_in"]) == T
    brute = 0.0
    for t in range(T):
        step = srcs[5 * t:5 * t + 5]
        stream = sum(step)
        assert torch.allclose(stream, captured["merge_in"][t], rtol=0, atol=1e-12)   # a sum of spike trains
        graded = mg.reduction(mg.norm(mg.gather(stream)))
        composed = sum(mg.gather(s) @ (mg.reduction.weight * g).T for s in step) + mg.reduction.weight @ h_
        assert torch.allclose(graded, composed, rtol=0, atol=1e-9)          # the same current
        for s in step:
            ind = (s != 0).double()
            for k, (dy, dx) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
                brute += float((ind[:, dy::2, dx::2, :] @ nz[:, k * C:(k + 1) * C].T).sum())
    B = x.shape[0]
    gr, ev = counts["graded"], counts["events"]
    assert ev["totals"]["merge_event_synops"] * B == pytest.approx(brute) and brute > 0
    for s in (gr, ev):   # both formulations counted in every run
        assert s["totals"]["merge_event_synops"] == ev["totals"]["merge_event_synops"]
        assert s["totals"]["merge_graded_macs"] == T * 4 * 4 * 2 * C * 4 * C
    ly_g = {d["name"]: d for d in gr["layers"]}
    ly_e = {d["name"]: d for d in ev["layers"]}
    assert ly_g["merges.0.reduction"]["macs"] == gr["totals"]["merge_graded_macs"]
    assert ly_e["merges.0.reduction"]["macs"] == 0
    assert ly_e["merges.0.reduction"]["synops"] == ev["totals"]["merge_event_synops"]
    assert ly_e["merges.0.reduction"]["input"] == "stream spikes (event-driven)"
    assert ev["totals"]["synops"] == pytest.approx(gr["totals"]["synops"] + ev["totals"]["merge_event_synops"])
    assert ev["totals"]["analog_macs"] == pytest.approx(gr["totals"]["analog_macs"] - gr["totals"]["merge_graded_macs"])
    # the merge's event synops are attributed to the source sites (per-site synops_out)
    site_e = {d["name"]: d["synops_out"] for d in ev["sites"]}
    site_g = {d["name"]: d["synops_out"] for d in gr["sites"]}
    assert sum(site_e.values()) - sum(site_g.values()) == pytest.approx(ev["totals"]["merge_event_synops"])
    assert site_e["embed_act"] > site_g["embed_act"]


def test_event_driven_merge_needs_a_stream_of_spikes():
    """The official topology's BatchNorm on the stream makes it no plain sum of spike trains: the merge
    stays graded (dense MACs) even when events are asked for; an unknown formulation is refused."""
    torch.manual_seed(0)
    m = make_spiky(build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0, mlp_skip_norm=True),
                   seed=1).double()
    c = OpCounter(m, merge_input="events")
    simulate_reference(m, torch.randn(4, 1, 8, 8, dtype=torch.float64), 2, counter=c)
    ly = {d["name"]: d for d in c.summary()["layers"]}
    assert ly["merges.0.reduction"]["macs"] > 0 and ly["merges.0.reduction"]["synops"] == 0
    with pytest.raises(ValueError, match="merge_input"):
        OpCounter(m, merge_input="spikes")


def test_state_saved_before_the_merge_alternative_was_counted():
    """A resumed evaluation whose progress predates the two merge formulations keeps counting the merge as it
    did (graded MACs) and reports no alternative instead of one counted over part of the samples."""
    torch.manual_seed(0)
    m = make_spiky(build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0), seed=1).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    c = OpCounter(m)
    simulate(m, x, 2, counter=c)
    state = c.state()
    assert state["merge_alternative"] is True
    full = c.summary()["totals"]
    old = {k: v for k, v in state.items() if k != "merge_alternative"}
    old["totals"] = [[t, [kv for kv in items if kv[0][0] not in ("merge_graded_macs", "merge_event_synops")]]
                     for t, items in old["totals"]]
    c2 = OpCounter(m)
    c2.load_state(old)
    simulate(m, x, 2, counter=c2)
    t2 = c2.summary()["totals"]
    assert t2["merge_graded_macs"] == 0 and t2["merge_event_synops"] == 0
    assert t2["analog_macs"] == full["analog_macs"] and t2["synops"] == full["synops"]    # per inference, 8 samples
    assert c2.state()["merge_alternative"] is False
