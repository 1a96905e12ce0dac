"""Helpers for tests and benchmarks: make an untrained model spike like a trained one.

An untrained MST barely spikes beyond the first sites (small init weights, λ = 3), which
would leave attention sites silent in equivalence tests and benchmarks. ``make_spiky``
draws BatchNorm statistics, linear weights and thresholds so every kind of site fires.
"""
from __future__ import annotations

import torch
from torch import nn

from mst_lava.model.qcfs import iter_sites


@torch.no_grad()
def make_spiky(model: nn.Module, seed: int = 0, weight_std: float = 0.5,
               lam_range: tuple[float, float] = (0.05, 0.35)) -> nn.Module:
    """Randomize BN running stats, Linear weights and λ (deterministic in ``seed``); returns the model in eval()."""
    g = torch.Generator().manual_seed(int(seed))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        elif isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * weight_std)
    lo, hi = lam_range
    for _, s in iter_sites(model):
        s.lam.fill_(lo + (hi - lo) * float(torch.rand(1, generator=g)))
    return model.eval()


@torch.no_grad()
def sharpen_attention(model: nn.Module, seed: int = 0, bias_std: float = 1.0, lam_a: float = 0.03) -> nn.Module:
    """Make the attention matter: a relative-position bias of std ``bias_std`` and A thresholds ``lam_a``.

    After :func:`make_spiky` the softmax is almost uniform and the A sites barely fire, so the
    two attention modes of the simulator give nearly the same spikes; this makes them differ.
    """
    from mst_lava.model.mst import WindowAttention
    g = torch.Generator().manual_seed(int(seed))
    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.bias_table.copy_(torch.randn(m.bias_table.shape, generator=g) * bias_std)
            m.a_act.lam.fill_(lam_a)
    return model
