"""Integrate-and-fire neurons that replace QCFS activations, with Random Spike Masking.

Dynamics (per element, threshold λ = the site's trained ``lam``):

    v[0]   = λ/2                         membrane pre-charged to half the threshold
    v     += x[t]                        integrate the input of step t
    s[t]   = v >= λ                      spike
    v     -= s[t]·λ                      reset by subtraction
    out[t] = s[t]·λ · keep[t]            the site outputs spike·λ; RSM drops a spike on delivery

Burst (graded-payload) neurons, ``burst = B > 1``: a neuron may fire up to B unit spikes in one
step, each worth u = λ/B (Loihi 2 sends such a burst as one graded event):

    v[0]   = u/2
    v     += x[t]
    s[t]   = clip(floor(v/u), 0, B)      spikes this step (0..B)
    v     -= s[t]·u
    out[t] = s[t]·u · keep[t]

With B = 1 this is the binary neuron above (same code path, bit for bit). With B = L (the QCFS
levels) and T = 1 step, s = clip(floor(x·L/λ + ½), 0, L): the QCFS activation itself, so the
one-step burst network computes the ANN. Every count treats a burst of s spikes as s spikes
(s accumulations per synapse, s residual accumulations, s·s' coincidences in a product of two
bursts, mst_lava.snn.counters). ``mst-export --burst B`` writes the same neuron into the file (the registry's
``IF_BURST``, mst_lava/neurons.py), which NetSim and the Lava processes run.

RSM never touches the membrane: a spike is *emitted* (counted), then dropped on the way
out with probability r. ``keep`` comes from the counter-based generator of
:mod:`mst_lava.model.rsm`, keyed by (seed, site, block, step) and the element index within
one sample's tensor at the site (C-order of the layout the site sees), so every sample of
a batch gets the same mask and a one-sample Lava run sees the bits a batched run does.

Two implementations:

* :class:`IFNeuron` – multi-step: its input holds ``steps`` time steps folded time-major
  into the leading dimension ``(steps·B·…, …)``; it reshapes to ``(steps, B·rest)`` and
  scans over time. State carries across calls (time chunks).
* :class:`StepIFNeuron` – one step per call (the per-step reference / oracle), written
  separately on purpose, mask bits from :func:`mst_lava.model.rsm.keep_mask_torch`.

Both read the shared :class:`Clock` that the simulator advances: first step ``t0``,
``steps`` in this call, ``batch`` = number of samples B.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from mst_lava.errors import MSTError
from mst_lava.model import rsm
from mst_lava.snn.counters import exact_total


@dataclass
class Clock:
    """What the simulator tells every neuron before a forward pass."""
    t0: int = 0          # global index of the first time step in this call
    steps: int = 1       # time steps folded into the leading dimension
    batch: int = 1       # samples B


def if_step(v: torch.Tensor, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One IF step, pure: ``(v_new, spike_bool)``. Reset by subtraction."""
    v = v + x
    s = v >= lam
    return v - s.to(v.dtype) * lam, s


def burst_step(v: torch.Tensor, x: torch.Tensor, unit: float, burst: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One burst-neuron step, pure: ``(v_new, spikes)`` with spikes = clip(floor(v/u), 0, B) in v's dtype."""
    v = v + x
    s = torch.floor(v / unit).clamp_(0, burst)
    return v - s * unit, s


def check_burst(burst) -> int:
    """The largest number of spikes per neuron and step: an integer ≥ 1."""
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise MSTError(f"burst must be an integer ≥ 1 (spikes per neuron and step), not {burst!r}")
    return burst


def if_spike_train(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Spike train (bool, same shape) of one IF neuron per element for inputs ``x`` of shape (T, ...)."""
    v = torch.full_like(x[0], lam / 2)
    out = []
    for t in range(x.shape[0]):
        v, s = if_step(v, x[t], lam)
        out.append(s)
    return torch.stack(out)


def keep_block(seed: int, site: str, block: int, t0: int, steps: int, n: int, ratio: float,
               device) -> torch.Tensor:
    """Boolean keep-mask ``(steps, n)`` for steps t0..t0+steps-1 and element indices 0..n-1."""
    thr = rsm.drop_threshold(ratio)
    keys = torch.tensor([rsm.mask_key(seed, site, block, t0 + i) for i in range(steps)],
                        dtype=torch.int64, device=device).unsqueeze(1)
    out = torch.empty(steps, n, dtype=torch.bool, device=device)
    # bound the int64 temporaries (~8 of them) to about 2**24 elements each
    rows = max(1, (1 << 24) // max(n, 1))
    idx = torch.arange(n, dtype=torch.int64, device=device).unsqueeze(0)
    for i in range(0, steps, rows):
        out[i:i + rows] = rsm.keep(keys[i:i + rows], idx, thr)
    return out


class _Base:
    """State and bookkeeping shared by both neuron kinds."""

    def __init__(self, site_module, clock: Clock, ratio: float = 0.0, seed: int = 0, counter=None,
                 burst: int = 1):
        self.site = site_module.site
        self.block = site_module.block
        self.clock = clock
        self.ratio = rsm.check_ratio(ratio)
        self.seed = int(seed)
        self.counter = counter
        self.v: torch.Tensor | None = None
        self.step_numel = 0          # elements of one step's input (all samples), seen at the last call
        self.burst = check_burst(burst)
        self._read_lam(site_module)

    def _read_lam(self, site_module) -> None:
        self.lam = float(site_module.lam.detach())
        self.unit = self.lam / self.burst        # value of one spike (λ for binary neurons)

    def spike_counts(self, y: torch.Tensor, dtype=None) -> torch.Tensor:
        """Spikes per element of this neuron's output ``y`` (s·u per element), in ``dtype`` (default y's):
        0/1 in one pass for binary neurons, round(y/u) for burst neurons."""
        dtype = y.dtype if dtype is None else dtype
        if self.burst == 1:
            return torch.ne(y, 0, out=torch.empty(y.shape, dtype=dtype, device=y.device))
        return torch.round(y.to(dtype) / self.unit)

    def reset(self, site_module=None) -> None:
        """Forget the membrane (new input); re-read λ from the site."""
        self.v = None
        if site_module is not None:
            self._read_lam(site_module)

    def _split(self, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
        """``x`` (steps·B·k, ...) → a view (steps, B·k, ...) (no copy) and n = elements per sample and step."""
        B = self.clock.batch
        if x.dim() == 0 or x.shape[0] % (steps * B):
            raise MSTError(f"site {self.site}@{self.block}: input of shape {tuple(x.shape)} does not split "
                           f"into {steps} steps × {B} samples along its first dimension")
        xs = x.unflatten(0, (steps, -1))
        self.step_numel = xs[0].numel()
        return xs, self.step_numel // B

    def _init_state(self, xs: torch.Tensor) -> None:
        shape = xs.shape[1:]
        if self.v is None:
            self.v = torch.full(shape, self.unit / 2, dtype=xs.dtype, device=xs.device)
        elif self.v.shape != shape or self.v.dtype != xs.dtype:
            raise MSTError(f"site {self.site}@{self.block}: state has shape {tuple(self.v.shape)} "
                           f"but the input has {tuple(shape)} per step; call reset() between inputs")


_MASK_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
MASK_CACHE_BYTES = 256 << 20        # keep masks of recent (seed, site, block, steps, n) across batches
_cache_bytes = 0


def cached_keep_block(seed: int, site: str, block: int, t0: int, steps: int, n: int, ratio: float,
                      device) -> torch.Tensor:
    """:func:`keep_block` through a small LRU cache: every batch of an evaluation reuses the masks."""
    global _cache_bytes
    key = (int(seed), site, int(block), int(t0), int(steps), int(n), float(ratio), str(device))
    m = _MASK_CACHE.get(key)
    if m is not None:
        _MASK_CACHE.move_to_end(key)
        return m
    m = keep_block(seed, site, block, t0, steps, n, ratio, device)
    size = m.numel()
    if size <= MASK_CACHE_BYTES // 4:
        _MASK_CACHE[key] = m
        _cache_bytes += size
        while _cache_bytes > MASK_CACHE_BYTES and _MASK_CACHE:
            _cache_bytes -= _MASK_CACHE.popitem(last=False)[1].numel()
    return m


class IFNeuron(_Base):
    """Multi-step IF neuron: input ``(steps·B·…, …)`` time-major; scans over ``clock.steps``."""

    def keep(self, t0: int, steps: int, n: int, device) -> torch.Tensor:
        return cached_keep_block(self.seed, self.site, self.block, t0, steps, n, self.ratio, device)

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)

    def __call__(self, site_module, x: torch.Tensor) -> torch.Tensor:
        counter = self.counter
        ctx = counter.quiet() if counter is not None else nullcontext()
        with ctx:
            steps, B, t0 = self.clock.steps, self.clock.batch, self.clock.t0
            xs, n = self._split(x, steps)
            self._init_state(xs)
            lam, unit, burst, v = self.lam, self.unit, self.burst, self.v
            out = torch.empty(xs.shape, dtype=xs.dtype, device=xs.device)    # contiguous, logical order
            for t in range(steps):
                v.add_(xs[t])
                o = out[t]
                if burst == 1:
                    torch.ge(v, lam, out=o)       # spike as 1.0 / 0.0
                    v.sub_(o, alpha=lam)          # v - λ·1 or v - λ·0: exact
                else:                             # the operations of burst_step, in place
                    torch.floor(torch.div(v, unit, out=o), out=o).clamp_(0, burst)
                    v.sub_(o * unit)
            emitted = delivered = None
            if counter is not None:                      # out holds spike counts here
                emitted = exact_total(out.view(steps * B, n))
            if self.ratio > 0:
                keep = self.keep(t0, steps, n, xs.device)
                out.view(steps, B, n).mul_(keep.unsqueeze(1))
                if counter is not None:
                    delivered = exact_total(out.view(steps * B, n))
            else:
                delivered = emitted
            out.mul_(unit)
            y = out.view(x.shape)
            if counter is not None:
                counter.record_site(site_module, self, emitted, delivered, n, steps, B)
        if counter is not None:
            counter.tag(y, site_module)
        return y


class StepIFNeuron(_Base):
    """One step per call: the per-step reference. Input ``(B·…, …)`` at step ``clock.t0``."""

    def __call__(self, site_module, x: torch.Tensor) -> torch.Tensor:
        if self.clock.steps != 1:
            raise MSTError("StepIFNeuron runs one step per call (clock.steps must be 1)")
        counter = self.counter
        ctx = counter.quiet() if counter is not None else nullcontext()
        with ctx:
            B, t = self.clock.batch, self.clock.t0
            xs, n = self._split(x, 1)
            self._init_state(xs)
            if self.burst == 1:
                self.v, s = if_step(self.v, xs[0], self.lam)
            else:
                self.v, s = burst_step(self.v, xs[0], self.unit, self.burst)
            spikes = s.to(x.dtype).reshape(-1)
            emitted = delivered = None
            if counter is not None:
                emitted = spikes.sum(dtype=torch.float64)
            if self.ratio > 0:
                keep = rsm.keep_mask_torch(self.seed, self.site, self.block, t, n, self.ratio, x.device)
                spikes = (spikes.view(B, n) * keep.to(x.dtype)).view(-1)
            if counter is not None:
                delivered = spikes.sum(dtype=torch.float64)
            y = (spikes * self.unit).view(x.shape)
            if counter is not None:
                counter.record_site(site_module, self, emitted, delivered, n, 1, B)
        if counter is not None:
            counter.tag(y, site_module)
        return y

