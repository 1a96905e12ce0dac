"""Arithmetic shared by the torch executor (`mst_lava.export.netsim`) and the Lava ProcessModels.

Every function here takes numpy arrays or torch tensors (CPU or CUDA) and returns the same
kind, with bit-identical integer results on all of them: that is what makes torch-vs-Lava
spike parity hold by construction. The semantics are specified in docs/netx-mst-format.md;
this module is their single implementation.

Conventions
    * integer ("fixed") values are int64; float values float64 (numpy) or the caller's dtype.
    * Time-batched functions take tensors whose axis 0 is time (T, ...), t counted from 1.
    * Integer products that torch cannot do in int64 on CUDA (matmul, conv) run in float64
      with every magnitude < 2**53, so they are exact and then cast back to int64.
    * Floor semantics everywhere (``//`` and arithmetic shifts floor in numpy and torch).
"""
from __future__ import annotations

import math
import sys

import numpy as np

from mst_lava.model import rsm as _rsm


class _Torch:
    """``torch``, imported on first use. This module never imports torch itself: a caller that passes
    tensors has imported it already, and the Lava runtime (numpy only) runs without it."""

    def __getattr__(self, name):
        import torch
        return getattr(torch, name)


torch = _Torch()

# fixed-point constants of format version 2 (docs/netx-mst-format.md, "Loihi limits")
#
# Neuron layers (conv/dense + IF, and the A/AV neurons) follow the bit widths of Loihi as Lava's
# own bit-accurate models state them (lava/proc/dense/models.py PyDenseModelBitAcc,
# lava/proc/lif/models.py PyLifModelBitAcc): 8-bit signed weight mantissas, a per-layer weight
# exponent, the synaptic input left-shifted by 6 into the 24-bit current, a 13-bit signed bias
# mantissa with a 3-bit exponent, a 17-bit threshold mantissa left-shifted by 6, 24-bit current
# (wraps around) and voltage (saturates).
INPUT_FRAC_BITS = 8          # analog input: x_int = round(x * 2**8), |x_int| <= 32767
WEIGHT_BITS = 8              # signed weight mantissas in [-127, 127]
WEIGHT_MANT_MAX = 127
WEIGHT_EXP_MIN = -8          # Loihi weight exponent range (4-bit signed)
WEIGHT_EXP_MAX = 7
ACT_SHIFT = 6                # synaptic input << 6 into the current (Lava: act_shift)
VTH_SHIFT = 6                # threshold = vThMant << 6 (Lava: vth_shift)
# what a patch merging reads (format §5b): the graded residual stream, or the spike trains it sums
MERGE_INPUTS = ("graded", "events")
VTH_MANT_BITS = 17           # vThMant in [1, 2**17 - 1] (unsigned 17 bits)
VTH_MANT_MAX = (1 << VTH_MANT_BITS) - 1
BIAS_MANT_BITS = 13          # bias mantissa in [-4095, 4095] (signed 13 bits)
BIAS_MANT_MAX = (1 << (BIAS_MANT_BITS - 1)) - 1
BIAS_EXP_MIN = 0             # bias = mant << bias_exp, bias_exp unsigned 3 bits
BIAS_EXP_MAX = 7
STATE_BITS = 24              # current and voltage: 24-bit signed
CURRENT_MIN = -(1 << (STATE_BITS - 1))           # the current wraps into [-2**23, 2**23)
CURRENT_MAX = (1 << (STATE_BITS - 1)) - 1
VOLTAGE_MAX = (1 << (STATE_BITS - 1)) - 1        # the voltage saturates at ±(2**23 - 1)
PAYLOAD_BITS = 24            # graded spike payloads (input image, residual stream): |x| < 2**23
PAYLOAD_MAX = (1 << (PAYLOAD_BITS - 1)) - 1
VTH_MANT_TARGET = 1 << 12   # exporter: vThMant <= 2**12 where it can (>= 32 thresholds of voltage range)
# readout (host / embedded processor, int64; not a Loihi neuron)
READOUT_BIAS_BITS = 40       # |bias| < 2**40
READOUT_MAX_WEIGHT_EXP = 16
MAX_WEIGHT_EXP = READOUT_MAX_WEIGHT_EXP
# dynamic products and softmax (embedded processors, int64)
DYN_VTH = 1 << 16            # effective threshold of neurons fed by dynamic products (A, AV): vThMant 2**10
SCALE_BITS = 15              # mantissa bits of the Q·Kᵀ scale constant: [2**14, 2**15)
V_BITS = 12                  # mantissa bits of θ_V in the softmax·V op: [2**11, 2**12)
LOGIT_FRAC_BITS = 8          # softmax logits in units of 2**-8
EXP_OUT_BITS = 15            # exp table values in units of 2**-15
PROB_BITS = 15               # probabilities in units of 2**-15
MASK_VALUE = -100.0          # shift mask value of the model
RESIDUAL_GAIN_BITS = 15      # format limit: residual gains < 2**15
RESIDUAL_EXPORT_GAIN_BITS = 12   # the exporter maps a stage's largest spike gain to 2**12 - 1
RESIDUAL_MIN_GAIN_BITS = 6       # ... or to 2**b - 1 with fewer bits b (not below 6) when the stage's payload
                                 # would not fit 24 bits (stream affines of the official topology, section 5a)
# extension version 2 (the official MST topology, docs/netx-mst-format.md section 5a)
STREAM_SCALE_BITS = 15           # per-channel stream scale: |scale_mant| < 2**15, applied as floor(m·x / 2**shift)
STREAM_SCALE_MAX_SHIFT = 48
NORM_FRAC_BITS = 12              # fixed readout with a token LayerNorm: normalized values in units of 2**-12
NORM_MAX_FRAC_BITS = 20


# ----------------------------------------------------------------------------------------
# numpy / torch dispatch (tiny on purpose)

def is_torch(x) -> bool:
    t = sys.modules.get("torch")          # no torch imported: x cannot be a tensor
    return t is not None and isinstance(x, t.Tensor)


def like(a, ref, dtype: str | None = None):
    """``a`` (numpy array / scalar / tensor) as the same kind (and device) as ``ref``."""
    if is_torch(ref):
        dt = {"int64": torch.int64, "float64": torch.float64, "bool": torch.bool, None: None}[dtype]
        if is_torch(a):
            return a.to(device=ref.device, dtype=dt or a.dtype)
        arr = np.asarray(a)
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(ref.device)
        return t.to(dt) if dt is not None else t
    out = a.detach().cpu().numpy() if is_torch(a) else np.asarray(a)
    return out.astype(dtype) if dtype is not None else out


def as_int64(x):
    """``x`` as int64 (itself when it is already: do not write into the result)."""
    return x.to(torch.int64) if is_torch(x) else np.asarray(x).astype(np.int64, copy=False)


def as_float64(x):
    """``x`` as float64 (itself when it is already: do not write into the result)."""
    return x.to(torch.float64) if is_torch(x) else np.asarray(x).astype(np.float64, copy=False)


def permute(x, axes):
    return x.permute(*axes) if is_torch(x) else np.transpose(x, axes)


def roll2(x, s: int, axes=(-2, -1)):
    """Cyclic shift by ``s`` along two axes (torch.roll semantics: out[i] = in[i - s])."""
    if s == 0:
        return x
    if is_torch(x):
        return torch.roll(x, shifts=(s, s), dims=tuple(axes))
    return np.roll(x, (s, s), axis=tuple(axes))


def cumsum0(x):
    return torch.cumsum(x, dim=0) if is_torch(x) else np.cumsum(x, axis=0)


def diff0(F):
    """First differences along time with F(0) = 0: out[0] = F[0], out[t] = F[t] - F[t-1]."""
    if is_torch(F):
        return torch.cat([F[:1], F[1:] - F[:-1]], dim=0)
    return np.concatenate([F[:1], F[1:] - F[:-1]], axis=0)


def amax(x, axis=-1):
    return x.amax(dim=axis, keepdim=True) if is_torch(x) else x.max(axis=axis, keepdims=True)


def xsum(x, axis=-1, keepdims=True):
    return x.sum(dim=axis, keepdim=keepdims) if is_torch(x) else x.sum(axis=axis, keepdims=keepdims)


def minimum(x, v):
    return torch.clamp(x, max=v) if is_torch(x) else np.minimum(x, v)


def clip(x, lo, hi):
    return torch.clamp(x, lo, hi) if is_torch(x) else np.clip(x, lo, hi)


_EXACT_F64 = 2.0 ** 52         # float64 holds every integer below 2**53: sums below this need no rounding


def exact_matmul(a, b):
    """Integer matmul, exact: float64 in torch (caller keeps |values| < 2**53); numpy: float64 BLAS where
    every partial sum provably stays below 2**52 (``max_i Σ_k |a[i, k]| · max |b|``), else int64."""
    if is_torch(a):
        return torch.round(a.to(torch.float64) @ b.to(torch.float64)).to(torch.int64)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.size and b.size and float(np.abs(a).sum(axis=-1).max()) * float(np.abs(b).max()) < _EXACT_F64:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a, b)


def time_index(T: int, ref, ndim: int):
    """t = 1..T as an int64 array shaped (T, 1, ..., 1) with ``ndim`` dims, same kind as ref."""
    t = np.arange(1, T + 1, dtype=np.int64).reshape((T,) + (1,) * (ndim - 1))
    return like(t, ref, "int64")


# ----------------------------------------------------------------------------------------
# scalars: mantissa/shift representation of positive constants

def mant_shift(value: float, bits: int) -> tuple[int, int]:
    """value ≈ mant · 2**-shift with mant in [2**(bits-1), 2**bits) (value > 0)."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"mant_shift needs a positive finite value, got {value}")
    e = math.floor(math.log2(value))
    shift = (bits - 1) - e
    mant = int(round(value * 2.0 ** shift))
    if mant >= (1 << bits):
        mant //= 2
        shift -= 1
    return mant, shift


def mul_shift_div(x, mant: int, shift: int, den=1):
    """floor(x · mant · 2**-shift / den) exactly, for int64 x and positive int64 ``den``."""
    num = x * mant
    if shift >= 0:
        return num // (den * (1 << shift))
    return (num * (1 << -shift)) // den


# ----------------------------------------------------------------------------------------
# input encoding, IF neuron

def quantize_input(x, frac_bits: int = INPUT_FRAC_BITS):
    """Analog input → int64 ``clip(round_half_even(x · 2**frac_bits), -32768, 32767)``."""
    if is_torch(x):
        return torch.clamp(torch.round(x.to(torch.float64) * 2.0 ** frac_bits), -32768, 32767).to(torch.int64)
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 2.0 ** frac_bits), -32768, 32767).astype(np.int64)


def if_init(vth, shape, ref, fixed: bool):
    """Initial membrane potential: vth // 2 (fixed) or vth / 2 (float), broadcast to ``shape``."""
    if is_torch(ref):
        dt = torch.int64 if fixed else ref.dtype if ref.is_floating_point() else torch.float64
        v = torch.zeros(shape, dtype=dt, device=ref.device)
    else:
        v = np.zeros(shape, dtype=np.int64 if fixed else np.float64)
    return v + (vth // 2 if fixed else vth / 2)


def shift_exp(x, e):
    """``x · 2**e`` for e >= 0, ``floor(x / 2**-e)`` for e < 0 (an arithmetic shift, int64). ``e`` an int, or one
    exponent per output channel of ``x`` (..., C, H, W) (a (C,) array or tensor: per-channel weight exponents)."""
    if (e.numel() if is_torch(e) else np.size(e)) == 1:
        e = int(e.reshape(-1)[0]) if is_torch(e) else int(np.asarray(e).reshape(-1)[0])
        return x * (1 << e) if e >= 0 else x >> (-e)
    if is_torch(x):
        e = torch.as_tensor(e, device=x.device, dtype=torch.int64).reshape(-1, 1, 1)
        return (x << e.clamp(min=0)) >> (-e).clamp(min=0)
    e = np.asarray(e, dtype=np.int64).reshape(-1, 1, 1)
    return np.right_shift(np.left_shift(x, np.maximum(e, 0)), np.maximum(-e, 0))


def loihi_current(acc, weight_exp: int):
    """Synaptic current of a fixed neuron layer before the 24-bit wrap, in membrane units:
    ``shift_exp(acc, weight_exp) · 2**6`` (Lava: Dense's weight exponent, then LIF's act_shift)."""
    return shift_exp(acc, weight_exp) * (1 << ACT_SHIFT)


def wrap24(x):
    """Two's-complement wrap of int64 values into the 24-bit signed range [-2**23, 2**23)."""
    half = 1 << (STATE_BITS - 1)
    return ((x + half) & ((1 << STATE_BITS) - 1)) - half


def out_of_current_range(x):
    """Elements a 24-bit current cannot hold (they wrap): a bool array/tensor."""
    return (x < CURRENT_MIN) | (x > CURRENT_MAX)


def saturate24(v):
    """Clip a voltage to the 24-bit range ±(2**23 − 1) (Lava's bit-accurate LIF clips v)."""
    return clip(v, -VOLTAGE_MAX, VOLTAGE_MAX)


def fire(v, vth, burst: int = 1):
    """The spikes of membrane ``v`` against threshold ``vth`` and the reset by subtraction: ``(v, s)``.

    Binary (``burst`` 1): ``s = v >= vth`` (bool), ``v -= s·vth``. Burst/graded (B > 1, the ``IF_BURST``
    neuron, docs/netx-mst-format.md §2): ``s = clip(floor(v / vth), 0, B)`` spikes in one payload (int64 in
    fixed point, where ``floor`` is ``//``; the float dtype in float), ``v -= s·vth``."""
    if burst == 1:
        s = v >= vth
        return (torch.where(s, v - vth, v) if is_torch(v) else np.where(s, v - vth, v)), s
    if is_torch(v):
        s = torch.div(v, vth, rounding_mode="floor") if not v.is_floating_point() else torch.floor(v / vth)
        s = s.clamp_(0, burst)
    else:
        s = np.floor_divide(v, vth) if v.dtype.kind in "iu" else np.floor(v / vth)
        s = np.clip(s, 0, burst)
    return v - s * vth, s


def if_step(v, current, vth, burst: int = 1):
    """One float IF step with reset by subtraction: v += I; then :func:`fire`. Returns (v, s)."""
    return fire(v + current, vth, burst)


def if_step_fixed(v, current, vth: int, bias=None, burst: int = 1):
    """One fixed-point (Loihi 24-bit) IF step. ``current`` is the wrapped 24-bit current
    (``wrap24`` of the raw synaptic current), ``bias`` the integer bias (or None):

        v = saturate24(v + current + bias); then fire (s = v >= vth, or the burst payload); v -= s·vth

    Returns (v, s, saturated) with ``saturated`` the bool mask of clipped voltages."""
    u = v + current
    if bias is not None:
        u = u + bias
    v = saturate24(u)
    sat = v != u
    v, s = fire(v, vth, burst)
    return v, s, sat


def neuron_step(v, current, vth, fixed: bool, bias=None, burst: int = 1):
    """One step of an IF population (binary or burst), with the overflow events the format counts (§2, §7):
    fixed point, ``current`` is the raw synaptic current, which wraps to 24 bits (a wrap event per element that
    did), then :func:`if_step_fixed` (a saturation event per clipped voltage); float, ``v += I (+ bias)`` and
    :func:`if_step`. Returns ``(v, s, wraps, saturations)``, the two counts as 0-d arrays/tensors (0 in float)."""
    if fixed:
        u = wrap24(current)
        v, s, sat = if_step_fixed(v, u, vth, bias, burst)
        return v, s, (u != current).sum(), sat.sum()
    v, s = if_step(v, current if bias is None else current + bias, vth, burst)
    return v, s, 0, 0


def if_scan(currents, vth, fixed: bool, T: int | None = None, v0=None, bias=None, burst: int = 1):
    """Run IF over time. ``currents`` is (T or 1, ...) (1 = the same current every step).

    Fixed point: ``currents`` are raw int64 synaptic currents; each step's current wraps to 24
    bits, ``bias`` (broadcastable) is added, the voltage saturates (:func:`if_step_fixed`).
    Returns (spikes (T, ...), final v, overflows) where spikes are bool (binary) or the payloads
    (``burst`` > 1) and ``overflows`` is ``{"current_overflows": n, "voltage_overflows": n}``
    (elements × steps; 0 in float). ``vth`` a scalar (or broadcastable array).
    """
    T = currents.shape[0] if T is None else T
    shape = tuple(currents.shape[1:])
    v = if_init(vth, shape, currents, fixed) if v0 is None else v0
    out = []
    n_cur = n_volt = 0                                     # tensors on torch: no device sync per step
    for t in range(T):
        v, s, wraps, sats = neuron_step(v, currents[t if currents.shape[0] > 1 else 0], vth, fixed, bias, burst)
        n_cur, n_volt = n_cur + wraps, n_volt + sats
        out.append(s)
    spikes = torch.stack(out, 0) if is_torch(currents) else np.stack(out, 0)
    return spikes, v, {"current_overflows": int(n_cur), "voltage_overflows": int(n_volt)}


# ----------------------------------------------------------------------------------------
# convolution (both kinds; exact for integers)

def conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0), groups: int = 1):
    """Correlation (torch conv2d semantics) of x (B, Cin, H, W) with weight (Cout, Cin/g, kH, kW).

    Integer inputs give exact int64 results (float64 inside on torch); float inputs keep
    their dtype on torch, float64 on numpy.
    """
    sy, sx = (int(stride[0]), int(stride[1]))
    py, px = (int(padding[0]), int(padding[1]))
    if is_torch(x):
        import torch.nn.functional as F
        integer = not x.is_floating_point()
        dt = torch.float64 if integer else x.dtype
        w = like(weight, x).to(dt)
        Co, Cg, kH, kW = w.shape
        if (kH, kW, sy, sx, py, px) == (1, 1, 1, 1, 0, 0) and groups == 1:
            xs = x.to(dt)                                   # 1x1 conv = matmul over channels (BLAS)
            B_, C_, H_, W_ = xs.shape
            y = (w.view(Co, Cg) @ xs.reshape(B_, C_, H_ * W_)).view(B_, Co, H_, W_)
        elif (kH, kW, sy, sx, py, px) == (1, 1, 1, 1, 0, 0) and Cg == 1 and groups == Co == x.shape[1]:
            y = x.to(dt) * w.view(1, Co, 1, 1)             # depthwise 1x1 = per-channel scale
        else:
            y = F.conv2d(x.to(dt), w, None, (sy, sx), (py, px), 1, groups)
        if integer:
            y = torch.round(y).to(torch.int64)
        if bias is not None:
            y = y + like(bias, y).to(y.dtype).view(1, -1, 1, 1)
        return y
    return ConvPlan(weight, stride, padding, groups)(x, bias)


class ConvPlan:
    """``W ⋆ x`` (numpy) for a fixed weight, planned once: pointwise, depthwise and non-overlapping patch convs
    run as one matrix product, others over sliding windows; integer products are exact (float64 BLAS while
    every partial sum is provably below 2**52: the weight's largest row |sum| × max |x|, else int64).
    :func:`conv2d` plans per call; an executor stepping one layer many times (a Lava kernel) keeps one."""

    def __init__(self, weight, stride=(1, 1), padding=(0, 0), groups: int = 1):
        w = np.asarray(weight)
        self.integer = w.dtype.kind in "iub"
        self.w = w.astype(np.int64 if self.integer else np.float64)
        Co, Cg, kH, kW = self.w.shape
        self.stride = (int(stride[0]), int(stride[1]))
        self.padding = (int(padding[0]), int(padding[1]))
        self.groups = int(groups)
        geo = (kH, kW) + self.stride + self.padding
        self.mode = None
        if geo == (1, 1, 1, 1, 0, 0) and self.groups == 1:
            self.mode = "pointwise"
        elif geo == (1, 1, 1, 1, 0, 0) and Cg == 1 and self.groups == Co:
            self.mode = "depthwise"
        elif self.stride == (kH, kW) and self.padding == (0, 0) and self.groups == 1:
            self.mode = "patch"               # when H, W are multiples of the kernel (checked per call)
        self.w2 = self.w.reshape(Co, Cg * kH * kW)
        self.w2f = self.w2.astype(np.float64)
        self.row_abs = float(np.abs(self.w2).sum(axis=1).max(initial=0))

    def _mm(self, cols, integer: bool):
        """``w2 @ cols`` (cols (B, K, n)): exact for integers."""
        if not integer:
            return np.matmul(self.w2f, cols)
        if cols.size == 0 or max(-int(cols.min()), int(cols.max())) * self.row_abs < _EXACT_F64:
            return np.matmul(self.w2f, cols.astype(np.float64)).astype(np.int64)
        return np.matmul(self.w2, cols)

    def __call__(self, x, bias=None):
        x = np.asarray(x)
        integer = x.dtype.kind in "iub" and self.integer
        dt = np.int64 if integer else np.float64
        x = x.astype(dt, copy=False)
        w = self.w if integer or not self.integer else self.w.astype(np.float64)
        B, C, H, W = x.shape
        Co, Cg, kH, kW = w.shape
        y = None
        if self.mode == "pointwise":                  # one matrix product over channels
            y = self._mm(x.reshape(B, C, H * W), integer).reshape(B, Co, H, W)
        elif self.mode == "depthwise" and C == Co:    # a per-channel scale
            y = x * w.reshape(1, Co, 1, 1)
        elif self.mode == "patch" and H % kH == 0 and W % kW == 0:
            Ho, Wo = H // kH, W // kW                 # non-overlapping patches: one matrix product
            cols = x.reshape(B, C, Ho, kH, Wo, kW).transpose(0, 1, 3, 5, 2, 4).reshape(B, C * kH * kW, Ho * Wo)
            y = self._mm(cols, integer).reshape(B, Co, Ho, Wo)
        if y is None:
            y = self._windows(x, w)
        if bias is not None:
            y = y + np.asarray(bias).astype(dt).reshape(1, -1, 1, 1)
        return y

    def _windows(self, x, w):
        (sy, sx), (py, px), groups = self.stride, self.padding, self.groups
        Co, Cg, kH, kW = w.shape
        if py or px:
            x = np.pad(x, ((0, 0), (0, 0), (py, py), (px, px)))
        Ho = (x.shape[2] - kH) // sy + 1
        Wo = (x.shape[3] - kW) // sx + 1
        cols = np.lib.stride_tricks.sliding_window_view(x, (kH, kW), axis=(2, 3))[:, :, ::sy, ::sx][:, :, :Ho, :Wo]
        # cols: B, C, Ho, Wo, kH, kW
        og = Co // groups
        outs = []
        for g in range(groups):
            xg = cols[:, g * Cg:(g + 1) * Cg]
            wg = w[g * og:(g + 1) * og]
            outs.append(np.einsum("bchwij,ocij->bohw", xg, wg, optimize=True))
        return np.concatenate(outs, axis=1)


def _taps_cover(n: int, k: int, s: int, p: int, d: int, n_out: int) -> np.ndarray:
    """(k, n) 0/1: tap j of a kernel reaches input position i from one of the ``n_out`` output
    positions (stride s, zero padding p, dilation d). Each (output, tap) pair reaches one position."""
    cov = np.zeros((k, n), dtype=np.int64)
    for j in range(k):
        i = np.arange(n_out) * s - p + j * d
        cov[j, i[(i >= 0) & (i < n)]] = 1
    return cov


def conv_fanout(in_shape, weight, stride=(1, 1), padding=(0, 0), groups: int = 1, dilation=(1, 1)) -> np.ndarray:
    """Synaptic ops of one event of each input element (C, H, W) of a conv: the **non-zero**
    synapses leaving it (format §7), i.e. over the output positions whose window covers it, the
    non-zero weights ``weight[o, c mod C/g, ky, kx]`` to the output channels o of its group.

    ``weight`` (out, in/groups, kH, kW): numpy or torch, the weights the run uses (fixed point: the
    integer mantissas); pass ``np.ones(shape)`` to count every synapse (connectivity). Exact at
    borders for any stride, padding, dilation and groups; int64 (C, H, W)."""
    if is_torch(weight):
        weight = weight.detach().cpu().numpy()
    nz = np.asarray(weight) != 0
    nz = nz.reshape(nz.shape[:4])
    C, H, W = (int(v) for v in in_shape)
    Co, Cg, kH, kW = nz.shape
    (sy, sx), (py, px), (dy, dx) = stride, padding, dilation
    Ho = (H + 2 * py - dy * (kH - 1) - 1) // sy + 1
    Wo = (W + 2 * px - dx * (kW - 1) - 1) // sx + 1
    # non-zero synapses of input channel c at tap (ky, kx): over the output channels of its group
    per_tap = nz.reshape(groups, Co // groups, Cg, kH, kW).sum(axis=1).reshape(groups * Cg, kH, kW)
    cy, cx = _taps_cover(H, kH, sy, py, dy, Ho), _taps_cover(W, kW, sx, px, dx, Wo)
    fan = np.einsum("cab,ay,bx->cyx", per_tap.astype(np.int64), cy, cx)
    return np.broadcast_to(fan, (C, H, W)).astype(np.int64)          # a writable copy


def dense_fanout(weight) -> np.ndarray:
    """Synaptic ops of one event of each input of a dense map ``weight`` (out, in): its non-zero
    outgoing synapses, ``Σ_o (weight[o, i] ≠ 0)`` (format §7); int64 (in,). Also the readout's rule
    per input channel."""
    if is_torch(weight):
        weight = weight.detach().cpu().numpy()
    return (np.asarray(weight) != 0).sum(axis=0).astype(np.int64)


# ----------------------------------------------------------------------------------------
# windows and RSM indices

def to_windows(x, w: int, shift: int, heads: int):
    """Grid (..., C, H, W) → shifted windows per head (..., nW, h, N, d) (model's layout)."""
    *lead, C, H, W = x.shape
    x = roll2(x, -shift) if shift else x
    d = C // heads
    nH, nWx = H // w, W // w
    x = x.reshape(tuple(lead) + (heads, d, nH, w, nWx, w))
    k = len(lead)
    x = permute(x, tuple(range(k)) + (k + 2, k + 4, k + 0, k + 3, k + 5, k + 1))  # nH nWx h wy wx d
    return x.reshape(tuple(lead) + (nH * nWx, heads, w * w, d))


def from_windows(x, w: int, shift: int, H: int, W: int):
    """Inverse of :func:`to_windows`: (..., nW, h, N, d) → grid (..., C, H, W)."""
    *lead, nW, heads, N, d = x.shape
    nH, nWx = H // w, W // w
    x = x.reshape(tuple(lead) + (nH, nWx, heads, w, w, d))
    k = len(lead)
    x = permute(x, tuple(range(k)) + (k + 2, k + 5, k + 0, k + 3, k + 1, k + 4))  # h d nH wy nWx wx
    x = x.reshape(tuple(lead) + (heads * d, H, W))
    return roll2(x, shift) if shift else x


def rsm_index(layout: str, shape, *, grid=None, window: int = 0, shift: int = 0, heads: int = 1) -> np.ndarray:
    """Element index (int64, shaped like the stored tensor ``shape``) as the QCFS site sees it."""
    shape = tuple(int(s) for s in shape)
    if layout in ("attn", "flat"):
        return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    C, H, W = shape
    if layout == "grid":
        return np.arange(H * W * C, dtype=np.int64).reshape(H, W, C).transpose(2, 0, 1).copy()
    w, s = int(window), int(shift)
    c = np.arange(C).reshape(C, 1, 1)
    y = np.arange(H).reshape(1, H, 1)
    x = np.arange(W).reshape(1, 1, W)
    ys, xs = (y - s) % H, (x - s) % W
    nw = (ys // w) * (W // w) + xs // w
    n = (ys % w) * w + xs % w
    N = w * w
    if layout == "window_heads":
        d = C // heads
        idx = ((nw * heads + c // d) * N + n) * d + c % d
    elif layout == "window_tokens":
        idx = (nw * N + n) * C + c
    else:
        raise ValueError(f"unknown RSM layout {layout!r}")
    return np.broadcast_to(idx, (C, H, W)).astype(np.int64).copy()


def rsm_keep(seed: int, site_id: int, block: int, step: int, index, threshold: int):
    """Keep-mask (bool, shaped like ``index``) of one site at one logical step."""
    return _rsm.keep(_rsm.mask_key(seed, int(site_id), block, step), index, threshold)


# ----------------------------------------------------------------------------------------
# dynamic products: Q·Kᵀ (A site) and softmax(A)·V (AV site), time-batched (axis 0 = t)

def qk_products(Sq_w, Sk_w):
    """P(t) = S_q(t) · S_k(t)ᵀ per window and head: (T, ..., nW, h, N, d) → (T, ..., nW, h, N, N)."""
    return exact_matmul(Sq_w, Sk_w.swapaxes(-1, -2) if not is_torch(Sk_w) else Sk_w.transpose(-1, -2))


def qk_value_fixed(P, t, mant: int, shift: int):
    """F(t) = floor(mant · P(t) / (t · 2**shift)) for cumulative products P(t) at step t (t >= 1)."""
    return mul_shift_div(P, mant, shift, t)


def qk_current_fixed(P, mant: int, shift: int):
    """Time-batched: I(t) = F(t) − F(t−1), F(0) = 0, for P (T, ...) int64."""
    return diff0(qk_value_fixed(P, time_index(P.shape[0], P, P.ndim), mant, shift))


def qk_value_float(P, t, scale: float):
    """F(t) = scale · P(t) / t (float)."""
    return as_float64(P) * scale / t


def qk_current_float(P, scale: float):
    """Time-batched: I(t) = scale · (P(t)/t − P(t−1)/(t−1)), P(0)/0 = 0."""
    t = time_index(P.shape[0], P, P.ndim)
    return diff0(qk_value_float(P, as_float64(t), scale))


def make_exp_table(frac_bits: int = LOGIT_FRAC_BITS, out_bits: int = EXP_OUT_BITS) -> np.ndarray:
    """exp_table[k] = round(2**out_bits · exp(−k / 2**frac_bits)), up to and including the first 0."""
    kmax = int(math.ceil(2 ** frac_bits * math.log(2.0 ** (out_bits + 1)))) + 1
    k = np.arange(kmax + 1, dtype=np.float64)
    tab = np.round(2.0 ** out_bits * np.exp(-k / 2 ** frac_bits)).astype(np.int64)
    last = int(np.argmax(tab == 0))
    return tab[:last + 1].copy()


def softmax_fixed(z, exp_table, prob_bits: int = PROB_BITS):
    """Integer softmax over the last axis: p = (e · 2**prob_bits) // Σ e, e = table[max − z]."""
    tab = like(exp_table, z, "int64")
    dz = amax(z, -1) - z
    e = tab[minimum(dz, int(tab.shape[0]) - 1)]
    return (e * (1 << prob_bits)) // xsum(e, -1)


def _add_mask(z, mask_like):
    return z + mask_like.reshape(mask_like.shape[0], 1, mask_like.shape[1], mask_like.shape[2])


def softmax_av_value_fixed(SA, SVw, t, *, a_mult: int, bias, mask, exp_table, prob_bits: int,
                           v_mant: int, v_shift: int):
    """G(t) of the AV site at step t (t an int >= 1, or an int64 array broadcastable over SA).

    SA (..., nW, h, N, N) and SVw (..., nW, h, N, d): cumulative delivered counts (int64).
    bias (h, N, N) int, mask (nW, N, N) int or None. Returns (..., nW, h, N, d) int64.
    """
    z = (SA * int(a_mult)) // t + like(bias, SA, "int64")
    if mask is not None:
        z = _add_mask(z, like(mask, SA, "int64"))
    p = softmax_fixed(z, exp_table, prob_bits)
    return mul_shift_div(exact_matmul(p, SVw), v_mant, prob_bits + v_shift)


def softmax_av_fixed(SA, SVw, **kw):
    """Time-batched currents of the AV neurons: I(t) = G(t) − G(t−1), inputs (T, ...)."""
    return diff0(softmax_av_value_fixed(SA, SVw, time_index(SA.shape[0], SA, SA.ndim), **kw))


def softmax_av_value_float(SA, SVw, t, *, theta_a: float, theta_v: float, bias, mask):
    """Float G(t) = softmax(θ_A·S_A(t)/t + B + M) @ (θ_V·S_V(t))."""
    if is_torch(SA):
        dt = SA.dtype if SA.is_floating_point() else torch.float64
        z = SA.to(dt) * theta_a / t + like(bias, SA).to(dt)
        if mask is not None:
            z = _add_mask(z, like(mask, SA).to(dt))
        return torch.softmax(z, dim=-1) @ (SVw.to(dt) * theta_v)
    z = np.asarray(SA, dtype=np.float64) * theta_a / t + np.asarray(bias, dtype=np.float64)
    if mask is not None:
        z = _add_mask(z, np.asarray(mask, dtype=np.float64))
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)) @ (np.asarray(SVw, dtype=np.float64) * theta_v)


def softmax_av_float(SA, SVw, **kw):
    """Time-batched float currents: I(t) = G(t) − G(t−1)."""
    t = time_index(SA.shape[0], SA, SA.ndim)
    t = t.to(SA.dtype if SA.is_floating_point() else torch.float64) if is_torch(t) else t.astype(np.float64)
    return diff0(softmax_av_value_float(SA, SVw, t, **kw))


# ----------------------------------------------------------------------------------------
# extension version 2: the official MST topology (docs/netx-mst-format.md, section 5a)

def stream_affine_float(x, scale, offset):
    """``scale[c] · x + offset[c]`` on a (..., C, H, W) float grid (the first input of a residual
    whose stream passes a BatchNorm, the official block's ``norm2``)."""
    s = like(np.asarray(scale, dtype=np.float64).reshape(-1, 1, 1), x)
    o = like(np.asarray(offset, dtype=np.float64).reshape(-1, 1, 1), x)
    if is_torch(x):
        s, o = s.to(x.dtype), o.to(x.dtype)
    return x * s + o


def stream_affine_fixed(x, mant, shift: int, offset):
    """``floor(mant[c] · x / 2**shift) + offset[c]`` on a (..., C, H, W) int64 grid, exactly
    (|mant| < 2**15 and |x| < 2**23, so the product stays far inside int64; ``>>`` floors)."""
    m = like(np.asarray(mant, dtype=np.int64).reshape(-1, 1, 1), x, "int64")
    o = like(np.asarray(offset, dtype=np.int64).reshape(-1, 1, 1), x, "int64")
    return ((as_int64(x) * m) >> int(shift)) + o


def token_layer_norm(x, eps: float) -> np.ndarray:
    """``(x − mean) / sqrt(var + eps)`` over the last axis (population variance), float64, numpy only.

    The one implementation of the readout's LayerNorm (no affine: γ and β are folded into the
    readout's weights and bias). Both executors call it on the C-contiguous ``(N, C)`` token
    matrix of one sample and one step (:func:`norm_readout_input`), so they compute the same
    floating-point operations in the same order."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    C = x.shape[-1]
    mu = x.sum(axis=-1, keepdims=True) / C
    d = x - mu
    var = (d * d).sum(axis=-1, keepdims=True) / C
    return d / np.sqrt(var + float(eps))


def norm_readout_input(x, eps: float, unit: float = 1.0, frac_bits: int | None = None) -> np.ndarray:
    """The input of a readout with ``token_norm = "layer"`` for ONE sample and ONE step.

    ``x``: the last residual's value ``(C, H, W)`` (numpy). Float (``frac_bits`` None): the token sum
    ``Σ_tokens LN(x)`` (C,) float64. Fixed: ``x`` is the integer stream, ``unit`` the float value of
    one integer, LN acts on ``x · unit`` in float64 and every normalized value is rounded (half to
    even) to a multiple of ``2**-frac_bits``: returns ``Σ_tokens round(LN(x·unit) · 2**frac_bits)``
    (C,) int64. This step runs on the host (or an embedded CPU), never on neurocores."""
    x = np.asarray(x)
    C = x.shape[0]
    tok = np.ascontiguousarray(x.reshape(C, -1).T).astype(np.float64) * float(unit)     # N, C
    n = token_layer_norm(tok, eps)
    if frac_bits is None:
        return n.sum(axis=0)
    return np.round(n * 2.0 ** int(frac_bits)).astype(np.int64).sum(axis=0)


def norm_bound(C: int, frac_bits: int) -> int:
    """Largest |round(LN(x) · 2**frac_bits)| for C channels: a normalized value is at most sqrt(C − 1)."""
    return int(math.ceil(math.sqrt(max(int(C) - 1, 0)) * 2.0 ** int(frac_bits))) + 1
