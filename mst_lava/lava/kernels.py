"""Per-step kernels of the Lava ProcessModels: small state machines over numpy arrays.

Every Lava ProcessModel in :mod:`mst_lava.lava.models` is a thin shell around one or
more of these kernels (Norse style: explicit state, a ``reset`` and a ``step``), so the
same arithmetic runs whether a layer is its own Lava process (``granularity="layer"``) or
one of many kernels fused into a wide :class:`~mst_lava.lava.process.Segment` process
(``granularity="block"``, the fast default).

Semantics are those of docs/netx-mst-format.md. A kernel keeps the state of one layer
(cumulative counts, the previous step's value, the membrane); its arithmetic and counting rule
are its layer type's in :mod:`mst_lava.export.layers` (``KERNELS`` maps each type to its kernel),
compositions of :mod:`mst_lava.netx_ops` that the torch executor runs time-batched, so parity
with torch holds by construction. Kernels work on one sample and one logical
step at a time: ``t`` is the 0-based step inside the sample (the torch step index);
formulas that count steps from 1 use ``t + 1``.

Each kernel owns a few counters (``counts``, a float64 vector named by ``count_names``)
that it adds to every step; the process model files them per sample into a Lava Var, so
every count reported comes from the Lava run itself.
"""
from __future__ import annotations

import numpy as np

from mst_lava import netx_ops as ops
from mst_lava.errors import MSTError
from mst_lava.export.layers import LAYER_TYPES, channel_events, events, synops, weight_exponent


class Kernel:
    """Base class. ``inputs``: number of input arrays; ``step`` returns one output array."""

    count_names: tuple = ()
    fixed: bool = False

    def __init__(self):
        self.counts = np.zeros(len(self.count_names), dtype=np.float64)
        self._out_fanouts: list = []

    def count_output_synops(self, fanout) -> str:
        """Also count, every step, the synaptic ops this kernel's output events cause in a consumer
        that has no counters of ours (Lava's own ``Conv``): ``fanout @ (out ≠ 0)``, the format's rule
        (§7) with ``fanout`` the consumer's per-input non-zero synapses. Adds a counter (returns its
        name); call before the kernel's process is created."""
        name = f"synops_out{len(self._out_fanouts)}"
        self._out_fanouts.append(np.asarray(fanout, dtype=np.float64).reshape(-1))
        self.count_names = tuple(self.count_names) + (name,)
        self.counts = np.zeros(len(self.count_names), dtype=np.float64)
        return name

    def _count_out(self, out) -> None:
        if self._out_fanouts:
            events = np.asarray(out, dtype=np.float64).reshape(-1)        # payloads (0/1 for binary spikes)
            first = len(self.count_names) - len(self._out_fanouts)
            for j, fan in enumerate(self._out_fanouts):
                self.counts[first + j] += float(fan @ events)

    @classmethod
    def from_params(cls, P: dict, fixed: bool):
        """The kernel of a layer from its parameters (``mst_lava.export.layers.LayerType.params``)."""
        return cls(P, fixed)

    def reset(self) -> None:
        """Start a new sample (state back to its initial value)."""

    def step(self, t: int, *xs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """One logical step ``t`` (0-based within the sample) on the input arrays: the output array."""
        raise NotImplementedError

    @property
    def dtype(self):
        """The dtype of the kernel's values: int64 in fixed point, float64 in float."""
        return np.int64 if self.fixed else np.float64


# ----------------------------------------------------------------------------------------
# synapses

class SynapseKernel(Kernel):
    """conv / dense / flatten layer: the input current of the layer's neurons (or the flattened input).

    conv: :class:`mst_lava.export.layers.Conv` (float ``I = W_f ⋆ x + b_f``; fixed the raw current
    ``netx_ops.loihi_current(W ⋆ x, weight_exp)``: the IF neuron wraps it to 24 bits and adds the bias, as
    Loihi's compartment does, so a fixed SynapseKernel takes no bias), its counts too; ``W ⋆ x`` is
    ``netx_ops.conv2d``. dense (plain netx): the same with a matrix product; flatten: C-order reshape.

    ``spike_input``: the input is a 0/1 spike tensor rather than a graded value (which also
    costs dense multiply-accumulates). Synaptic ops (format §7): every nonzero input element ×
    its non-zero outgoing synapses (``netx_ops.conv_fanout`` / ``dense_fanout`` of the weights
    the kernel runs).
    """

    role = "synapse"  # its name in the builder's kernel graph
    count_names = ("synops", "analog_macs", "synops_messages")
    layer = LAYER_TYPES["conv"]

    def __init__(self, kind: str, weight=None, bias=None, *, in_shape, out_shape, stride=(1, 1),
                 padding=(0, 0), groups: int = 1, fixed: bool = False, weight_exp: int = 0,
                 spike_input: bool = True):
        super().__init__()
        self.kind, self.fixed = kind, bool(fixed)
        self.in_shape, self.out_shape = tuple(int(s) for s in in_shape), tuple(int(s) for s in out_shape)
        self.weight_exp = weight_exponent(weight_exp)
        self.spike_input = bool(spike_input)
        dt = np.int64 if self.fixed else np.float64
        if self.fixed and bias is not None:
            raise ValueError("a fixed-point SynapseKernel takes no bias: the IF neuron adds it after the 24-bit wrap")
        self.weight = None if weight is None else np.asarray(weight).astype(dt)
        self.bias = None if bias is None else np.asarray(bias).astype(dt)
        if kind == "conv":
            self.P = self.layer.make_params(self.weight, self.bias, fixed=self.fixed, weight_exp=self.weight_exp,
                                            stride=stride, padding=padding, groups=groups, in_shape=self.in_shape,
                                            out_shape=self.out_shape, spike_input=self.spike_input)
            self.weight, self.stride, self.padding, self.groups = (self.P[k] for k in ("weight", "stride", "padding",
                                                                                       "groups"))
            self.fanout = self.P["fanout"].reshape(-1)
        elif kind == "dense":
            self.fanout = ops.dense_fanout(self.weight).astype(np.float64)
            self.dense_macs = float(self.weight.size)
        elif kind != "flatten":
            raise ValueError(f"unknown synapse kind {kind!r}")

    @classmethod
    def from_params(cls, P: dict, fixed: bool):
        """The kernel of a ``conv`` layer; fixed point: without the bias (its IF neuron adds it). A conv with one
        weight set per spike input (format §5b) gets a :class:`SourceSynapseKernel`."""
        if "sources" in P:
            return SourceSynapseKernel(P, fixed)
        k = cls("conv", P["weight"], None if fixed else P["bias"], in_shape=P["in_shape"],
                out_shape=P["out_shape"], stride=P["stride"], padding=P["padding"], groups=P["groups"], fixed=fixed,
                weight_exp=P["weight_exp"], spike_input=P["spike_input"])
        k.P["in_burst"] = P.get("in_burst", 1)
        return k

    @property
    def pointwise(self) -> bool:
        """A 1×1 conv with stride 1, no padding, one group (what Lava's own Conv process can run for it)."""
        return self.kind == "conv" and self.weight.shape[2:] == (1, 1) and self.stride == (1, 1) \
            and self.padding == (0, 0) and self.groups == 1

    def step(self, t, x):
        """The current of one step (conv: ``Conv.current`` of ``W ⋆ x``; dense; flatten), counting synops and MACs."""
        if self.kind == "flatten":
            return x.reshape(self.out_shape)
        if self.kind == "conv":
            c = self.layer.counts(self.P, events(x, self.spike_input), 1,
                                  events(x, False) if self.P.get("in_burst", 1) > 1 else None)
            self.counts[0] += c["synops"]
            self.counts[1] += c["analog_macs"]
            self.counts[2] += c["synops_messages"]
            return self.layer.current(self.P, self.layer.accumulate(self.P, x), self.fixed)
        # dense (plain netx): every nonzero input × its non-zero synapses; a graded input also costs dense MACs
        self.counts[0] += synops(self.fanout, x != 0)
        self.counts[2] += synops(self.fanout, x != 0)
        if not self.spike_input:
            self.counts[1] += self.dense_macs
        acc = (ops.exact_matmul if self.fixed else np.matmul)(self.weight, x.reshape(-1))
        if self.fixed:
            return ops.loihi_current(acc, self.weight_exp)
        return acc if self.bias is None else acc + self.bias


class SourceSynapseKernel(Kernel):
    """A ``conv`` with several spike inputs and one weight set per input (format §5b, the event-driven patch
    merging): the current of its neurons is :meth:`mst_lava.export.layers.Conv.input_current` of the step's spike
    tensors (fixed: ``Σ_k loihi_current(W_k ⋆ s_k, e_k)``, what one bit-accurate Dense per source summing into
    one LIF computes; the IF neuron adds the bias), and its counts are ``Conv.counts`` (synaptic ops: Σ_k events of
    source k × their non-zero synapses in ``W_k``; no analog MACs)."""

    role = "synapse"  # its name in the builder's kernel graph
    count_names = ("synops", "analog_macs", "synops_messages")
    layer = LAYER_TYPES["conv"]

    def __init__(self, P: dict, fixed: bool = False):
        super().__init__()
        self.fixed = bool(fixed)
        self.P = P              # fixed point: input_current leaves the bias to the IF neuron (after the wrap)
        self.in_shapes = [Pk["in_shape"] for Pk in P["sources"]]
        self.out_shape = tuple(P["out_shape"])

    def step(self, t, *xs):
        """The summed current of the step's spike inputs (one weight set each), counting their synops."""
        xs = [np.asarray(x, dtype=self.dtype) for x in xs]
        graded = self.P.get("in_burst", 1) > 1
        c = self.layer.counts(self.P, [events(x, True) for x in xs], 1,
                              [events(x, False) for x in xs] if graded else None)
        self.counts[0] += c["synops"]
        self.counts[1] += c["analog_macs"]
        self.counts[2] += c["synops_messages"]
        return self.layer.input_current(self.P, xs, self.fixed)


# ----------------------------------------------------------------------------------------
# neurons and RSM

class IFKernel(Kernel):
    """Integrate-and-fire, reset by subtraction, ``v0 = vth/2`` (``vth//2`` fixed), spike on ``v >= vth``.

    Input: the current of the step; output: the 0/1 spikes (``graded=True``: spike · vth).
    Fixed point (Loihi's 24-bit compartment, ``netx_ops.if_step_fixed``): the input is the raw
    synaptic current; it wraps to 24 bits, ``bias`` is added and the voltage saturates at
    ±(2**23 − 1). With ``weight_exp`` (an int) the input is a raw synaptic accumulation (e.g.
    from Lava's own ``Conv`` process) and the current is ``netx_ops.loihi_current(acc,
    weight_exp)``. Float: ``v += I (+ bias)``.
    Counts: spikes, neuron updates, current wraps, voltage saturations (0 in float).
    """

    count_names = ("spikes", "neuron_updates", "current_overflows", "voltage_overflows", "messages")

    def __init__(self, shape, vth, *, fixed: bool = False, graded: bool = False, bias=None,
                 weight_exp: int | None = None, burst: int = 1):
        super().__init__()
        self.burst = int(burst)
        self.shape = tuple(int(s) for s in shape)
        self.fixed = bool(fixed)
        self.vth = int(vth) if self.fixed else float(vth)
        self.graded = bool(graded)
        self.bias = None if bias is None else np.asarray(bias).astype(self.dtype)
        self.weight_exp = None if weight_exp is None else weight_exponent(weight_exp)
        self.size = float(np.prod(self.shape))
        self.v = None
        self.reset()

    def reset(self):
        """Membranes back to vth/2 (vth // 2 in fixed point) for a new sample."""
        self.v = ops.if_init(self.vth, self.shape, np.zeros(0), self.fixed)

    def step(self, t, current):
        # one step of netx_ops.if_scan (what NetSim scans over T), its counts as if_scan counts them
        """One neuron step (``netx_ops.neuron_step``): spikes or graded payloads out, with spikes, messages,
        updates and overflows counted."""
        if self.fixed:
            current = np.asarray(current).astype(np.int64)
            if self.weight_exp is not None:
                current = ops.loihi_current(current, self.weight_exp)
        self.v, s, wraps, sats = ops.neuron_step(self.v, current, self.vth, self.fixed, self.bias, self.burst)
        self.counts[2] += wraps
        self.counts[3] += sats
        n_msg = np.count_nonzero(s)
        self.counts[0] += n_msg if self.burst == 1 else float(np.sum(s))    # unit spikes (a payload s counts s)
        self.counts[1] += self.size
        self.counts[4] += n_msg
        out = s.astype(self.dtype)
        self._count_out(out)
        return out * self.vth if self.graded else out


class RSMKernel(Kernel):
    """Random Spike Masking: drops each spike event of step ``t`` whose generator bits are below threshold.

    Keep-mask = ``netx_ops.rsm_keep(seed, site_id, block, t, index, threshold)``, the counter-
    based generator of :mod:`mst_lava.model.rsm`, with ``index`` the element index the torch
    site sees (``netx_ops.rsm_index``). Counts: events in, delivered, dropped.
    """

    count_names = ("events", "delivered", "dropped", "messages")

    def __init__(self, *, seed: int, site_id: int, block: int, index, threshold: int, fixed: bool = False,
                 cache_steps: int = 0):
        super().__init__()
        self.seed, self.site_id, self.block = int(seed), int(site_id), int(block)
        self.index = np.asarray(index, dtype=np.int64)
        self.threshold = int(threshold)
        self.fixed = bool(fixed)
        # masks are the same for every sample: cache them per step if they are small
        self._cache: dict[int, np.ndarray] = {}
        self._cache_ok = self.index.size * max(int(cache_steps), 1) <= (1 << 25)

    def keep(self, t: int) -> np.ndarray:
        """The keep-mask of step ``t`` (cached per step when small)."""
        k = self._cache.get(t)
        if k is None:
            k = ops.rsm_keep(self.seed, self.site_id, self.block, t, self.index, self.threshold)
            if self._cache_ok:
                self._cache[t] = k
        return k

    def step(self, t, s):
        """The step's spikes or payloads with the dropped messages zeroed whole; counts in, delivered, dropped,
        messages."""
        if self.threshold <= 0:
            n, m = float(np.sum(s)), np.count_nonzero(s)
            self.counts[:4] += (n, n, 0, m)
            self._count_out(s)
            return s
        keep = self.keep(t)
        out = s * keep                                 # a dropped message loses its whole payload
        n_in, n_out = float(np.sum(s)), float(np.sum(out))
        self.counts[:4] += (n_in, n_out, n_in - n_out, np.count_nonzero(out))
        self._count_out(out)
        return out


# ----------------------------------------------------------------------------------------
# residual stream, attention, readout

class ResidualKernel(Kernel):
    """Residual accumulation ``x(t) = Σ_k gain[k] · in_k(t)`` (float or int64), format §5a's stream affine on the
    first input: :class:`mst_lava.export.layers.Residual` (value and counts: synaptic ops = nonzero inputs of
    non-zero gains, ``residual_adds`` = their spike events)."""

    role = "residual"  # its name in the builder's kernel graph
    count_names = ("synops", "residual_adds", "synops_messages")
    layer = LAYER_TYPES["mst_residual"]

    def __init__(self, gains, spike_inputs, *, fixed: bool = False, scale=None, offset=None, scale_shift: int = 0):
        super().__init__()
        self.fixed = bool(fixed)
        aff = None if scale is None else {"scale": scale, "offset": offset, "shift": scale_shift}
        self.P = self.layer.make_params(gains, spike_inputs, self.fixed, aff)
        self.gains = self.P["gains"]

    @classmethod
    def from_params(cls, P: dict, fixed: bool):
        """The kernel of an ``mst_residual`` layer from its parameters."""
        a = P["affine"] or {}
        k = cls(P["gains"], P["spike_inputs"], fixed=fixed, scale=a.get("scale"), offset=a.get("offset"),
                scale_shift=a.get("shift", 0))
        k.P["in_burst"] = P.get("in_burst", 1)
        return k

    def step(self, t, *xs):
        """The stream value of one step, counting synops and residual adds."""
        xs = [np.asarray(x, dtype=self.dtype) for x in xs]
        c = self.layer.counts(self.P, *self.layer.input_events(self.P, xs))
        self.counts[0] += c["synops"]
        self.counts[1] += c["residual_adds"]
        self.counts[2] += c["synops_messages"]
        return self.layer.value(self.P, xs, self.fixed)


class QKKernel(Kernel):
    """The A-site current from the compensated spike product Q·Kᵀ, one step at a time.

    Keeps the cumulative delivered counts ``S_q``, ``S_k`` (grids ``(C, H, W)``) and the previous step's value;
    the value ``F(t)`` and the counts are :class:`mst_lava.export.layers.QK`'s (``netx_ops.qk_value_fixed`` /
    ``qk_value_float``, the step forms of NetSim's time-batched currents); current ``F(t) − F(t−1)``.
    Output shape ``(nW, h, N, N)``.
    """

    role = "qk"  # its name in the builder's kernel graph
    count_names = ("synops", "synops_messages")
    layer = LAYER_TYPES["mst_qk"]

    def __init__(self, P: dict, fixed: bool = False):
        super().__init__()
        self.P, self.fixed = P, bool(fixed)
        self.reset()

    def reset(self):
        """Forget the cumulative Q, K counts and the previous value (a new sample)."""
        self.Sq = self.Sk = None
        self.prev = None

    def step(self, t, q, k):
        """Add the step's Q and K payloads to the cumulative counts; the A current ``F(t) − F(t−1)``."""
        q, k = np.asarray(q).astype(np.int64), np.asarray(k).astype(np.int64)
        self.Sq = q if self.Sq is None else self.Sq + q
        self.Sk = k if self.Sk is None else self.Sk + k
        c = self.layer.step_counts(self.P, q, k)
        self.counts[0] += c["synops"]
        self.counts[1] += c["synops_messages"]
        F = self.layer.value(self.P, self.Sq, self.Sk, t + 1, self.fixed)
        cur = F if self.prev is None else F - self.prev
        self.prev = F
        return cur


class SoftmaxAVKernel(Kernel):
    """The AV-site current, one step at a time: cumulative delivered counts ``S_A`` (``(nW, h, N, N)``) and
    ``S_V`` (grid); ``G(t)`` and the counts are :class:`mst_lava.export.layers.SoftmaxAV`'s
    (``netx_ops.softmax_av_value_fixed`` / ``softmax_av_value_float``); ``I = G(t) − G(t−1)`` scattered back
    to the grid (``netx_ops.from_windows``). Counts: ``synops`` (each new V spike feeds the N rows of its
    window, each new A spike the d values of its row), ``softmax_elements``, ``av_macs``.
    """

    role = "softmax_av"  # its name in the builder's kernel graph
    count_names = ("synops", "softmax_elements", "av_macs", "synops_messages")
    layer = LAYER_TYPES["mst_softmax_av"]

    def __init__(self, P: dict, fixed: bool = False):
        super().__init__()
        if fixed and P.get("exp_table") is None:
            raise MSTError("the file has no /mst/exp_table for the integer softmax")
        self.P, self.fixed = P, bool(fixed)
        self.reset()

    def reset(self):
        """Forget the cumulative A, V counts and the previous value (a new sample)."""
        self.SA = self.SV = None
        self.prev = None

    def step(self, t, a, v):
        """Add the step's A and V payloads; the AV current ``G(t) − G(t−1)`` on the grid, with its counts."""
        a, v = np.asarray(a).astype(np.int64), np.asarray(v).astype(np.int64)
        self.SA = a if self.SA is None else self.SA + a
        self.SV = v if self.SV is None else self.SV + v
        G = self.layer.value(self.P, self.SA, self.SV, t + 1, self.fixed)
        cur = G if self.prev is None else G - self.prev
        self.prev = G
        c = self.layer.step_counts(self.P, a, v, 1)
        self.counts[0] += c["synops"]
        self.counts[1] += c["softmax_elements"]
        self.counts[2] += c["av_macs"]
        self.counts[3] += c["synops_messages"]
        return self.layer.to_grid(self.P, cur)


class ReadoutKernel(Kernel):
    """Readout ``y(t) = W · Σ_tokens x(t) + b`` of the last residual node (final BN, mean and head folded);
    with a token norm ``W · Σ_tokens LN(x(t)) + b`` (format §5a): :class:`mst_lava.export.layers.Readout`'s
    value and counts (synaptic ops: every nonzero input × the non-zero weights of its channel; analog MACs:
    ``W.size`` every step)."""

    role = "readout"  # its name in the builder's kernel graph
    count_names = ("synops", "analog_macs", "synops_messages")
    layer = LAYER_TYPES["mst_readout"]

    def __init__(self, P: dict, fixed: bool = False):
        super().__init__()
        self.P, self.fixed = P, bool(fixed)

    def step(self, t, x):
        """The class scores of one step from the stream, counting synops and MACs."""
        x = np.asarray(x, dtype=self.dtype)
        c = self.layer.counts(self.P, channel_events(x), 1)
        self.counts[0] += c["synops"]
        self.counts[1] += c["analog_macs"]
        self.counts[2] += c["synops_messages"]
        return self.layer.value(self.P, self.layer.pool(self.P, x), self.fixed)


# the kernel of each layer type of an MST file (the input layer is the encoder process)
KERNELS = {"conv": SynapseKernel, "mst_residual": ResidualKernel, "mst_qk": QKKernel,
           "mst_softmax_av": SoftmaxAVKernel, "mst_readout": ReadoutKernel}
