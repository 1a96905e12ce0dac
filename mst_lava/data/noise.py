"""Pepper (salt) noise for the robustness evaluation (``mst snn-eval --pepper 0.01,0.05,0.1``).

The paper (supplementary §7) adds "pepper noise" of a given density to the input images.
Here that is salt noise: a random fraction ``density`` of the *pixels* (spatial positions)
of each image is set to the image's maximum, all channels of a chosen pixel together.
"""
from __future__ import annotations

import torch

from mst_lava.errors import MSTError


def parse_densities(text: str) -> list[float]:
    """``"0.01,0.05,0.1"`` → ``[0.01, 0.05, 0.1]``, each checked to lie in [0, 1]."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            d = float(part)
        except ValueError:
            raise MSTError(f"--pepper: {part!r} is not a number (expected densities like 0.01,0.05)") from None
        out.append(check_density(d))
    if not out:
        raise MSTError("--pepper needs at least one density, e.g. --pepper 0.01,0.05,0.1")
    return out


def check_density(density: float) -> float:
    d = float(density)
    if not 0.0 <= d <= 1.0:           # also rejects NaN
        raise MSTError(f"pepper noise density must be in [0, 1], got {density}")
    return d


def pepper_noise(x: torch.Tensor, density: float, generator: torch.Generator | None = None,
                 value: float | torch.Tensor | None = None) -> torch.Tensor:
    """Salt noise: set ``round(density·H·W)`` random pixels of each image to the max value.

    ``x`` is ``(H, W)``, ``(C, H, W)`` or any ``(..., C, H, W)`` (a batch, or frames):
    every leading index is one image with its own random pixels, shared by its channels.
    The value written is ``value`` when given (e.g. the normalized white level), otherwise
    each image's per-channel maximum, so on a normalized input the pixel saturates at the
    brightest level that image already has. Returns a new tensor; ``x`` is not modified.
    ``generator`` (a CPU ``torch.Generator``) makes the noise reproducible.
    """
    d = check_density(density)
    if x.dim() < 2:
        raise MSTError(f"pepper noise needs an image tensor (..., H, W), got shape {tuple(x.shape)}")
    out = x.clone()
    if d == 0.0 or x.numel() == 0:
        return out
    squeeze = x.dim() == 2
    if squeeze:
        out = out.unsqueeze(0)
    C, H, W = out.shape[-3:]
    imgs = out.reshape(-1, C, H * W)                          # (N, C, HW), a view of out
    n_img = imgs.shape[0]
    k = int(round(d * H * W))
    if k == 0:
        return out.squeeze(0) if squeeze else out
    scores = torch.rand(n_img, H * W, generator=generator)    # CPU, reproducible
    idx = scores.argsort(dim=1)[:, :k].to(out.device)         # k distinct pixels per image
    if value is None:
        fill = imgs.amax(dim=2, keepdim=True).expand(n_img, C, k)
    else:
        fill = torch.as_tensor(value, dtype=out.dtype, device=out.device).expand(n_img, C, k)
    imgs.scatter_(2, idx.unsqueeze(1).expand(n_img, C, k), fill.contiguous())
    out = imgs.reshape(out.shape)
    return out.squeeze(0) if squeeze else out


class PepperNoise:
    """A picklable transform wrapper: ``dataset.transform = PepperNoise(0.05, seed=0)``."""

    def __init__(self, density: float, seed: int | None = None, value=None):
        self.density = check_density(density)
        self.value = value
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return pepper_noise(x, self.density, self.generator, self.value)
