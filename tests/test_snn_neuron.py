"""IF neuron against hand-computed spike trains; RSM mask bits: torch CPU (and CUDA) == numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mst_lava.model import rsm
from mst_lava.model.qcfs import QCFS
from mst_lava.snn import Clock, IFNeuron, StepIFNeuron, if_spike_train, keep_block, simulate, simulate_reference


def _site(lam: float) -> QCFS:
    s = QCFS("act", 0, lam_init=lam)
    return s


def _run_multi(lam, xs, ratio=0.0, seed=0, chunks=None):
    """Drive an IFNeuron with inputs xs (T, B, n) in time chunks; returns (T, B, n) outputs."""
    T, B, n = xs.shape
    site = _site(lam)
    clock = Clock(batch=B)
    nrn = IFNeuron(site, clock, ratio, seed)
    outs, t = [], 0
    for c in chunks or [T]:
        clock.t0, clock.steps = t, c
        outs.append(nrn(site, xs[t:t + c].reshape(c * B, n)).view(c, B, n))
        t += c
    return torch.cat(outs)


def _run_step(lam, xs, ratio=0.0, seed=0):
    T, B, n = xs.shape
    site = _site(lam)
    clock = Clock(batch=B)
    nrn = StepIFNeuron(site, clock, ratio, seed)
    outs = []
    for t in range(T):
        clock.t0 = t
        outs.append(nrn(site, xs[t]))
    return torch.stack(outs)


HAND = [
    # (λ, input per step, expected spikes) — dyadic numbers, so every sum is exact
    (1.0, [0.25] * 10, [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]),           # v: .75 1→0 .25 .5 .75 1→0 ...
    (1.0, [0.5] * 4, [1, 0, 1, 0]),                               # pre-charge λ/2: first step reaches λ exactly
    (2.0, [2.5, 2.5, 2.5, 2.5], [1, 1, 1, 1]),                    # at most one spike per step, surplus carried
    (1.0, [3.0, 0, 0, 0, 0], [1, 1, 1, 0, 0]),                    # v: 3.5→2.5→1.5→.5: reset by subtraction
    (1.0, [-1.0, 0.5, 0.5, 0.5, 0.5, 0.5], [0, 0, 0, 1, 0, 1]),   # v: -.5 0 .5 1→0 .5 1→0
    (0.5, [0.0] * 3 + [0.25] * 3, [0, 0, 0, 1, 0, 1]),            # v: .25 .25 .25 .5→0 .25 .5→0
]


@pytest.mark.parametrize("lam,inp,expected", HAND)
def test_if_neuron_hand_spike_trains(lam, inp, expected):
    xs = torch.tensor(inp, dtype=torch.float64).view(-1, 1, 1)
    exp = torch.tensor(expected, dtype=torch.float64).view(-1, 1, 1) * lam
    assert torch.equal(if_spike_train(xs, lam).to(torch.float64) * lam, exp)
    assert torch.equal(_run_multi(lam, xs), exp)
    assert torch.equal(_run_multi(lam, xs, chunks=[1] * len(inp)), exp)
    assert torch.equal(_run_step(lam, xs), exp)


def test_if_neuron_through_site_and_simulators():
    """Direct (constant) input through a model that is one QCFS site: the output is spike·λ per step."""
    model = nn.Sequential(QCFS("act", 0, lam_init=1.0)).double()
    x = torch.tensor([[0.25, 0.5, 1.0, 0.0, -0.25]], dtype=torch.float64)
    r = simulate(model, x, 8, return_steps=True)
    spikes = r.steps[:, 0, :]
    assert spikes[:, 0].tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
    assert spikes[:, 1].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert spikes[:, 2].tolist() == [1] * 8
    assert spikes[:, 3].tolist() == [0] * 8 and spikes[:, 4].tolist() == [0] * 8
    assert torch.equal(r.logits, spikes.mean(0, keepdim=True))
    ref = simulate_reference(model, x, 8, return_steps=True)
    assert torch.equal(ref.steps, r.steps)
    assert model[0].neuron is None, "the simulator restores the ANN afterwards"


def test_membrane_unaffected_by_masking():
    """RSM drops spikes on delivery only: emitted spikes equal the unmasked train, delivered = emitted·keep."""
    g = torch.Generator().manual_seed(1)
    T, B, n = 16, 3, 50
    xs = torch.rand(T, B, n, generator=g, dtype=torch.float64)
    free = _run_multi(0.7, xs)
    masked = _run_multi(0.7, xs, ratio=0.5, seed=1000, chunks=[5, 5, 6])
    keep = torch.stack([torch.from_numpy(rsm.keep_mask_numpy(1000, "act", 0, t, n, 0.5)) for t in range(T)])
    assert torch.equal(masked, free * keep[:, None, :])      # same mask for every sample of the batch
    assert torch.equal(_run_step(0.7, xs, 0.5, 1000), masked)
    assert 0.35 < keep.double().mean() < 0.65


def test_mask_generator_torch_cpu_equals_numpy():
    idx = np.concatenate([np.arange(5000), np.array([2**32 - 1, 2**32, 2**40 + 7, 2**48 - 1])]).astype(np.int64)
    for seed, site, block, step in [(0, "Q", 0, 0), (9000, "AV", 11, 127), (2**33 + 5, "act", 3, 1000)]:
        key = rsm.mask_key(seed, site, block, step)
        b_np = rsm.mask_bits(key, idx)
        b_t = rsm.mask_bits(key, torch.from_numpy(idx))
        assert np.array_equal(b_np, b_t.numpy())
        assert b_np.min() >= 0 and b_np.max() < 2**32
    kb = keep_block(3000, "K", 2, 5, 7, 999, 0.75, "cpu")
    for i in range(7):
        assert np.array_equal(kb[i].numpy(), rsm.keep_mask_numpy(3000, "K", 2, 5 + i, 999, 0.75))
        assert torch.equal(kb[i], rsm.keep_mask_torch(3000, "K", 2, 5 + i, 999, 0.75))
    assert abs(kb.double().mean().item() - 0.25) < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_mask_generator_cuda_equals_numpy():
    idx = np.arange(100_000, dtype=np.int64)
    key = rsm.mask_key(7000, "A", 4, 33)
    assert np.array_equal(rsm.mask_bits(key, idx), rsm.mask_bits(key, torch.from_numpy(idx).cuda()).cpu().numpy())
    kb = keep_block(7000, "A", 4, 30, 8, 4096, 0.5, "cuda").cpu()
    for i in range(8):
        assert np.array_equal(kb[i].numpy(), rsm.keep_mask_numpy(7000, "A", 4, 30 + i, 4096, 0.5))
