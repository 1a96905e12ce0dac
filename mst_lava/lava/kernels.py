"""Per-step kernels of the Lava ProcessModels: small state machines over numpy arrays.

Every Lava ProcessModel in :mod:`mst_lava.lava.processes` is a thin shell around one or
more of these kernels (Norse style: explicit state, a ``reset`` and a ``step``), so the
same arithmetic runs whether a layer is its own Lava process (``granularity="layer"``) or
one of many kernels fused into a wide :class:`~mst_lava.lava.processes.Segment` process
(``granularity="block"``, the fast default).

Semantics are those of docs/netx-mst-format.md; integer arithmetic is delegated to
:mod:`mst_lava.netx_ops` (the functions the torch fixed-point executor uses too), so fixed
point parity with torch holds by construction. Kernels work on one sample and one logical
step at a time: ``t`` is the 0-based step inside the sample (the torch step index);
formulas that count steps from 1 use ``t + 1``.

Each kernel owns a few counters (``counts``, a float64 vector named by ``count_names``)
that it adds to every step; the process model files them per sample into a Lava Var, so
every count reported comes from the Lava run itself.
"""
from __future__ import annotations

import numpy as np

from mst_lava import netx_ops as ops

_EXACT_F64 = float(2 ** 52)


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
            events = np.asarray(out).reshape(-1) != 0
            first = len(self.count_names) - len(self._out_fanouts)
            for j, fan in enumerate(self._out_fanouts):
                self.counts[first + j] += float(fan @ events)

    def reset(self) -> None:
        """Start a new sample (state back to its initial value)."""

    def step(self, t: int, *xs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def dtype(self):
        return np.int64 if self.fixed else np.float64


# ----------------------------------------------------------------------------------------
# synapses

class SynapseKernel(Kernel):
    """conv / dense / flatten layer: the input current of the layer's neurons (or the flattened input).

    conv:  float ``I = W_f ⋆ x + b_f``; fixed the raw current ``netx_ops.loihi_current(W ⋆ x,
    weight_exp)`` (int64; the IF neuron wraps it to 24 bits and adds the bias, as Loihi's
    compartment does, so a fixed SynapseKernel takes no bias)
    dense: the same with a matrix product; flatten: C-order reshape.

    ``spike_input``: the input is a 0/1 spike tensor rather than a graded value (which also
    costs dense multiply-accumulates). Synaptic ops (format §7): every nonzero input element ×
    its non-zero outgoing synapses (``netx_ops.conv_fanout`` / ``dense_fanout`` of the weights
    the kernel runs).
    """

    count_names = ("synops", "analog_macs")

    def __init__(self, kind: str, weight=None, bias=None, *, in_shape, out_shape, stride=(1, 1),
                 padding=(0, 0), groups: int = 1, fixed: bool = False, weight_exp: int = 0,
                 spike_input: bool = True):
        super().__init__()
        self.kind, self.fixed = kind, bool(fixed)
        self.in_shape, self.out_shape = tuple(int(s) for s in in_shape), tuple(int(s) for s in out_shape)
        self.stride = tuple(int(s) for s in np.broadcast_to(np.asarray(stride).reshape(-1), (2,)))
        self.padding = tuple(int(s) for s in np.broadcast_to(np.asarray(padding).reshape(-1), (2,)))
        self.groups = int(groups)
        self.weight_exp = int(weight_exp)
        self.spike_input = bool(spike_input)
        dt = np.int64 if self.fixed else np.float64
        if self.fixed and bias is not None:
            raise ValueError("a fixed-point SynapseKernel takes no bias: the IF neuron adds it after the 24-bit wrap")
        self.weight = None if weight is None else np.asarray(weight).astype(dt)
        self.bias = None if bias is None else np.asarray(bias).astype(dt)
        self._mode = None
        self._wf: dict = {}
        if kind == "conv":
            Co, Cg, kH, kW = self.weight.shape
            C, H, W = self.in_shape
            self.fanout = ops.conv_fanout(self.in_shape, self.weight, self.stride, self.padding,
                                          self.groups).astype(np.float64).reshape(-1)
            self.dense_macs = float(np.prod(self.out_shape)) * Cg * kH * kW
            if (kH, kW) == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0):
                if self.groups == 1:
                    self._mode, self._w2 = "pointwise", self.weight[:, :, 0, 0]
                elif self.groups == C == Co:
                    self._mode, self._w2 = "depthwise", self.weight[:, 0, 0, 0].reshape(C, 1, 1)
            elif (self.stride == (kH, kW) and self.padding == (0, 0) and self.groups == 1
                  and H % kH == 0 and W % kW == 0):
                self._mode = "patch"          # non-overlapping k×k, stride k: one matrix product
                self._w2 = self.weight.reshape(Co, Cg * kH * kW)
            self._wabs = float(np.abs(self.weight).reshape(Co, -1).sum(axis=1).max(initial=0))
            if self.bias is not None:
                self._bias3 = self.bias.reshape(-1, 1, 1)
        elif kind == "dense":
            self.fanout = ops.dense_fanout(self.weight).astype(np.float64)
            self.dense_macs = float(self.weight.size)
            self._wabs = float(np.abs(self.weight).sum(axis=1).max(initial=0))
        elif kind != "flatten":
            raise ValueError(f"unknown synapse kind {kind!r}")

    # exact integer products through float64 BLAS when every partial sum stays below 2**52
    # (integers up to 2**53 are exact in float64, so the sum needs no rounding)
    def _matmul(self, w, x):
        if not self.fixed:
            return w @ x
        if self.spike_input or float(np.abs(x).max(initial=0)) * self._wabs < _EXACT_F64:
            wf = self._wf.get(id(w))
            if wf is None:
                wf = self._wf[id(w)] = w.astype(np.float64)
            return (wf @ x.astype(np.float64)).astype(np.int64)
        return ops.exact_matmul(w, x)

    def _conv(self, x):
        C, H, W = self.in_shape
        if self._mode == "pointwise":
            y = self._matmul(self._w2, x.reshape(C, H * W)).reshape(-1, H, W)
        elif self._mode == "depthwise":
            y = self._w2 * x
        elif self._mode == "patch":
            Co, Cg, kH, kW = self.weight.shape
            Ho, Wo = H // kH, W // kW
            cols = x.reshape(C, Ho, kH, Wo, kW).transpose(0, 2, 4, 1, 3).reshape(C * kH * kW, Ho * Wo)
            y = self._matmul(self._w2, cols).reshape(Co, Ho, Wo)
        else:
            y = ops.conv2d(x[None], self.weight, None, self.stride, self.padding, self.groups)[0]
        return y

    def step(self, t, x):
        if self.kind == "flatten":
            return x.reshape(self.out_shape)
        # synaptic ops: every nonzero input element × its non-zero synapses (as the torch executor counts);
        # a graded input also costs dense multiply-accumulates
        self.counts[0] += float(self.fanout @ (x.reshape(-1) != 0))
        if not self.spike_input:
            self.counts[1] += self.dense_macs
        if self.kind == "conv":
            acc = self._conv(x)
            bias = None if self.bias is None else self._bias3
        else:
            acc = self._matmul(self.weight, x.reshape(-1))
            bias = self.bias
        if self.fixed:
            return ops.loihi_current(acc, self.weight_exp)
        return acc if bias is None else acc + bias


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

    count_names = ("spikes", "neuron_updates", "current_overflows", "voltage_overflows")

    def __init__(self, shape, vth, *, fixed: bool = False, graded: bool = False, bias=None,
                 weight_exp: int | None = None):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.fixed = bool(fixed)
        self.vth = int(vth) if self.fixed else float(vth)
        self.graded = bool(graded)
        self.bias = None if bias is None else np.asarray(bias).astype(self.dtype)
        self.weight_exp = None if weight_exp is None else int(weight_exp)
        self.size = float(np.prod(self.shape))
        self.v = None
        self.reset()

    def reset(self):
        self.v = ops.if_init(self.vth, self.shape, np.zeros(0), self.fixed)

    def step(self, t, current):
        if self.fixed:
            raw = np.asarray(current).astype(np.int64)
            if self.weight_exp is not None:
                raw = ops.loihi_current(raw, self.weight_exp)
            u = ops.wrap24(raw)
            self.counts[2] += np.count_nonzero(u != raw)
            self.v, s, sat = ops.if_step_fixed(self.v, u, self.vth, self.bias)
            self.counts[3] += np.count_nonzero(sat)
        else:
            if self.bias is not None:
                current = current + self.bias
            self.v, s = ops.if_step(self.v, current, self.vth)
        self.counts[0] += np.count_nonzero(s)
        self.counts[1] += self.size
        out = s.astype(self.dtype)
        self._count_out(out)
        return out * self.vth if self.graded else out


class RSMKernel(Kernel):
    """Random Spike Masking: drops each spike event of step ``t`` whose generator bits are below threshold.

    Keep-mask = ``netx_ops.rsm_keep(seed, site_id, block, t, index, threshold)``, the counter-
    based generator of :mod:`mst_lava.model.rsm`, with ``index`` the element index the torch
    site sees (``netx_ops.rsm_index``). Counts: events in, delivered, dropped.
    """

    count_names = ("events", "delivered", "dropped")

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
        k = self._cache.get(t)
        if k is None:
            k = ops.rsm_keep(self.seed, self.site_id, self.block, t, self.index, self.threshold)
            if self._cache_ok:
                self._cache[t] = k
        return k

    def step(self, t, s):
        if self.threshold <= 0:
            n = np.count_nonzero(s)
            self.counts[0] += n
            self.counts[1] += n
            self._count_out(s)
            return s
        keep = self.keep(t)
        out = s * keep
        n_in, n_out = np.count_nonzero(s), np.count_nonzero(out)
        self.counts[:3] += (n_in, n_out, n_in - n_out)
        self._count_out(out)
        return out


# ----------------------------------------------------------------------------------------
# residual stream, attention, readout

class ResidualKernel(Kernel):
    """Residual accumulation ``x(t) = Σ_k gain[k] · in_k(t)`` (float or int64); counts synaptic ops (nonzero
    inputs of non-zero gains) and spike additions."""

    count_names = ("synops", "residual_adds")

    def __init__(self, gains, spike_inputs, *, fixed: bool = False, scale=None, offset=None, scale_shift: int = 0):
        super().__init__()
        self.fixed = bool(fixed)
        self.gains = [int(g) if self.fixed else float(g) for g in np.asarray(gains).reshape(-1)]
        self.spike_inputs = [bool(s) for s in spike_inputs]
        # extension version 2 (format §5a): the first input enters as scale ⊙ x + offset (a BatchNorm on the
        # stream); fixed: floor(scale_mant ⊙ x / 2**scale_shift) + offset
        self.scale = None if scale is None else np.asarray(scale).astype(self.dtype).reshape(-1)
        self.offset = None if offset is None else np.asarray(offset).astype(self.dtype).reshape(-1)
        self.scale_shift = int(scale_shift)

    def step(self, t, *xs):
        acc = None
        for j, (g, x, sp) in enumerate(zip(self.gains, xs, self.spike_inputs)):
            if g != 0:                     # an input with gain 0 has no synapse: no op (format §7)
                nz = np.count_nonzero(x)
                self.counts[0] += nz
                if sp:
                    self.counts[1] += nz
            term = x * g if g != 1 else x
            if j == 0 and self.scale is not None:
                term = ops.stream_affine_fixed(term, self.scale, self.scale_shift, self.offset) if self.fixed else \
                    ops.stream_affine_float(term, self.scale, self.offset)
            acc = term.astype(self.dtype) if acc is None else acc + term
        return acc


class QKKernel(Kernel):
    """The A-site current from the spike product Q·Kᵀ with expectation compensation.

    Keeps the cumulative delivered counts ``S_q``, ``S_k`` (grids ``(C, H, W)``);
    ``P(t) = S_q(t)·S_k(t)ᵀ`` per shifted window and head (``netx_ops.to_windows``):
    float ``I = c·(P(t)/t − P(t−1)/(t−1))``; fixed ``F = floor(c_mant·P/(t·2**c_shift))``,
    ``I = F(t) − F(t−1)`` (t from 1). Output shape ``(nW, h, N, N)``.
    Counts: ``synops`` = accumulator updates of an event-driven P (each new Q or K spike
    meets the N tokens of its window and head).
    """

    count_names = ("synops",)

    def __init__(self, *, window: int, shift: int, heads: int, fixed: bool = False, scale: float = 1.0,
                 scale_mant: int = 0, scale_shift: int = 0):
        super().__init__()
        self.w, self.shift, self.heads = int(window), int(shift), int(heads)
        self.fixed = bool(fixed)
        self.scale, self.mant, self.sh = float(scale), int(scale_mant), int(scale_shift)
        self.N = self.w * self.w
        self.reset()

    def reset(self):
        self.Sq = self.Sk = None
        self.prev = None

    def step(self, t, q, k):
        self.Sq = q.astype(np.int64) if self.Sq is None else self.Sq + q.astype(np.int64)
        self.Sk = k.astype(np.int64) if self.Sk is None else self.Sk + k.astype(np.int64)
        self.counts[0] += (np.count_nonzero(q) + np.count_nonzero(k)) * self.N
        qw = ops.to_windows(self.Sq, self.w, self.shift, self.heads)
        kw = ops.to_windows(self.Sk, self.w, self.shift, self.heads)
        t1 = t + 1
        if self.fixed:
            P = np.matmul(qw, kw.swapaxes(-1, -2))
            F = ops.mul_shift_div(P, self.mant, self.sh, t1)
            cur = F if self.prev is None else F - self.prev
            self.prev = F
            return cur
        P = np.matmul(qw.astype(np.float64), kw.swapaxes(-1, -2).astype(np.float64))
        Pt = P / t1
        cur = (Pt if self.prev is None else Pt - self.prev) * self.scale
        self.prev = Pt
        return cur


class SoftmaxAVKernel(Kernel):
    """The AV-site current: softmax (relative-position bias, shift mask) of the A rates, times V.

    Cumulative delivered counts ``S_A`` (``(nW, h, N, N)``) and ``S_V`` (grid, windowed to
    ``(nW, h, N, d)``); ``G(t) = softmax(z(t)) @ V(t)``, ``I = G(t) − G(t−1)`` scattered back
    to the grid (``netx_ops.from_windows``). Fixed: ``z = (a_mult·S_A)//t + B + M``,
    ``p = netx_ops.softmax_fixed(z)``, ``G = floor(p·S_V·v_mant / 2**(prob_bits+v_shift))``.
    Counts: ``synops`` (each new V spike feeds the N rows of its window, each new A spike
    the d values of its row), ``softmax_elements`` (exponentials evaluated), ``av_macs``.
    """

    count_names = ("synops", "softmax_elements", "av_macs")

    def __init__(self, *, window: int, shift: int, heads: int, grid, fixed: bool = False,
                 theta_a: float = 1.0, theta_v: float = 1.0, bias=None, mask=None,
                 a_mult: int = 0, v_mant: int = 0, v_shift: int = 0, exp_table=None,
                 prob_bits: int = ops.PROB_BITS):
        super().__init__()
        self.w, self.shift, self.heads = int(window), int(shift), int(heads)
        self.H, self.W = (int(grid[0]), int(grid[1]))
        self.fixed = bool(fixed)
        self.theta_a, self.theta_v = float(theta_a), float(theta_v)
        dt = np.int64 if self.fixed else np.float64
        self.bias = np.asarray(bias).astype(dt)
        self.mask = None if mask is None else np.asarray(mask).astype(dt)
        if self.mask is not None:
            self._mask4 = self.mask.reshape(self.mask.shape[0], 1, self.mask.shape[1], self.mask.shape[2])
        self.a_mult, self.v_mant, self.v_shift = int(a_mult), int(v_mant), int(v_shift)
        self.exp_table = None if exp_table is None else np.asarray(exp_table, dtype=np.int64)
        self.prob_bits = int(prob_bits)
        self.reset()

    def reset(self):
        self.SA = self.SV = None
        self.prev = None

    def step(self, t, a, v):
        self.SA = a.astype(np.int64) if self.SA is None else self.SA + a.astype(np.int64)
        self.SV = v.astype(np.int64) if self.SV is None else self.SV + v.astype(np.int64)
        svw = ops.to_windows(self.SV, self.w, self.shift, self.heads)
        t1 = t + 1
        if self.fixed:
            z = (self.SA * self.a_mult) // t1 + self.bias
            if self.mask is not None:
                z = z + self._mask4
            p = ops.softmax_fixed(z, self.exp_table, self.prob_bits)
            G = ops.mul_shift_div(ops.exact_matmul(p, svw), self.v_mant, self.prob_bits + self.v_shift)
        else:
            z = self.SA * (self.theta_a / t1) + self.bias
            if self.mask is not None:
                z = z + self._mask4
            z = z - z.max(axis=-1, keepdims=True)
            e = np.exp(z)
            p = e / e.sum(axis=-1, keepdims=True)
            G = p @ (svw * self.theta_v)
        cur = G if self.prev is None else G - self.prev
        self.prev = G
        d = svw.shape[-1]
        self.counts[0] += np.count_nonzero(v) * self.w * self.w + np.count_nonzero(a) * d
        self.counts[1] += z.size
        self.counts[2] += float(p.size) * d
        return ops.from_windows(cur, self.w, self.shift, self.H, self.W)


class ReadoutKernel(Kernel):
    """Readout ``y(t) = W · Σ_tokens x(t) + b`` of the last residual node (final BN, mean and head folded);
    with ``norm_eps`` ``y(t) = W · Σ_tokens LN(x(t)) + b`` (``netx_ops.norm_readout_input``, format §5a).

    Synaptic ops: every nonzero input element × the non-zero weights of its channel
    (``netx_ops.dense_fanout``, format §7); analog MACs: ``W.size`` every step."""

    count_names = ("synops", "analog_macs")

    def __init__(self, weight, bias, *, fixed: bool = False, norm_eps: float | None = None, stream_unit: float = 1.0,
                 norm_frac_bits: int | None = None):
        super().__init__()
        self.fixed = bool(fixed)
        dt = np.int64 if self.fixed else np.float64
        self.weight = np.asarray(weight).astype(dt)
        self.bias = np.asarray(bias).astype(dt).reshape(-1)
        self.macs = float(self.weight.size)
        self.fanout = ops.dense_fanout(self.weight).astype(np.float64)
        # extension version 2 (format §5a): a LayerNorm per token and step before the token sum (host, float64)
        self.norm = None if norm_eps is None else dict(
            eps=float(norm_eps), unit=float(stream_unit) if self.fixed else 1.0,
            frac_bits=int(norm_frac_bits) if self.fixed else None)

    def step(self, t, x):
        if self.norm is not None:
            pooled = ops.norm_readout_input(x, **self.norm)
        else:
            pooled = x.reshape(x.shape[0], -1).sum(axis=1) if x.ndim > 1 else x
        events = (x != 0).reshape(x.shape[0], -1).sum(axis=1) if x.ndim > 1 else (x != 0)
        self.counts[0] += float(self.fanout @ events)
        self.counts[1] += self.macs
        if self.fixed:
            return ops.exact_matmul(self.weight, pooled.astype(np.int64)) + self.bias
        return self.weight @ pooled + self.bias
