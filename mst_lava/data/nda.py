"""Neuromorphic data augmentation (NDA, Li et al. 2022, arXiv:2203.06145) on event frames.

NDA applies geometric augmentations to the integrated event frames of a sample — the same
transform to every frame and channel of that sample so the event stream stays consistent:
horizontal flip, rolling (translation with wrap-around), rotation, shear and cutout.
Following the paper's policy, each call flips with probability 0.5 and then applies
``n_ops`` operations drawn uniformly from {roll, rotate, shear, cutout}.

Magnitudes (our choices, relative to the image size so they scale from 48 px to 224 px):
roll up to ±10 % of the side in x and y, rotation up to ±15°, horizontal shear up to ±20°,
cutout of one square of side 1/4 of the image at a random centre (clipped at the borders).
Input values are activities in [0, 1] before normalization, so cutout and the area
uncovered by rotation/shear are filled with 0 (no events).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(lo: float, hi: float, g) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def roll(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def affine(x: torch.Tensor, angle_deg: float = 0.0, shear_deg: float = 0.0) -> torch.Tensor:
    """Rotate by ``angle_deg`` and shear x by ``shear_deg`` about the centre; zero fill."""
    shape = x.shape
    H, W = shape[-2:]
    flat = x.reshape(-1, 1, H, W)
    a = math.radians(angle_deg)
    sh = math.tan(math.radians(shear_deg))
    # output→input map in normalized coordinates: inverse rotation composed with inverse shear
    cos, sin = math.cos(a), math.sin(a)
    rot = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float32)
    shear = torch.tensor([[1.0, -sh], [0.0, 1.0]], dtype=torch.float32)
    m = rot @ shear
    theta = torch.zeros(1, 2, 3)
    theta[0, :, :2] = m
    grid = F.affine_grid(theta.expand(flat.shape[0], 2, 3), list(flat.shape), align_corners=False)
    out = F.grid_sample(flat.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(shape).to(x.dtype)


def cutout(x: torch.Tensor, cy: int, cx: int, size: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    y0, y1 = max(0, cy - size // 2), min(H, cy - size // 2 + size)
    x0, x1 = max(0, cx - size // 2), min(W, cx - size // 2 + size)
    out = x.clone()
    out[..., y0:y1, x0:x1] = 0
    return out


class NDA:
    """Callable NDA policy for ``(C, H, W)`` or ``(T, C, H, W)`` tensors in [0, 1]."""

    OPS = ("roll", "rotate", "shear", "cutout")

    def __init__(self, flip_p: float = 0.5, n_ops: int = 1, roll_frac: float = 0.1,
                 rotate_deg: float = 15.0, shear_deg: float = 20.0, cutout_frac: float = 0.25):
        self.flip_p, self.n_ops = flip_p, n_ops
        self.roll_frac, self.rotate_deg = roll_frac, rotate_deg
        self.shear_deg, self.cutout_frac = shear_deg, cutout_frac

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = generator
        H, W = x.shape[-2:]
        if float(torch.rand((), generator=g)) < self.flip_p:
            x = x.flip(-1)
        for _ in range(self.n_ops):
            op = self.OPS[int(torch.randint(len(self.OPS), (), generator=g))]
            if op == "roll":
                my, mx = max(1, int(self.roll_frac * H)), max(1, int(self.roll_frac * W))
                dy = int(torch.randint(-my, my + 1, (), generator=g))
                dx = int(torch.randint(-mx, mx + 1, (), generator=g))
                x = roll(x, dy, dx)
            elif op == "rotate":
                x = affine(x, angle_deg=_uniform(-self.rotate_deg, self.rotate_deg, g))
            elif op == "shear":
                x = affine(x, shear_deg=_uniform(-self.shear_deg, self.shear_deg, g))
            else:
                size = max(1, int(round(self.cutout_frac * min(H, W))))
                cy = int(torch.randint(H, (), generator=g))
                cx = int(torch.randint(W, (), generator=g))
                x = cutout(x, cy, cx, size)
        return x
