"""attention="compensated": the model simulator runs the exported network's float semantics.

Parity: the converted model (float64) and ``NetSim(graph, precision="float")`` on an export of
the same model give the same predictions and per-site spike counts (within 0.5 %; in practice
identical) at T=32, unmasked and with RSM Q=K=A=0.75 (same seed), on the shipped digits
checkpoint and on a random digits-preset model. Also: the counted dynamic products equal the
executor's, the mode is off by default and restored, and the ANN is untouched.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mst_lava.errors import MSTError
from mst_lava.export import NetSim, export_model, read_network, write_network
from mst_lava.model import build_model
from mst_lava.model.mst import WindowAttention
from mst_lava.snn import OpCounter, simulate, simulate_reference, spiking
from mst_lava.snn.testing import make_spiky, sharpen_attention

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "export" / "digits.pt"
SHIPPED_NET = ROOT / "export" / "digits.net"
RSM = {"Q": 0.75, "K": 0.75, "A": 0.75}
T = 32
SEED = 1000


def _digits_images(n: int = 5) -> torch.Tensor:
    from mst_lava.data import get_dataset
    ds = get_dataset("digits", None, "test", 8, in_chans=1)
    return torch.stack([torch.as_tensor(ds[i][0]) for i in range(n)]).double()


def _model_counts(model, x, mask, attention):
    c = OpCounter(model)
    r = simulate(model, x, T, mask=mask or None, seed=SEED, counter=c, attention=attention)
    s = c.summary(T)
    n = x.shape[0]
    sites = {f"{e['site']}@{e['block']}": int(round(e["spikes_emitted"] * n)) for e in s["sites"]}
    return r.predictions(), sites, s["totals"]


def _netsim(graph, x):
    r = NetSim(graph, precision="float").run(x, T, seed=SEED)
    n = x.shape[0]
    dyn = {typ: sum(c["synops"] for c in r.counts.values() if c["type"] == typ) / n
           for typ in ("mst_qk", "mst_softmax_av")}
    return r.pred, r.site_counts(), dyn


def _check_parity(model, graph, x, mask, paper_differs: bool = False):
    pred_m, sites_m, tot = _model_counts(model, x, mask, "compensated")
    pred_n, sites_n, dyn = _netsim(graph, x)
    assert set(sites_m) == set(sites_n)
    assert torch.equal(pred_m, pred_n)
    rel = {k: abs(sites_m[k] - sites_n[k]) / max(sites_n[k], 1) for k in sites_n}
    assert max(rel.values()) <= 0.005, sorted(rel.items(), key=lambda kv: -kv[1])[:5]
    assert sum(sites_n[k] for k in sites_n if k.startswith("A@")) > 0          # the attention is exercised
    assert tot["qk_products"] == pytest.approx(dyn["mst_qk"], rel=0.005)       # same dynamic-product counts
    assert tot["softmax_v_accumulations"] == pytest.approx(dyn["mst_softmax_av"], rel=0.005)
    if paper_differs:       # the paper's per-step products are another network: the comparison tells them apart
        _, sites_p, _ = _model_counts(model, x, mask, "paper")
        assert max(abs(sites_p[k] - sites_n[k]) / max(sites_n[k], 1) for k in sites_n) > 0.01
    return rel


@pytest.fixture(scope="module")
def trained():
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} is not shipped in this checkout")
    from mst_lava.checkpoint import load_checkpoint
    model, _ = load_checkpoint(CKPT)
    return model.double().eval()


@pytest.mark.parametrize("mask", [{}, RSM], ids=["unmasked", "rsm75"])
def test_compensated_matches_netsim_float_on_shipped_digits(trained, mask, tmp_path):
    x = _digits_images()
    if not mask and SHIPPED_NET.is_file() and read_network(SHIPPED_NET).attrs.get("source") == "export/digits.pt":
        graph = read_network(SHIPPED_NET)                        # the shipped file, run on its float parameters
    else:
        write_network(tmp_path / "d.net", export_model(trained, precision="float", mask=mask, seed=SEED))
        graph = read_network(tmp_path / "d.net")
    _check_parity(trained, graph, x, mask, paper_differs=bool(mask))


@pytest.mark.parametrize("mask", [{}, RSM], ids=["unmasked", "rsm75"])
def test_compensated_matches_netsim_float_on_random_digits_model(mask):
    torch.manual_seed(0)
    m = sharpen_attention(make_spiky(build_model("digits"), seed=2), seed=2).double()
    x = _digits_images()
    graph = export_model(m, precision="float", mask=mask, seed=SEED)
    _check_parity(m, graph, x, mask)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    m = build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0)
    return sharpen_attention(make_spiky(m, seed=0)).double()


def test_dynamic_product_counts_follow_the_export_rule(small):
    """Q·Kᵀ = (Q + K delivered spikes) × N, softmax·V = V spikes × N + A spikes × d; softmax as in paper mode."""
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c, cp = OpCounter(small), OpCounter(small)
    simulate(small, x, 6, mask={"Q": 0.5, "V": 0.25}, seed=0, counter=c, attention="compensated")
    simulate(small, x, 6, mask={"Q": 0.5, "V": 0.25}, seed=0, counter=cp)
    s = c.summary()
    sites = {(e["site"], e["block"]): e for e in s["sites"]}
    dyn = {(d["op"], d["block"]): d for d in s["dynamic"]}
    assert {op for op, _ in dyn} == {"Q·Kᵀ", "softmax·V"}
    for b, blk in enumerate(small.blocks()):
        N = blk.w * blk.w
        d = blk.fc1.in_features // blk.attn.heads
        deliv = {k: sites[(k, b)]["spikes_delivered"] for k in ("Q", "K", "V", "A")}
        assert dyn[("Q·Kᵀ", b)]["count"] == (deliv["Q"] + deliv["K"]) * N
        assert dyn[("Q·Kᵀ", b)]["kind"] == "spike·spike"
        assert dyn[("softmax·V", b)]["count"] == deliv["V"] * N + deliv["A"] * d
        assert dyn[("softmax·V", b)]["kind"] == "analog·spike"
    assert s["softmax"] == cp.summary()["softmax"]             # one softmax row per query per step
    assert s["totals"]["analog_matmul_macs"] == 0              # nothing leaks into the ANN-matmul line


def test_modes_differ_and_restore_leaves_the_ann(small):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        ann = small(x)
    a = simulate(small, x, 8, attention="compensated", return_steps=True)
    p = simulate(small, x, 8, return_steps=True)                # default: paper
    r = simulate_reference(small, x, 8, return_steps=True)
    assert torch.equal(p.steps, r.steps) and not torch.equal(a.steps, p.steps)
    assert all(m.products is None for m in small.modules() if isinstance(m, WindowAttention))
    with spiking(small, attention="compensated") as snn:
        assert len(snn.products) == len(list(small.blocks()))
        assert all(m.products is not None for m in snn.products)
    assert all(m.products is None for m in small.modules() if isinstance(m, WindowAttention))
    with torch.no_grad():
        assert torch.equal(small(x), ann)
    for fn in (simulate, simulate_reference):
        with pytest.raises(MSTError, match="attention must be one of paper, compensated"):
            fn(small, x, 2, attention="exact")


def test_compensated_a_site_rate_converges_to_the_ann():
    """The A neuron integrates t·f(running means): its mean output approaches clip(Q̄·K̄ᵀ·scale, 0, λ) of the
    mean Q, K outputs within ~λ/T; the paper's per-step products do not (correlated spike trains)."""
    torch.manual_seed(0)
    m = sharpen_attention(make_spiky(build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0), seed=0),
                          lam_a=0.008).double()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    attn = next(m.blocks()).attn
    lam = float(attn.a_act.lam.detach())
    Tn = 256
    err = {}
    for mode in ("compensated", "paper"):
        got = {"q": [], "k": [], "a": []}
        hooks = [getattr(attn, f"{n}_act").register_forward_hook(
            lambda mod, inp, out, n=n, got=got: got[n].append(out.detach().clone())) for n in got]
        try:
            simulate(m, x, Tn, t_chunk=Tn, attention=mode)
        finally:
            for h in hooks:
                h.remove()
        q, k, a = (torch.cat(got[n]).unflatten(0, (Tn, -1)).mean(0) for n in ("q", "k", "a"))
        want = attn.scores(q, k).clamp(0, lam)
        assert float(want.max()) > 0.5 * lam                      # the A site is in its working range
        err[mode] = float((a - want).abs().max())
    assert err["compensated"] <= lam / Tn
    assert err["paper"] > 3 * err["compensated"]
