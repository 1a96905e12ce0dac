"""Multi-step simulator == per-step reference, exactly in float64, RSM included; T→∞ convergence.

Batches have B ≥ 4 samples: MKL's float64 GEMM rounds differently for 1-3 rows (gemv /
small-matrix kernels), which changes the head's output of the per-step reference in the
last bit (spikes stay identical); with ≥ 4 rows every row is computed the same way whatever
the batch, so the two simulators agree bit for bit.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mst_lava.errors import MSTError
from mst_lava.model import build_model
from mst_lava.model.qcfs import QCFS, iter_sites
from mst_lava.snn import OpCounter, simulate, simulate_reference, spiking
from mst_lava.snn.testing import make_spiky

MASK = {"Q": 0.5, "K": 0.75, "A": 0.5, "AV": 0.25, "MLP1@2": 0.3, "SC1@1": 0.2, "embed": 0.1, "merge": 0.5}


@pytest.mark.parametrize("attention", ["paper", "compensated"])
def test_multistep_equals_per_step_reference_float64_with_rsm(mst, x, attention):
    T = 10
    c_ms, c_ref = OpCounter(mst), OpCounter(mst)
    ms = simulate(mst, x, T, mask=MASK, seed=7000, t_chunk=4, checkpoints=[3, 8], counter=c_ms, return_steps=True,
                  attention=attention)
    ref = simulate_reference(mst, x, T, mask=MASK, seed=7000, checkpoints=[3, 8], counter=c_ref,
                             return_steps=True, attention=attention)
    assert torch.equal(ms.steps, ref.steps)
    assert torch.equal(ms.logits, ref.logits)
    for t in (3, 8, 10):
        assert torch.equal(ms.logits_at[t], ref.logits_at[t])
        assert c_ms.raw(t) == c_ref.raw(t)          # every counter too
    s = c_ms.summary()
    by = {(d["site"], d["block"]): d for d in s["sites"]}
    # the test is meaningful: attention sites fire and masks drop spikes where (and only where) asked
    for site in ("Q", "K", "V", "A", "AV", "SC1", "MLP1"):
        assert sum(d["spikes_emitted"] for k, d in by.items() if k[0] == site) > 0, site
    assert by[("Q", 0)]["spikes_delivered"] < by[("Q", 0)]["spikes_emitted"]
    assert by[("MLP1", 2)]["spikes_delivered"] < by[("MLP1", 2)]["spikes_emitted"]
    assert by[("MLP1", 1)]["spikes_delivered"] == by[("MLP1", 1)]["spikes_emitted"]
    assert by[("SC1", 1)]["spikes_delivered"] < by[("SC1", 1)]["spikes_emitted"]
    assert by[("SC1", 0)]["spikes_delivered"] == by[("SC1", 0)]["spikes_emitted"]


def test_seeds_change_masks_not_unmasked_runs(mst, x):
    a = simulate(mst, x, 6, mask=MASK, seed=0, return_steps=True).steps
    b = simulate(mst, x, 6, mask=MASK, seed=1000, return_steps=True).steps
    assert not torch.equal(a, b)
    u0 = simulate(mst, x, 6, seed=0, return_steps=True).steps
    u1 = simulate(mst, x, 6, seed=1000, return_steps=True).steps
    assert torch.equal(u0, u1)


@pytest.mark.parametrize("attention", ["paper", "compensated"])
def test_chunking_and_batch_splitting_do_not_change_results(mst, x, attention):
    kw = dict(mask=MASK, seed=3000, attention=attention)
    full = simulate(mst, x, 7, t_chunk=7, return_steps=True, **kw)
    for tc in (1, 3, None):                                     # None: automatic (1 step, then sized)
        assert torch.equal(simulate(mst, x, 7, t_chunk=tc, return_steps=True, **kw).steps, full.steps)
    xx = torch.cat([x, x.flip(0)])
    split = simulate(mst, xx, 7, t_chunk=4, batch_chunk=4, **kw)
    assert torch.equal(split.logits[:4], full.logits)
    assert torch.equal(split.logits[4:], full.logits.flip(0))   # same mask for every sample: order-free


@pytest.mark.parametrize("attention", ["paper", "compensated"])
def test_longer_run_extends_shorter_run_exactly(mst, x, attention):
    long = simulate(mst, x, 12, mask=MASK, seed=5000, checkpoints=[4, 7], attention=attention)
    for t in (4, 7):
        assert torch.equal(long.logits_at[t], simulate(mst, x, t, mask=MASK, seed=5000, attention=attention).logits)


def test_float32_multistep_matches_reference_predictions(x):
    torch.manual_seed(1)
    m = make_spiky(build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0), seed=1)
    xf = x.float()
    a = simulate(m, xf, 8, mask={"Q": 0.5}, seed=0)
    b = simulate_reference(m, xf, 8, mask={"Q": 0.5}, seed=0)
    assert torch.allclose(a.logits, b.logits, atol=1e-4)
    assert torch.equal(a.predictions(), b.predictions())


def test_conversion_is_restored_and_errors_are_clear(mst, x):
    with spiking(mst, mask={"Q": 0.5}) as snn:
        assert all(m.neuron is not None for _, m in iter_sites(mst))
        assert snn.ratios()["Q@0"] == 0.5 and snn.ratios()["K@0"] == 0.0
        with pytest.raises(MSTError, match="already converted"):
            spiking(mst).__enter__()
    assert all(m.neuron is None for _, m in iter_sites(mst))
    with pytest.raises(MSTError, match="T must be"):
        simulate(mst, x, 0)
    with pytest.raises(MSTError, match="unknown RSM site"):
        simulate(mst, x, 2, mask={"X": 0.5})
    with pytest.raises(MSTError, match="outside"):
        simulate(mst, x, 2, mask={"Q": 1.5})
    with pytest.raises(MSTError, match="no QCFS sites"):
        simulate(nn.Linear(2, 2), torch.zeros(4, 2), 2)


def _chain(L: int) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    layers = []
    for i, (a, b) in enumerate([(8, 32), (32, 32), (32, 32)]):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g) / a ** 0.5)
            lin.bias.copy_(torch.randn(b, generator=g) * 0.1)
        layers += [lin, QCFS("act", i, L=L)]
    head = nn.Linear(32, 4)
    model = nn.Sequential(*layers, head).double().eval()
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():                       # λ = 99th percentile of each site's input, as after training
        h = x
        for mod in model:
            if isinstance(mod, QCFS):
                mod.lam.fill_(float(h.quantile(0.99)))
            h = mod(h)
    return model, x


def test_chain_snn_error_against_ann_shrinks_with_T():
    """Linear+QCFS chain: |SNN - ANN| falls as T grows (to the QCFS quantization floor, ~ T = L)."""
    for L, Ts in ((16, (2, 4, 8, 16)), (256, (4, 8, 16, 32, 64, 128))):
        model, x = _chain(L)
        with torch.no_grad():
            ann = model(x)
        r = simulate(model, x, 512, checkpoints=Ts, t_chunk=128)
        err = {t: (r.logits_at[t] - ann).abs().mean().item() for t in (*Ts, 512)}
        for a, b in zip(Ts, Ts[1:]):
            assert err[b] < 0.85 * err[a], (L, err)
        assert err[512] <= 1.1 * err[Ts[-1]], (L, err)
        assert err[512] < 0.3 * err[Ts[0]], (L, err)
        acc = (r.logits.argmax(-1) == ann.argmax(-1)).double().mean().item()
        assert acc >= 0.95
