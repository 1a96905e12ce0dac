"""Lava Processes of the MST runtime and their CPU ProcessModels (``floating_pt`` and ``fixed_pt``).

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

from collections import deque

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

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


# ----------------------------------------------------------------------------------------
# ProcessModels

class _TimedModel(PyLoihiProcessModel):
    """Logical clock of a zero-latency model (see the module docstring)."""

    counts: np.ndarray = None

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.T = int(proc_params["T"])
        self.n_samples = max(int(proc_params["n_samples"]), 1)
        self.latency = int(proc_params["latency"])
        self.pipelined = bool(proc_params.get("pipelined", False))
        self.in_delays = {k: int(v) for k, v in (proc_params.get("in_delays") or {}).items() if int(v) > 0}
        self._lines = {k: deque() for k in self.in_delays}
        self._pending = None

    def recv_aligned(self, name: str) -> np.ndarray:
        """Receive port ``name``, delayed by its alignment delay (a FIFO of ``in_delays[name]`` steps)."""
        x = getattr(self, name).recv()
        d = self.in_delays.get(name, 0)
        if not d:
            return x
        q = self._lines[name]
        q.append(x)
        return q.popleft() if len(q) > d else np.zeros_like(x)

    def clock(self):
        """(sample, t) of the current Lava step, or None when idle."""
        g = int(self.time_step) - 1 - self.latency
        if g < 0:
            return None
        if self.T <= 0:
            return 0, g
        s, t = divmod(g, self.T)
        return (s, t) if s < self.n_samples else None


class _KernelModel(_TimedModel):
    """One kernel: recv inputs, step, add the kernel's counters to this sample's row, send."""

    in_names: tuple = ()
    out_name: str = ""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.kernel = proc_params["kernel"]

    def run_spk(self):
        out = getattr(self, self.out_name) if self.out_name else None
        if self.pipelined and out is not None:      # one step of latency: last step's result first
            out.send(self._pending if self._pending is not None else np.zeros(out.shape))
        xs = [self.recv_aligned(n) for n in self.in_names]
        clk = self.clock()
        y = None
        if clk is not None:
            s, t = clk
            k = self.kernel
            if t == 0:
                k.reset()
            k.counts[:] = 0
            y = k.step(t, *xs)
            if len(k.count_names):
                self.counts[s, :len(k.count_names)] += k.counts
            self.after_step(s, t, y)
        if out is not None:
            if self.pipelined:
                self._pending = y
            else:
                out.send(y if y is not None else np.zeros(out.shape))

    def after_step(self, s, t, y):
        pass


def _F(port_cls):
    return LavaPyType(port_cls, float)


def _I(port_cls):
    return LavaPyType(port_cls, np.int64, precision=32)


def _both(proc, float_attrs: dict, fixed_attrs: dict, base, name: str):
    """Create the floating_pt and fixed_pt model classes of ``proc`` (identical code, typed ports)."""
    made = []
    for tg, attrs in (("floating_pt", float_attrs), ("fixed_pt", fixed_attrs)):
        cls = type(f"Py{name}Model{'Float' if tg == 'floating_pt' else 'Fixed'}", (base,),
                   dict(attrs, __module__=__name__, __qualname__=f"Py{name}Model"
                        f"{'Float' if tg == 'floating_pt' else 'Fixed'}"))
        cls = implements(proc=proc, protocol=LoihiProtocol)(cls)
        cls = requires(CPU)(cls)
        cls = tag(tg)(cls)
        made.append(cls)
    return made


# --- InputEncoder
class _EncoderBase(_TimedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.data = proc_params["data"]
        self.frames = None

    def run_spk(self):
        if self.frames is None:         # ports exist only after __init__
            self.frames = self.data.ndim == len(self.out.shape) + 2
        clk = self.clock()
        if clk is None:
            self.out.send(np.zeros(self.out.shape))
            return
        s, t = clk
        x = self.data[s]
        if self.frames:
            F = x.shape[0]
            x = x[min(t * F // max(self.T, 1), F - 1)]
        self.out.send(x)


PyInputEncoderModelFloat, PyInputEncoderModelFixed = _both(
    InputEncoder,
    {"out": _F(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    {"out": _I(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    _EncoderBase, "InputEncoder")


# --- Synapse
class _SynapseBase(_KernelModel):
    in_names, out_name = ("s_in",), "a_out"


PySynapseModelFloat, PySynapseModelFixed = _both(
    Synapse,
    {"s_in": _F(PyInPort.VEC_DENSE), "a_out": _F(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    {"s_in": _I(PyInPort.VEC_DENSE), "a_out": _I(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    _SynapseBase, "Synapse")


# --- IFNeuron
class _IFBase(_KernelModel):
    in_names, out_name = ("a_in",), "s_out"

    def after_step(self, s, t, y):
        self.v[...] = self.kernel.v


PyIFNeuronModelFloat, PyIFNeuronModelFixed = _both(
    IFNeuron,
    {"a_in": _F(PyInPort.VEC_DENSE), "s_out": _F(PyOutPort.VEC_DENSE), "v": LavaPyType(np.ndarray, float),
     "counts": LavaPyType(np.ndarray, float)},
    {"a_in": _I(PyInPort.VEC_DENSE), "s_out": _I(PyOutPort.VEC_DENSE), "v": LavaPyType(np.ndarray, np.int64),
     "counts": LavaPyType(np.ndarray, float)},
    _IFBase, "IFNeuron")


# --- RSM
class _RSMBase(_KernelModel):
    in_names, out_name = ("s_in",), "s_out"


PyRSMModelFloat, PyRSMModelFixed = _both(
    RSM,
    {"s_in": _F(PyInPort.VEC_DENSE), "s_out": _F(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    {"s_in": _I(PyInPort.VEC_DENSE), "s_out": _I(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    _RSMBase, "RSM")


# --- Residual
class _ResidualBase(_KernelModel):
    out_name = "out"

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.in_names = tuple(f"in{i}" for i in range(int(proc_params["n_in"])))


def _ports(kind, n, maker):
    return {f"{kind}{i}": maker(PyInPort.VEC_DENSE if kind == "in" else PyOutPort.VEC_DENSE) for i in range(n)}


PyResidualModelFloat, PyResidualModelFixed = _both(
    Residual,
    dict(_ports("in", MAX_PORTS, _F), out=_F(PyOutPort.VEC_DENSE), counts=LavaPyType(np.ndarray, float)),
    dict(_ports("in", MAX_PORTS, _I), out=_I(PyOutPort.VEC_DENSE), counts=LavaPyType(np.ndarray, float)),
    _ResidualBase, "Residual")


# --- SourceSynapse
class _SourceSynapseBase(_KernelModel):
    out_name = "a_out"

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.in_names = tuple(f"in{i}" for i in range(int(proc_params["n_in"])))


PySourceSynapseModelFloat, PySourceSynapseModelFixed = _both(
    SourceSynapse,
    dict(_ports("in", MAX_IN_PORTS, _F), a_out=_F(PyOutPort.VEC_DENSE), counts=LavaPyType(np.ndarray, float)),
    dict(_ports("in", MAX_IN_PORTS, _I), a_out=_I(PyOutPort.VEC_DENSE), counts=LavaPyType(np.ndarray, float)),
    _SourceSynapseBase, "SourceSynapse")


# --- SpikeProduct / SoftmaxAV
class _QKBase(_KernelModel):
    in_names, out_name = ("q_in", "k_in"), "a_out"


class _SAVBase(_KernelModel):
    in_names, out_name = ("a_in", "v_in"), "a_out"


PySpikeProductModelFloat, PySpikeProductModelFixed = _both(
    SpikeProduct,
    {"q_in": _F(PyInPort.VEC_DENSE), "k_in": _F(PyInPort.VEC_DENSE), "a_out": _F(PyOutPort.VEC_DENSE),
     "counts": LavaPyType(np.ndarray, float)},
    {"q_in": _I(PyInPort.VEC_DENSE), "k_in": _I(PyInPort.VEC_DENSE), "a_out": _I(PyOutPort.VEC_DENSE),
     "counts": LavaPyType(np.ndarray, float)},
    _QKBase, "SpikeProduct")

PySoftmaxAVModelFloat, PySoftmaxAVModelFixed = _both(
    SoftmaxAV,
    {"a_in": _F(PyInPort.VEC_DENSE), "v_in": _F(PyInPort.VEC_DENSE), "a_out": _F(PyOutPort.VEC_DENSE),
     "counts": LavaPyType(np.ndarray, float)},
    {"a_in": _I(PyInPort.VEC_DENSE), "v_in": _I(PyInPort.VEC_DENSE), "a_out": _I(PyOutPort.VEC_DENSE),
     "counts": LavaPyType(np.ndarray, float)},
    _SAVBase, "SoftmaxAV")


# --- Readout
class _ReadoutBase(_KernelModel):
    in_names = ("x_in",)

    def run_spk(self):
        x = self.recv_aligned("x_in")
        clk = self.clock()
        if clk is None:
            return
        s, t = clk
        k = self.kernel
        if k is None:
            self.scores[s] += x.reshape(-1)
            return
        k.counts[:] = 0
        self.scores[s] += k.step(t, x)
        self.counts[s, :len(k.count_names)] += k.counts


PyReadoutModelFloat, PyReadoutModelFixed = _both(
    Readout,
    {"x_in": _F(PyInPort.VEC_DENSE), "scores": LavaPyType(np.ndarray, float),
     "counts": LavaPyType(np.ndarray, float)},
    {"x_in": _I(PyInPort.VEC_DENSE), "scores": LavaPyType(np.ndarray, np.int64),
     "counts": LavaPyType(np.ndarray, float)},
    _ReadoutBase, "Readout")


# --- DelayLine
class _DelayBase(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.delay = int(proc_params["delay"])
        self.buf: list = []

    def run_spk(self):
        x = self.s_in.recv()
        if self.delay == 0:
            self.s_out.send(x)
            return
        self.buf.append(x.copy())
        if len(self.buf) > self.delay:
            self.s_out.send(self.buf.pop(0))
        else:
            self.s_out.send(np.zeros(self.s_out.shape))


PyDelayLineModelFloat, PyDelayLineModelFixed = _both(
    DelayLine,
    {"s_in": _F(PyInPort.VEC_DENSE), "s_out": _F(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    {"s_in": _I(PyInPort.VEC_DENSE), "s_out": _I(PyOutPort.VEC_DENSE), "counts": LavaPyType(np.ndarray, float)},
    _DelayBase, "DelayLine")


# --- Segment
class _SegmentBase(_TimedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.plan = proc_params["plan"]
        self.outputs = proc_params["outputs"]
        self.n_in = int(proc_params["n_in"])
        self.n_out = int(proc_params["n_out"])
        self.in_ports = self.out_ports = None
        self.offsets = []
        o = 0
        for k, _ in self.plan:
            self.offsets.append((o, o + len(k.count_names)))
            o += len(k.count_names)

    def run_spk(self):
        if self.in_ports is None:       # ports exist only after __init__
            self.in_ports = [getattr(self, f"in{i}") for i in range(self.n_in)]
            self.out_ports = [getattr(self, f"out{i}") for i in range(self.n_out)]
        if self.pipelined:                  # one step of latency: last step's results first
            pend = self._pending
            for j, p in enumerate(self.out_ports):
                p.send(pend[j] if pend is not None else np.zeros(p.shape))
        ins = [self.recv_aligned(f"in{i}") for i in range(self.n_in)]
        clk = self.clock()
        outs = None
        if clk is not None:
            s, t = clk
            vals = []
            row = self.counts[s]
            for (k, refs), (a, b) in zip(self.plan, self.offsets):
                if t == 0:
                    k.reset()
                k.counts[:] = 0
                y = k.step(t, *[ins[i] if src == "in" else vals[i] for src, i in refs])
                vals.append(y)
                if b > a:
                    row[a:b] += k.counts
            outs = [ins[i] if src == "in" else vals[i] for src, i in self.outputs]
        if self.pipelined:
            self._pending = outs
        else:
            for j, p in enumerate(self.out_ports):
                p.send(outs[j] if outs is not None else np.zeros(p.shape))


PySegmentModelFloat, PySegmentModelFixed = _both(
    Segment,
    dict(_ports("in", MAX_IN_PORTS, _F), **_ports("out", MAX_PORTS, _F), counts=LavaPyType(np.ndarray, float)),
    dict(_ports("in", MAX_IN_PORTS, _I), **_ports("out", MAX_PORTS, _I), counts=LavaPyType(np.ndarray, float)),
    _SegmentBase, "Segment")


MODELS = {
    "floating_pt": {InputEncoder: PyInputEncoderModelFloat, Synapse: PySynapseModelFloat,
                    SourceSynapse: PySourceSynapseModelFloat,
                    IFNeuron: PyIFNeuronModelFloat, RSM: PyRSMModelFloat, Residual: PyResidualModelFloat,
                    SpikeProduct: PySpikeProductModelFloat, SoftmaxAV: PySoftmaxAVModelFloat,
                    Readout: PyReadoutModelFloat, DelayLine: PyDelayLineModelFloat,
                    Segment: PySegmentModelFloat},
    "fixed_pt": {InputEncoder: PyInputEncoderModelFixed, Synapse: PySynapseModelFixed,
                 SourceSynapse: PySourceSynapseModelFixed,
                 IFNeuron: PyIFNeuronModelFixed, RSM: PyRSMModelFixed, Residual: PyResidualModelFixed,
                 SpikeProduct: PySpikeProductModelFixed, SoftmaxAV: PySoftmaxAVModelFixed,
                 Readout: PyReadoutModelFixed, DelayLine: PyDelayLineModelFixed,
                 Segment: PySegmentModelFixed},
}


def run_config(procs, precision: str = "float", hardware: bool = False):
    """A Loihi2SimCfg (or Loihi2HwCfg) selecting our models for ``procs`` explicitly.

    The models are mapped per process instance, so Lava does not scan directories for
    ProcessModels; Lava's own processes (e.g. ``lava.proc.conv``) are found as usual.
    """
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg
    tg = "fixed_pt" if precision == "fixed" else "floating_pt"
    table = MODELS[tg]
    mapping = {p: table[type(p)] for p in procs if type(p) in table}
    if hardware:
        return Loihi2HwCfg(exception_proc_model_map=mapping)
    return Loihi2SimCfg(select_tag=tg, exception_proc_model_map=mapping)
