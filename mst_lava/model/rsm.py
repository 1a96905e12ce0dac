"""Random Spike Masking (RSM): site names, mask maps, and the counter-based mask generator.

The SNN masks come from a counter-based generator: a pure function of
(seed, site, block, step, element index) built from 32-bit integer mixing with
operators that behave identically on numpy arrays and torch tensors (CPU or GPU).
The Lava runtime calls the very same function, which is what makes spike-exact
parity between torch and Lava possible with masking on.

numpy only: torch is imported by the functions that take or make tensors (``keep_mask_torch``;
``set_ann_masks`` and ``check_mask_sites`` receive a model), so the format core and the Lava
runtime use this module without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from mst_lava.errors import MSTError

if TYPE_CHECKING:
    import torch

# The ten sites of a transformer block, named as in the paper (Table 2), then the
# sites outside blocks. Their position in this tuple is the site id in mask keys.
SITES = ("SC1", "Q", "K", "A", "V", "AV", "Proj", "SC2", "MLP1", "MLP2", "embed", "merge", "act")
BLOCK_SITES = SITES[:10]
DISPLAY = {"AV": "soft(A)·V"}
_ALIASES = {s.lower(): s for s in SITES}
_ALIASES.update({"soft(a)·v": "AV", "soft(a)*v": "AV", "softav": "AV", "soft(a)v": "AV"})

_M32 = 0xFFFFFFFF


def canonical_site(name: str) -> str:
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise MSTError(f"unknown RSM site {name!r}; choose from {', '.join(SITES)} "
                       "(soft(A)·V may be written AV)") from None


def check_ratio(r: float, what: str = "mask ratio") -> float:
    try:
        r = float(r)
    except (TypeError, ValueError):
        raise MSTError(f"{what} {r!r} is not a number: a ratio is the probability of dropping a spike, "
                       "e.g. --mask Q=0.75") from None
    if not (0.0 <= r < 1.0) or r != r:
        raise MSTError(f"{what} {r} is outside [0, 1): a ratio is the probability of dropping a spike, "
                       "e.g. --mask Q=0.75")
    return r


def parse_mask_spec(spec: Iterable[str] | Mapping[str, float] | None) -> dict[str, float]:
    """``["Q=0.75", "K=0.75"]`` or ``{"Q": 0.75}`` → ``{"Q": 0.75, "K": 0.75}`` (validated).

    A site may be given as ``SITE@BLOCK=R`` to mask one block only (key ``"SITE@BLOCK"``).
    """
    if spec is None:
        return {}
    items = spec.items() if isinstance(spec, Mapping) else []
    if not isinstance(spec, Mapping):
        parsed = []
        for tok in spec:
            for part in str(tok).split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise MSTError(f"bad mask {part!r}: write SITE=RATIO, e.g. Q=0.75")
                k, v = part.split("=", 1)
                try:
                    parsed.append((k, float(v)))
                except ValueError:
                    raise MSTError(f"bad mask ratio in {part!r}: {v!r} is not a number") from None
        items = parsed
    out: dict[str, float] = {}
    for k, v in items:
        site, at, block = str(k).partition("@")
        name = canonical_site(site)
        if at:
            if not block.strip().isdigit():
                raise MSTError(f"bad mask block in {k!r}: write SITE@BLOCK=R with BLOCK a block index 0, 1, 2, ... "
                               f"(e.g. Q@0=0.5), not {block!r}")
            name += f"@{int(block)}"
        out[name] = check_ratio(v, f"mask ratio for {name}:")
    return out


def format_mask(mask: Mapping[str, float] | None) -> str:
    """``{"Q": 0.75, "K@1": 0.5}`` → ``"Q=0.75 K@1=0.5"`` (the ``--mask`` syntax); ``"none"`` for no mask."""
    return " ".join(f"{k}={float(v):g}" for k, v in (mask or {}).items()) or "none"


def _spans(values) -> str:
    """[0, 1, 2, 5] → '0-2, 5'."""
    vals, out = sorted(set(values)), []
    for v in vals:
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def check_mask_sites(mask: Mapping[str, float], model: torch.nn.Module, what: str = "mask") -> None:
    """Refuse a mask entry that names a site or SITE@BLOCK the model does not have (it would mask nothing)."""
    from mst_lava.model.qcfs import iter_sites
    have: dict[str, list[int]] = {}
    for _, m in iter_sites(model):
        have.setdefault(m.site, []).append(int(m.block))
    for key in mask:
        site, _, block = key.partition("@")
        if site not in have:
            raise MSTError(f"{what} {key}: this model has no {site} site; its sites are {', '.join(have) or 'none'}")
        if block and int(block) not in have[site]:
            raise MSTError(f"{what} {key}: this model has no {site} site in block {int(block)}; {site} is in blocks "
                           f"{_spans(have[site])}")


def ratio_for(mask: Mapping[str, float], site: str, block: int) -> float:
    """The ratio a mask map gives to (site, block): a block-specific entry wins."""
    return float(mask.get(f"{site}@{block}", mask.get(site, 0.0)))


def set_ann_masks(model: torch.nn.Module, mask: Mapping[str, float] | None, seed: int = 0) -> None:
    """Give every QCFS site of ``model`` its ratio (0 where the map is silent) and a seeded generator."""
    from mst_lava.model.qcfs import iter_sites
    mask = parse_mask_spec(mask) if mask else {}
    if mask:
        check_mask_sites(mask, model)
    for i, (_, m) in enumerate(iter_sites(model)):
        m.mask_ratio = ratio_for(mask, m.site, m.block)
        m.mask_seed = int(seed) * 1000003 + i
        m.mask_generator = None


# ----------------------------------------------------------------------------------------
# Counter-based generator. Only +, *, ^, &, >> on int64 values below 2**49: no overflow,
# no dtype surprises, the same bits in numpy, torch CPU and torch CUDA.

def _mul32(x, c: int):
    """(x * c) mod 2**32 for 0 <= x < 2**32, split in 16-bit halves so int64 never overflows."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _mix32(x):
    """A 32-bit integer finalizer (xorshift-multiply, constants of the 'lowbias32' family)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    x = x ^ (x >> 16)
    return x


def mask_key(seed: int, site: str | int, block: int, step: int) -> int:
    """The 32-bit stream key of one (seed, site, block, step)."""
    site_id = SITES.index(site) if isinstance(site, str) else int(site)
    h = _mix32(int(seed) & _M32) ^ _mix32((int(seed) >> 32) & _M32 ^ 0x9E3779B9)
    for v in (site_id, int(block) & _M32, int(step) & _M32):
        h = _mix32((h ^ _mix32(v + 0x632BE5AB & _M32)) & _M32)
    return int(h)


def mask_bits(key: int, index):
    """Uniform 32-bit values for element indices ``index`` (int64 numpy array or torch tensor)."""
    lo = index & _M32
    hi = (index >> 32) & _M32
    return _mix32(_mix32(lo ^ key) ^ _mix32(hi ^ 0x85EBCA6B))


def drop_threshold(ratio: float) -> int:
    """An element is dropped when its bits are below this: P(drop) = threshold / 2**32."""
    return int(round(check_ratio(ratio) * 2.0 ** 32))


def keep(key, index, threshold: int):
    """The keep test, the one place it is written: element ``index`` (int64 numpy array or torch tensor) of the
    stream ``key`` (an int, or keys broadcast against ``index``) survives when its bits are not below
    ``threshold`` (:func:`drop_threshold`). A dropped spike, or graded message, is dropped whole."""
    return mask_bits(key, index) >= threshold


def keep_mask_numpy(seed: int, site: str | int, block: int, step: int, n: int, ratio: float) -> np.ndarray:
    """Boolean keep-mask for elements 0..n-1 of one sample at one step (numpy)."""
    return keep(mask_key(seed, site, block, step), np.arange(n, dtype=np.int64), drop_threshold(ratio))


def keep_mask_torch(seed: int, site: str | int, block: int, step: int, n: int, ratio: float,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean keep-mask for elements 0..n-1 of one sample at one step (torch, any device)."""
    import torch
    return keep(mask_key(seed, site, block, step), torch.arange(n, dtype=torch.int64, device=device),
                drop_threshold(ratio))
