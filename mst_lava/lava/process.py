"""Lava Processes of the MST runtime: their ports and Vars (the declarations). Their CPU ProcessModels
(``floating_pt`` and ``fixed_pt``) are in :mod:`mst_lava.lava.models`, as Lava keeps ``process.py`` apart from
``models.py``.

Processes (ports in brackets):

=================  ======================================================================
``InputEncoder``   [out] the analog image of the current sample every step (event data:
                   the frame of the step); fixed point: ``netx_ops.quantize_input`` values
``Synapse``        [s_in → a_out] conv / dense / flatten synapses (input current)
``SourceSynapse``  [in0..in15 → a_out] a conv with one weight set per spike input (format §5b)
``IFNeuron``       [a_in → s_out] integrate-and-fire, reset by subtraction, v0 = θ/2
``RSM``            [s_in → s_out] Random Spike Masking: drops spike events
``Residual``       [in0..in7 → out] residual accumulation Σ gain_k · in_k
``SpikeProduct``   [q_in, k_in → a_out] Q·Kᵀ spike product current of the A site
``SoftmaxAV``      [a_in, v_in → a_out] softmax (bias, shift mask) of A, times V
``Readout``        [x_in] accumulates the class scores of every sample
``DelayLine``      [s_in → s_out] delays a tensor by a fixed number of steps
``Segment``        [in0..in7 → out0..out7] many of the above fused into one process
=================  ======================================================================

Time. By default every model here is *zero-latency*: in its ``run_spk`` it first
receives the inputs of Lava step n, then computes and sends its outputs of the same step n
(Lava's CPU runtime blocks a ``recv`` until the producer of the same step has sent, so an
acyclic graph of such processes runs in lock step). A ``pipelined`` Synapse or Segment
instead sends the result of step n − 1 first and then computes step n (like Lava's own
``Dense``/``Conv``): one step of latency, and consecutive processes run in parallel. Each
process carries ``latency`` a (the Lava step offset at which it computes logical step 0)
and ``in_delays`` (per input port, a FIFO that re-aligns a shorter path), both set by
``builder.align_latencies``. Its logical step is ``g = n − 1 − a`` (Lava's ``time_step`` n
starts at 1), sample ``g // T`` and step-in-sample ``t = g % T``: the torch step index, used
for the RSM keys. At ``t == 0`` state is reset (membranes to θ/2). Processes are idle (send
zeros, count nothing) before their first logical step and after the last sample.

Counts. Processes with counters own a Var ``counts`` of shape ``(n_samples, k)``; row s
holds sample s's totals (see each kernel's ``count_names``).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before any lava import)
from mst_lava.lava import kernels as K

MAX_PORTS = 8          # in0..in7 / out0..out7 of Residual
MAX_IN_PORTS = 16      # in0..in15 of Segment and SourceSynapse (an event-driven merge reads 1 + 2·depth spike trains)
_UNUSED = (1,)         # shape of a port a process does not use


def _nc(kernel) -> int:
    return len(kernel.count_names) if kernel is not None else 1


def _shape(s) -> tuple:
    return tuple(int(v) for v in s)


class _Timed(AbstractProcess):
    """Common parameters: ``T`` steps per sample (0: one endless sample), ``n_samples``, ``latency``."""

    def __init__(self, *, T: int = 0, n_samples: int = 1, latency: int = 0, n_counts: int = 0,
                 name: str | None = None, pipelined: bool = False, in_delays: dict | None = None, **params):
        super().__init__(name=name, T=int(T), n_samples=int(n_samples), latency=int(latency),
                         pipelined=bool(pipelined), in_delays=dict(in_delays or {}), **params)
        self.counts = Var(shape=(max(int(n_samples), 1), max(int(n_counts), 1)), init=0)


# ----------------------------------------------------------------------------------------
# Processes

class InputEncoder(_Timed):
    """Feeds sample s's input every step: ``data`` is ``(n, C, H, W)`` (analog images, the
    current of every step) or ``(n, F, C, H, W)`` (event frames: frame ``min(t·F//T, F−1)``)."""

    def __init__(self, *, data: np.ndarray, shape, T: int, latency: int = 0, name=None):
        data = np.asarray(data)
        super().__init__(T=T, n_samples=data.shape[0], latency=latency, name=name, data=data)
        self.out = OutPort(shape=_shape(shape))


class Synapse(_Timed):
    """Zero-latency synapses: ``kind`` conv / dense / flatten, see :class:`kernels.SynapseKernel`."""

    def __init__(self, *, kernel: K.SynapseKernel, T: int = 0, n_samples: int = 1, latency: int = 0, name=None,
                 pipelined: bool = False):
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=len(kernel.count_names),
                         name=name, kernel=kernel, pipelined=pipelined)
        self.s_in = InPort(shape=kernel.in_shape)
        self.a_out = OutPort(shape=kernel.out_shape)


class SourceSynapse(_Timed):
    """Zero-latency (or pipelined) conv with one weight set per spike input: :class:`kernels.SourceSynapseKernel`."""

    def __init__(self, *, kernel: K.SourceSynapseKernel, T: int = 0, n_samples: int = 1, latency: int = 0,
                 name=None, pipelined: bool = False):
        n = len(kernel.in_shapes)
        if n > MAX_IN_PORTS:
            raise ValueError(f"SourceSynapse takes at most {MAX_IN_PORTS} inputs")
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=len(kernel.count_names),
                         name=name, kernel=kernel, pipelined=pipelined, n_in=n)
        for i in range(MAX_IN_PORTS):
            setattr(self, f"in{i}", InPort(shape=_shape(kernel.in_shapes[i]) if i < n else _UNUSED))
        self.a_out = OutPort(shape=_shape(kernel.out_shape))


class IFNeuron(_Timed):
    """Integrate-and-fire neurons with reset by subtraction.

    ``v0 = vth/2`` (fixed: ``vth//2``); per step ``v += a_in``, spike if ``v >= vth``,
    ``v -= vth`` on a spike. ``s_out`` sends 0/1 spikes, or spike·vth when ``graded``.
    Vars: ``v`` (membrane), ``counts`` (spikes, neuron updates per sample).
    """

    def __init__(self, *, shape, vth, fixed: bool = False, graded: bool = False, T: int = 0,
                 n_samples: int = 1, latency: int = 0, name=None, kernel: K.IFKernel | None = None):
        shape = _shape(shape)
        kernel = kernel or K.IFKernel(shape, vth, fixed=fixed, graded=graded)
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=_nc(kernel), name=name, kernel=kernel)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=kernel.v)


class RSM(_Timed):
    """Random Spike Masking between a spike source and its synapses.

    Drops the spike at element e of step t when ``rsm.mask_bits(rsm.mask_key(seed, site,
    block, t), index[e]) < threshold`` (``threshold = rsm.drop_threshold(ratio)``): the
    generator the torch simulator uses, so both drop the very same events. ``index`` maps
    each element of the port tensor to the element index the torch site sees (default:
    C-order of the port shape). Counts per sample: events in, delivered, dropped.
    """

    def __init__(self, *, shape, seed: int, site_id: int, block: int, threshold: int, index=None,
                 fixed: bool = False, T: int = 0, n_samples: int = 1, latency: int = 0, name=None,
                 kernel: K.RSMKernel | None = None):
        shape = _shape(shape)
        if index is None:
            index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        kernel = kernel or K.RSMKernel(seed=seed, site_id=site_id, block=block, index=np.asarray(index).reshape(shape),
                             threshold=threshold, fixed=fixed, cache_steps=T)
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=_nc(kernel), name=name, kernel=kernel)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


class Residual(_Timed):
    """Residual accumulation: ``out = Σ_k gain_k · in_k`` over the connected ports in0..in{n-1}."""

    def __init__(self, *, kernel: K.ResidualKernel, shape, in_shapes=None, T: int = 0, n_samples: int = 1,
                 latency: int = 0, name=None):
        n = len(kernel.gains)
        if n > MAX_PORTS:
            raise ValueError(f"Residual takes at most {MAX_PORTS} inputs")
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=_nc(kernel), name=name, kernel=kernel,
                         n_in=n)
        in_shapes = in_shapes or [shape] * n
        for i in range(MAX_PORTS):
            setattr(self, f"in{i}", InPort(shape=_shape(in_shapes[i]) if i < n else _UNUSED))
        self.out = OutPort(shape=_shape(shape))


class SpikeProduct(_Timed):
    """Q·Kᵀ spike product (expectation compensated) → input current of the A neurons."""

    def __init__(self, *, kernel: K.QKKernel, in_shape, out_shape, T: int, n_samples: int = 1,
                 latency: int = 0, name=None):
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=_nc(kernel), name=name, kernel=kernel)
        self.q_in = InPort(shape=_shape(in_shape))
        self.k_in = InPort(shape=_shape(in_shape))
        self.a_out = OutPort(shape=_shape(out_shape))


class SoftmaxAV(_Timed):
    """softmax(A rates + relative-position bias + shift mask) · V → input current of the AV neurons."""

    def __init__(self, *, kernel: K.SoftmaxAVKernel, a_shape, v_shape, T: int, n_samples: int = 1,
                 latency: int = 0, name=None):
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=_nc(kernel), name=name, kernel=kernel)
        self.a_in = InPort(shape=_shape(a_shape))
        self.v_in = InPort(shape=_shape(v_shape))
        self.a_out = OutPort(shape=_shape(v_shape))


class Readout(_Timed):
    """Class-score accumulator: ``scores[s] = Σ_t y(t)``, ``y = W·Σ_tokens x + b`` (or x itself
    when no kernel is given). Var ``scores`` ``(n_samples, K)``."""

    def __init__(self, *, in_shape, num_classes: int, kernel: K.ReadoutKernel | None = None, T: int,
                 n_samples: int, latency: int = 0, name=None):
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=_nc(kernel), name=name, kernel=kernel)
        self.x_in = InPort(shape=_shape(in_shape))
        self.scores = Var(shape=(max(int(n_samples), 1), int(num_classes)), init=0)


class DelayLine(_Timed):
    """Delays its input by ``delay`` Lava steps (aligns a short path with a longer one)."""

    def __init__(self, *, shape, delay: int, name=None):
        super().__init__(T=0, n_samples=1, latency=0, name=name, delay=int(delay))
        self.s_in = InPort(shape=_shape(shape))
        self.s_out = OutPort(shape=_shape(shape))


class Segment(_Timed):
    """A fused sub-graph: kernels run in order inside one Lava step (one OS process).

    ``plan``: list of ``(kernel, input_refs)`` in topological order; a ref is ``("in", i)``
    (port in{i}) or ``("k", j)`` (output of the j-th kernel). ``outputs``: list of refs
    sent on out0, out1, ... ``counts`` concatenates the kernels' counters in plan order.
    """

    def __init__(self, *, plan, outputs, in_shapes, out_shapes, T: int, n_samples: int = 1,
                 latency: int = 0, name=None, pipelined: bool = False):
        if len(in_shapes) > MAX_IN_PORTS or len(out_shapes) > MAX_PORTS:
            raise ValueError(f"a Segment has at most {MAX_IN_PORTS} input and {MAX_PORTS} output ports")
        n_counts = sum(len(k.count_names) for k, _ in plan)
        super().__init__(T=T, n_samples=n_samples, latency=latency, n_counts=n_counts, name=name,
                         pipelined=pipelined, plan=list(plan), outputs=list(outputs), n_in=len(in_shapes),
                         n_out=len(out_shapes))
        for i in range(MAX_IN_PORTS):
            setattr(self, f"in{i}", InPort(shape=_shape(in_shapes[i]) if i < len(in_shapes) else _UNUSED))
        for i in range(MAX_PORTS):
            setattr(self, f"out{i}", OutPort(shape=_shape(out_shapes[i]) if i < len(out_shapes) else _UNUSED))
