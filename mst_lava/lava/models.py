"""The CPU ProcessModels of the MST runtime's Lava Processes (:mod:`mst_lava.lava.process`), in Lava's style:
explicit classes decorated with ``@implements``/``@requires``/``@tag``, one ``floating_pt`` and one ``fixed_pt``
model per Process.

The code of a Process's two models is one behaviour class (``_SynapseBehaviour``, ...); the two models differ
only in their port and Var types, each declared once below from the precision's type table (:data:`FLOAT`,
:data:`FIXED`). A behaviour class is a thin shell around kernels (:mod:`mst_lava.lava.kernels`): it receives
its inputs, runs the logical clock (module docstring of :mod:`mst_lava.lava.process`), steps the kernel and
files its counts.
"""
from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before any lava import)
from mst_lava.lava.process import (
    MAX_IN_PORTS,
    MAX_PORTS,
    RSM,
    DelayLine,
    IFNeuron,
    InputEncoder,
    Readout,
    Residual,
    Segment,
    SoftmaxAV,
    SourceSynapse,
    SpikeProduct,
    Synapse,
)

# The types of a model's ports and Vars, per precision: floating_pt ports carry float64 arrays, fixed_pt ports
# int64 (integer currents, spikes, graded payloads); the counts Var is float in both (exact integer counts).
FLOAT = SimpleNamespace(IN=LavaPyType(PyInPort.VEC_DENSE, float), OUT=LavaPyType(PyOutPort.VEC_DENSE, float),
                        VAR=LavaPyType(np.ndarray, float))
FIXED = SimpleNamespace(IN=LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=32),
                        OUT=LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=32),
                        VAR=LavaPyType(np.ndarray, np.int64))
COUNTS = LavaPyType(np.ndarray, float)


def numbered_ports(kind: str, n: int, port_type):
    """Class decorator: ports ``{kind}0 .. {kind}{n-1}`` of one type (the Processes with many inputs/outputs)."""
    def add(cls):
        for i in range(n):
            setattr(cls, f"{kind}{i}", port_type)
        return cls
    return add


def cpu_model(proc, precision_tag: str):
    """``@implements(proc, LoihiProtocol) @requires(CPU) @tag(precision_tag)`` in one decorator."""
    def deco(cls):
        return tag(precision_tag)(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(cls)))
    return deco


# ----------------------------------------------------------------------------------------
# behaviour: one class per Process, shared by its two models

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


class _EncoderBehaviour(_TimedModel):
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


class _SynapseBehaviour(_KernelModel):
    in_names, out_name = ("s_in",), "a_out"


class _IFBehaviour(_KernelModel):
    in_names, out_name = ("a_in",), "s_out"

    def after_step(self, s, t, y):
        self.v[...] = self.kernel.v


class _RSMBehaviour(_KernelModel):
    in_names, out_name = ("s_in",), "s_out"


class _ResidualBehaviour(_KernelModel):
    out_name = "out"

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.in_names = tuple(f"in{i}" for i in range(int(proc_params["n_in"])))


class _SourceSynapseBehaviour(_KernelModel):
    out_name = "a_out"

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.in_names = tuple(f"in{i}" for i in range(int(proc_params["n_in"])))


class _QKBehaviour(_KernelModel):
    in_names, out_name = ("q_in", "k_in"), "a_out"


class _SoftmaxAVBehaviour(_KernelModel):
    in_names, out_name = ("a_in", "v_in"), "a_out"


class _ReadoutBehaviour(_KernelModel):
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


class _DelayBehaviour(PyLoihiProcessModel):
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


class _SegmentBehaviour(_TimedModel):
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


# ----------------------------------------------------------------------------------------
# the models: each Process's floating_pt and fixed_pt model, ports and Vars typed from FLOAT / FIXED

@cpu_model(InputEncoder, "floating_pt")
class PyInputEncoderModelFloat(_EncoderBehaviour):
    out, counts = FLOAT.OUT, COUNTS


@cpu_model(InputEncoder, "fixed_pt")
class PyInputEncoderModelFixed(_EncoderBehaviour):
    out, counts = FIXED.OUT, COUNTS


@cpu_model(Synapse, "floating_pt")
class PySynapseModelFloat(_SynapseBehaviour):
    s_in, a_out, counts = FLOAT.IN, FLOAT.OUT, COUNTS


@cpu_model(Synapse, "fixed_pt")
class PySynapseModelFixed(_SynapseBehaviour):
    s_in, a_out, counts = FIXED.IN, FIXED.OUT, COUNTS


@cpu_model(SourceSynapse, "floating_pt")
@numbered_ports("in", MAX_IN_PORTS, FLOAT.IN)
class PySourceSynapseModelFloat(_SourceSynapseBehaviour):
    a_out, counts = FLOAT.OUT, COUNTS


@cpu_model(SourceSynapse, "fixed_pt")
@numbered_ports("in", MAX_IN_PORTS, FIXED.IN)
class PySourceSynapseModelFixed(_SourceSynapseBehaviour):
    a_out, counts = FIXED.OUT, COUNTS


@cpu_model(IFNeuron, "floating_pt")
class PyIFNeuronModelFloat(_IFBehaviour):
    a_in, s_out, v, counts = FLOAT.IN, FLOAT.OUT, FLOAT.VAR, COUNTS


@cpu_model(IFNeuron, "fixed_pt")
class PyIFNeuronModelFixed(_IFBehaviour):
    a_in, s_out, v, counts = FIXED.IN, FIXED.OUT, FIXED.VAR, COUNTS


@cpu_model(RSM, "floating_pt")
class PyRSMModelFloat(_RSMBehaviour):
    s_in, s_out, counts = FLOAT.IN, FLOAT.OUT, COUNTS


@cpu_model(RSM, "fixed_pt")
class PyRSMModelFixed(_RSMBehaviour):
    s_in, s_out, counts = FIXED.IN, FIXED.OUT, COUNTS


@cpu_model(Residual, "floating_pt")
@numbered_ports("in", MAX_PORTS, FLOAT.IN)
class PyResidualModelFloat(_ResidualBehaviour):
    out, counts = FLOAT.OUT, COUNTS


@cpu_model(Residual, "fixed_pt")
@numbered_ports("in", MAX_PORTS, FIXED.IN)
class PyResidualModelFixed(_ResidualBehaviour):
    out, counts = FIXED.OUT, COUNTS


@cpu_model(SpikeProduct, "floating_pt")
class PySpikeProductModelFloat(_QKBehaviour):
    q_in, k_in, a_out, counts = FLOAT.IN, FLOAT.IN, FLOAT.OUT, COUNTS


@cpu_model(SpikeProduct, "fixed_pt")
class PySpikeProductModelFixed(_QKBehaviour):
    q_in, k_in, a_out, counts = FIXED.IN, FIXED.IN, FIXED.OUT, COUNTS


@cpu_model(SoftmaxAV, "floating_pt")
class PySoftmaxAVModelFloat(_SoftmaxAVBehaviour):
    a_in, v_in, a_out, counts = FLOAT.IN, FLOAT.IN, FLOAT.OUT, COUNTS


@cpu_model(SoftmaxAV, "fixed_pt")
class PySoftmaxAVModelFixed(_SoftmaxAVBehaviour):
    a_in, v_in, a_out, counts = FIXED.IN, FIXED.IN, FIXED.OUT, COUNTS


@cpu_model(Readout, "floating_pt")
class PyReadoutModelFloat(_ReadoutBehaviour):
    x_in, scores, counts = FLOAT.IN, FLOAT.VAR, COUNTS


@cpu_model(Readout, "fixed_pt")
class PyReadoutModelFixed(_ReadoutBehaviour):
    x_in, scores, counts = FIXED.IN, FIXED.VAR, COUNTS


@cpu_model(DelayLine, "floating_pt")
class PyDelayLineModelFloat(_DelayBehaviour):
    s_in, s_out, counts = FLOAT.IN, FLOAT.OUT, COUNTS


@cpu_model(DelayLine, "fixed_pt")
class PyDelayLineModelFixed(_DelayBehaviour):
    s_in, s_out, counts = FIXED.IN, FIXED.OUT, COUNTS


@cpu_model(Segment, "floating_pt")
@numbered_ports("in", MAX_IN_PORTS, FLOAT.IN)
@numbered_ports("out", MAX_PORTS, FLOAT.OUT)
class PySegmentModelFloat(_SegmentBehaviour):
    counts = COUNTS


@cpu_model(Segment, "fixed_pt")
@numbered_ports("in", MAX_IN_PORTS, FIXED.IN)
@numbered_ports("out", MAX_PORTS, FIXED.OUT)
class PySegmentModelFixed(_SegmentBehaviour):
    counts = COUNTS


# each Process's model per precision tag (run_config maps process instances to them explicitly)
MODELS = {tg: {cls.implements_process: cls for cls in models} for tg, models in (
    ("floating_pt", (PyInputEncoderModelFloat, PySynapseModelFloat, PySourceSynapseModelFloat, PyIFNeuronModelFloat,
                     PyRSMModelFloat, PyResidualModelFloat, PySpikeProductModelFloat, PySoftmaxAVModelFloat,
                     PyReadoutModelFloat, PyDelayLineModelFloat, PySegmentModelFloat)),
    ("fixed_pt", (PyInputEncoderModelFixed, PySynapseModelFixed, PySourceSynapseModelFixed, PyIFNeuronModelFixed,
                  PyRSMModelFixed, PyResidualModelFixed, PySpikeProductModelFixed, PySoftmaxAVModelFixed,
                  PyReadoutModelFixed, PyDelayLineModelFixed, PySegmentModelFixed)))}


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
