"""ANN→SNN conversion and the spiking simulators.

Conversion puts an IF neuron on every QCFS site (``site.neuron``); the model is put in
``eval()`` so BatchNorm is an affine map. Every other operation is the ANN's own code,
applied to the spike tensors of each step.

:func:`simulate` is the multi-step simulator: the analog input is repeated over the time
steps of a chunk and folded time-major into the batch ``(Tc·B, C, H, W)``; all stateless
operations run once over the whole chunk and only the neurons scan over time. Neuron state
carries across chunks, so memory is bounded by the chunk size ``t_chunk``; large batches
can also be split (``batch_chunk``) since the masks do not depend on the sample.

:func:`simulate_reference` is the plain per-step simulation (the whole model re-run once
per step, batch B, stateful neurons): the oracle that :func:`simulate` must equal exactly.

``attention`` picks the rule for the attention's two dynamic products: ``"paper"`` (default,
the model's own Q·Kᵀ and softmax·V applied to each step's spikes, as the paper converts) or
``"compensated"`` (the expectation-compensated products of the exported network, the float
semantics of ``mst_lava.export.NetSim`` and the Lava runtime; :mod:`mst_lava.snn.attention`).

``burst`` (default 1) is the largest number of spikes a neuron may fire in one step (graded-payload
neurons, :mod:`mst_lava.snn.neuron`): with burst = L and T = 1 the network computes the ANN.

The output is the mean over steps of the head's outputs; the prediction is its argmax.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import nn

from mst_lava.errors import MSTError
from mst_lava.model import rsm
from mst_lava.model.mst import WindowAttention
from mst_lava.model.qcfs import iter_sites
from mst_lava.snn.attention import CompensatedAttention, StepCompensatedAttention, check_attention
from mst_lava.snn.neuron import Clock, IFNeuron, StepIFNeuron

# Automatic chunk size: the first chunk is one step; it tells the largest per-step neuron input
# (elements); later chunks fold as many steps as keep that tensor near this many elements. On CPU
# small chunks stay in cache (fmnist preset, batch 64: 1-2 steps per pass is fastest); GPUs want
# large batches and have the memory for them.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 28}


def auto_t_chunk(T: int, max_step_numel: int, device) -> int:
    budget = CHUNK_ELEMENTS.get(torch.device(device).type, CHUNK_ELEMENTS["cuda"])
    return max(1, min(int(T), budget // max(int(max_step_numel), 1)))


class Spiking:
    """The converted state of a model: a clock, one neuron per QCFS site and, with
    ``attention="compensated"``, one products object per window attention (``attn.products``)."""

    def __init__(self, model: nn.Module, mask: Mapping[str, float] | Iterable[str] | None = None,
                 seed: int = 0, counter=None, neuron_cls=IFNeuron, attention: str = "paper", burst: int = 1):
        self.attention = check_attention(attention)
        self.model = model
        self.mask = rsm.parse_mask_spec(mask) if mask else {}
        self.seed = int(seed)
        self.counter = counter
        self.clock = Clock()
        self.sites = [(name, m) for name, m in iter_sites(model)]
        if not self.sites:
            raise MSTError("the model has no QCFS sites: nothing to convert to spiking neurons")
        self.neurons = []
        for _, m in self.sites:
            if m.neuron is not None:
                raise MSTError(f"site {m.site}@{m.block} is already converted; restore() first")
        for _, m in self.sites:
            nrn = neuron_cls(m, self.clock, rsm.ratio_for(self.mask, m.site, m.block), self.seed, counter, burst)
            m.neuron = nrn
            self.neurons.append(nrn)
        self.products = []
        if attention == "compensated":
            cls = StepCompensatedAttention if issubclass(neuron_cls, StepIFNeuron) else CompensatedAttention
            for m in model.modules():
                if isinstance(m, WindowAttention):
                    m.products = cls(m, self.clock, counter)
                    self.products.append(m)
        self._was_training = model.training
        model.eval()

    def reset(self, batch: int) -> None:
        """New input of ``batch`` samples: membranes back to λ/2."""
        self.clock.batch = int(batch)
        for (_, m), nrn in zip(self.sites, self.neurons):
            nrn.reset(m)
        for m in self.products:
            m.products.reset()

    def set_seed(self, seed: int) -> None:
        """Use RSM seed ``seed`` from now on, in every neuron."""
        self.seed = int(seed)
        for nrn in self.neurons:
            if hasattr(nrn, "set_seed"):
                nrn.set_seed(seed)
            else:
                nrn.seed = int(seed)

    def ratios(self) -> dict[str, float]:
        """``{"SITE@BLOCK": drop ratio}`` of every converted site."""
        return {f"{m.site}@{m.block}": nrn.ratio for (_, m), nrn in zip(self.sites, self.neurons)}

    def restore(self) -> None:
        """Undo the conversion: the model is the ANN again (no neurons on its sites, no attention products)."""
        for _, m in self.sites:
            m.neuron = None
        for m in self.products:
            m.products = None
        self.model.train(self._was_training)


def convert(model: nn.Module, mask=None, seed: int = 0, counter=None, neuron_cls=IFNeuron,
            attention: str = "paper", burst: int = 1) -> Spiking:
    """Put IF neurons on every QCFS site of ``model`` (in place; ``restore`` undoes it)."""
    return Spiking(model, mask, seed, counter, neuron_cls, attention, burst)


def restore(model: nn.Module) -> None:
    """Remove the neurons (and attention products): the model is the ANN again."""
    for _, m in iter_sites(model):
        m.neuron = None
    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.products = None


@contextmanager
def spiking(model: nn.Module, mask=None, seed: int = 0, counter=None, neuron_cls=IFNeuron,
            attention: str = "paper", burst: int = 1):
    """``with spiking(model, mask={"Q": .75}, seed=0) as snn: ...`` – converted inside, ANN after."""
    state = convert(model, mask, seed, counter, neuron_cls, attention, burst)
    try:
        yield state
    finally:
        state.restore()


@dataclass
class SimResult:
    logits: torch.Tensor                                  # (B, K): mean of head outputs over all T steps
    logits_at: dict[int, torch.Tensor] = field(default_factory=dict)   # t → mean over the first t steps
    steps: torch.Tensor | None = None                     # (T, B, K) per-step head outputs if asked

    def predictions(self, t: int | None = None) -> torch.Tensor:
        """Predicted classes (B,) after all T steps, or after the first ``t`` (a checkpoint step)."""
        return (self.logits if t is None else self.logits_at[t]).argmax(dim=-1)


def _chunk_ends(T: int, t_chunk: int, checkpoints: Iterable[int]) -> list[int]:
    ends = set(range(t_chunk, T, t_chunk)) | {int(c) for c in checkpoints if 0 < int(c) < T} | {T}
    return sorted(ends)


def _check_T(T: int, checkpoints) -> list[int]:
    if int(T) < 1:
        raise MSTError(f"T must be at least 1 time step, not {T}")
    cps = sorted({int(c) for c in (checkpoints or ())} | {int(T)})
    bad = [c for c in cps if c < 1 or c > T]
    if bad:
        raise MSTError(f"checkpoints {bad} are outside 1..{T}")
    return cps


@torch.no_grad()
def simulate(model: nn.Module, x: torch.Tensor, T: int, *, mask=None, seed: int = 0,
             t_chunk: int | None = None, batch_chunk: int | None = None,
             checkpoints: Iterable[int] | None = None, counter=None,
             return_steps: bool = False, attention: str = "paper", burst: int = 1) -> SimResult:
    """Multi-step simulation of the converted ``model`` on analog input ``x`` (B, C, H, W) for T steps.

    ``mask``: RSM map ``{site or "SITE@block": r}`` (or ``["Q=0.75", ...]``); ``seed``: mask seed.
    ``t_chunk``: steps folded per forward (default: automatic, see :func:`auto_t_chunk`).
    ``checkpoints``: extra step counts t < T at which the running mean is also returned
    (``logits_at[t]``; a T=128 run gives the T=8..64 results for free, exactly).
    ``counter``: an :class:`mst_lava.snn.counters.OpCounter` to fill (snapshots at each checkpoint).
    ``attention``: ``"paper"`` (Q·Kᵀ and softmax·V of each step's spikes) or ``"compensated"``
    (the exported network's expectation-compensated products, :mod:`mst_lava.snn.attention`).
    ``burst``: spikes a neuron may fire per step (1: binary IF neurons).
    """
    cps = _check_T(T, checkpoints)
    check_attention(attention)
    B = x.shape[0]
    if batch_chunk and batch_chunk < B:
        parts = [simulate(model, x[i:i + batch_chunk], T, mask=mask, seed=seed, t_chunk=t_chunk,
                          checkpoints=cps, counter=counter, return_steps=return_steps, attention=attention,
                          burst=burst)
                 for i in range(0, B, batch_chunk)]
        return SimResult(torch.cat([p.logits for p in parts]),
                         {t: torch.cat([p.logits_at[t] for p in parts]) for t in cps},
                         torch.cat([p.steps for p in parts], dim=1) if return_steps else None)
    auto = t_chunk is None
    t_chunk = 1 if auto else max(1, min(int(t_chunk), T))
    with spiking(model, mask, seed, counter, IFNeuron, attention, burst) as snn:
        snn.reset(B)
        if counter is not None:
            counter.begin_input(B)
        acc = None
        out_at: dict[int, torch.Tensor] = {}
        steps_out = []
        t = 0
        cm = counter.active() if counter is not None else _null()
        with cm:
            ends = _chunk_ends(T, t_chunk, cps)
            while ends:
                end = ends.pop(0)
                Tc = end - t
                snn.clock.t0, snn.clock.steps = t, Tc
                xin = x.unsqueeze(0).expand(Tc, *x.shape).reshape(Tc * B, *x.shape[1:])
                if counter is not None:
                    counter.mark_constant(xin)
                y = model(xin)
                y = y.reshape(Tc, B, *y.shape[1:])
                for i in range(Tc):           # sequential sum: bit-identical to the per-step reference
                    acc = y[i].clone() if acc is None else acc.add_(y[i])
                if return_steps:
                    steps_out.append(y)
                t = end
                if auto and t == 1 and ends:          # sized from the first (one-step) pass
                    auto = False
                    tc = auto_t_chunk(T, max(n.step_numel for n in snn.neurons), x.device)
                    ends = [e + 1 for e in _chunk_ends(T - 1, tc, [c - 1 for c in cps if c > 1])]
                if t in cps:
                    out_at[t] = acc / t
                    if counter is not None:
                        counter.checkpoint(t)
    return SimResult(out_at[T], out_at, torch.cat(steps_out) if return_steps else None)


@torch.no_grad()
def simulate_reference(model: nn.Module, x: torch.Tensor, T: int, *, mask=None, seed: int = 0,
                       checkpoints: Iterable[int] | None = None, counter=None,
                       return_steps: bool = False, attention: str = "paper", burst: int = 1) -> SimResult:
    """Per-step reference: the whole model re-run once per step (batch B) with stateful neurons
    (and, with ``attention="compensated"``, stateful attention products)."""
    cps = _check_T(T, checkpoints)
    B = x.shape[0]
    with spiking(model, mask, seed, counter, StepIFNeuron, check_attention(attention), burst) as snn:
        snn.reset(B)
        snn.clock.steps = 1
        if counter is not None:
            counter.begin_input(B)
        acc = None
        out_at: dict[int, torch.Tensor] = {}
        steps_out = []
        cm = counter.active() if counter is not None else _null()
        with cm:
            for t in range(T):
                snn.clock.t0 = t
                if counter is not None:
                    counter.mark_constant(x)
                y = model(x)
                acc = y.clone() if acc is None else acc + y
                if return_steps:
                    steps_out.append(y.unsqueeze(0))
                if t + 1 in cps:
                    out_at[t + 1] = acc / (t + 1)
                    if counter is not None:
                        counter.checkpoint(t + 1)
    return SimResult(out_at[T], out_at, torch.cat(steps_out) if return_steps else None)


@contextmanager
def _null():
    yield
