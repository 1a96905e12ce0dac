"""QCFS activation (quantization-clip-floor-shift, Bu et al. ICLR 2022).

    y = λ/L · clip(floor(x·L/λ + 1/2), 0, L)

λ is a trainable scalar per site (initial value 3), L = 16 by default. The floor
passes gradients straight through, so both x and λ receive gradients.

Every QCFS module is a *site*: it has a site name (SC1, Q, K, ...), a block index
and an optional Random Spike Masking ratio. The spiking simulator replaces the
activation by an integrate-and-fire neuron through the ``neuron`` attribute, so any
model built from these modules converts.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


def qcfs_reference(x: torch.Tensor, lam: torch.Tensor, L: int) -> torch.Tensor:
    """The definition, written with autograd primitives (the fused :func:`qcfs` is tested against it)."""
    # clamp to [0, 1] first: floor(L·1 + 1/2) = L, so the upper clip comes for free
    z = torch.clamp(x / lam, 0.0, 1.0) * L + 0.5
    return _floor_ste(z) * (lam / L)


class _QCFSFunction(torch.autograd.Function):
    """QCFS with a hand-written backward: ~10 elementwise passes forward, 2 (+1 sum) backward.

    The autograd graph of :func:`qcfs_reference` runs ~20 elementwise kernels per site and
    dominated CPU training time. Gradients are the same: with u = x/λ, c = clip(u, 0, 1) and
    q = floor(c·L + ½), ∂y/∂x = m = 1[0 < u < 1] (straight-through floor; zero on the clip
    bounds, as torch's clamp) and ∂y/∂λ = q/L − u·m. Both factors are formed in the forward
    pass with arithmetic only (comparisons and dot products are slow on CPU, above all in bf16),
    so the backward is a multiply and a sum.
    """

    @staticmethod
    def forward(ctx, x, lam, L):
        lam_x = lam.to(x.dtype)
        c = (x / lam_x).clamp_(0.0, 1.0)
        m = torch.sign(c - c * c)                        # 1 inside (0, 1), 0 on and beyond the bounds
        q = (c * L).add_(0.5).floor_()
        ctx.save_for_backward(m, q * (1.0 / L) - c * m)   # ∂y/∂x and ∂y/∂λ per element
        ctx.lam_dtype = lam.dtype
        return q.mul_(lam_x / L)

    @staticmethod
    def backward(ctx, g):
        m, k = ctx.saved_tensors
        return g * m, (g * k).sum(dtype=torch.promote_types(g.dtype, torch.float32)).to(ctx.lam_dtype), None


def qcfs(x: torch.Tensor, lam: torch.Tensor, L: int) -> torch.Tensor:
    """λ/L · clip(floor(x·L/λ + 1/2), 0, L) with a straight-through floor (fused forward/backward)."""
    return _QCFSFunction.apply(x, lam, int(L))


class QCFS(nn.Module):
    """A QCFS activation site. ``site``/``block`` address it (e.g. site "Q" of block 3)."""

    def __init__(self, site: str, block: int, L: int = 16, lam_init: float = 3.0):
        super().__init__()
        self.site = site
        self.block = int(block)
        self.L = int(L)
        self.lam = nn.Parameter(torch.tensor(float(lam_init)))
        self.mask_ratio = 0.0           # RSM ratio r: each output zeroed with probability r
        self.mask_generator: torch.Generator | None = None
        self.mask_seed = 0
        self.neuron = None              # set by mst_lava.snn: replaces the activation by IF dynamics

    def extra_repr(self) -> str:
        return f"site={self.site}, block={self.block}, L={self.L}, mask_ratio={self.mask_ratio}"

    def _ann_mask(self, y: torch.Tensor) -> torch.Tensor:
        g = self.mask_generator
        if g is None or g.device != y.device:
            g = torch.Generator(device=y.device)
            g.manual_seed(self.mask_seed)
            self.mask_generator = g
        keep = torch.rand(y.shape, generator=g, device=y.device, dtype=torch.float32) >= self.mask_ratio
        return y * keep.to(y.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.neuron is not None:
            return self.neuron(self, x)
        y = qcfs(x, self.lam, self.L)
        if self.mask_ratio > 0:
            y = self._ann_mask(y)
        return y


def iter_sites(model: nn.Module) -> Iterator[tuple[str, QCFS]]:
    """All QCFS sites of a model with their module names, in forward order."""
    for name, m in model.named_modules():
        if isinstance(m, QCFS):
            yield name, m


def set_levels(model: nn.Module, L: int) -> None:
    """Re-quantize a model to ``L`` QCFS levels (every site and the saved config); λ is kept."""
    import dataclasses
    model.cfg = dataclasses.replace(model.cfg, L=int(L))    # the config validates the range
    for _, site in iter_sites(model):
        site.L = int(L)
