"""Fixed-point quantization of an exported float graph, fitted to Loihi's bit widths (format §2a, §5, §5a, §5b).

:func:`quantize_graph` adds the integer parameters (``fix`` dicts, integer ``weight``/``bias``, thresholds
``vThMant``) to the float graph :func:`mst_lava.export.exporter.export_model` built: per neuron layer 8-bit weight
mantissas with a weight exponent (one per layer, per output channel, or per spike input), 13-bit bias mantissas,
17-bit threshold mantissas; residual streams in one integer unit per stage; the dynamic products' constants.
numpy only: the graph walk (torch) is in ``exporter.py``.
"""
from __future__ import annotations

import math

import numpy as np

from mst_lava import netx_ops as ops
from mst_lava import neurons
from mst_lava.errors import MSTError
from mst_lava.export.graph import Layer, NetxGraph


class FixedSynapse:
    """The integer parameters of one fixed-point neuron layer (conv/dense + IF), see
    :func:`quantize_synapse`."""

    __slots__ = ("weight", "weight_exp", "bias", "bias_exp", "vth_mant", "membrane_unit", "weight_shift",
                 "max_current", "headroom")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def vth(self) -> int:
        """The threshold in membrane units: ``vThMant << 6``."""
        return self.vth_mant << ops.VTH_SHIFT


def _quantize_weights(w_scaled: np.ndarray, k: int):
    """8-bit mantissas with the quantum chosen so the largest |w| maps to 127 >> k (rounded)."""
    amax = float(np.max(np.abs(w_scaled))) if w_scaled.size else 0.0
    delta = amax / ops.WEIGHT_MANT_MAX * 2.0 ** k if amax > 0 else 1.0
    Wq = np.clip(np.round(w_scaled / delta), -ops.WEIGHT_MANT_MAX, ops.WEIGHT_MANT_MAX).astype(np.int64)
    return Wq, delta


def _bias_fit(b_units: np.ndarray):
    """Smallest bias exponent in [0, 7] whose 13-bit mantissas hold ``b_units`` (membrane units).
    Returns (bias int64 = mant << exp, exp) or None."""
    for e in range(ops.BIAS_EXP_MIN, ops.BIAS_EXP_MAX + 1):
        mant = np.round(b_units / 2.0 ** e)
        if b_units.size == 0 or float(np.max(np.abs(mant))) <= ops.BIAS_MANT_MAX:
            return mant.astype(np.int64) << e, e
    return None


def quantize_synapse(w_scaled: np.ndarray, bias: np.ndarray, theta: float, x_bound: float = 1.0,
                     name: str = "layer") -> FixedSynapse:
    """Loihi-faithful integer parameters of a conv/dense layer with IF neurons, limits fitted jointly.

    ``w_scaled`` = float weights times the input unit (float value of one input integer),
    ``x_bound`` = the largest |input integer| (1 for spikes, the payload bound of a graded input).
    The synaptic current in membrane units is ``shift_exp(W ⋆ x, weight_exp) · 2**6`` and one
    membrane unit is worth ``m = Δ / 2**(weight_exp + 6)`` (Δ the weight quantum), so

    * threshold ``vth = vThMant << 6`` with ``vThMant = round(θ / (64 m))`` in [1, 2**17 − 1];
    * bias ``round(b / m)`` as a 13-bit mantissa << bias_exp (bias_exp in [0, 7]);
    * weights 8-bit in [−127, 127], ``weight_exp`` in [−8, 7].

    Search: the weight quantum Δ_k maps the largest |w| to 127 >> k, k = 0 first (full 8 bits);
    for the first k where some weight_exp meets all hard limits, take the largest weight_exp
    with ``vThMant <= 2**12``: the threshold keeps 11–12 bits (its rounding error is below
    θ/8192, far under the weights' own half-quantum) and the 24-bit voltage keeps at least
    ±32 thresholds of range, so an IF neuron can integrate 32 thresholds of net inhibition
    before it saturates. When even weight_exp −8 gives a larger mantissa, take −8. No
    feasible k: MSTError naming the layer and the value. ``max_current`` is the worst-case
    current ``max_o Σ_i |W[o, i]| · x_bound · 2**(weight_exp + 6)`` (``headroom``: it cannot
    wrap); the executors count the wraps and saturations that do happen.
    """
    w_scaled = np.asarray(w_scaled, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    theta = float(theta)
    if not (theta > 0 and math.isfinite(theta)):
        raise MSTError(f"{name}: threshold {theta} must be positive and finite")
    if not np.all(np.isfinite(w_scaled)) or not np.all(np.isfinite(bias)):
        raise MSTError(f"{name}: weights or bias contain NaN or infinity")
    rows = w_scaled.reshape(w_scaled.shape[0], -1) if w_scaled.ndim > 1 else w_scaled.reshape(1, -1)
    problems = []
    for k in range(0, ops.WEIGHT_BITS):
        Wq, delta = _quantize_weights(w_scaled, k)
        row_abs = float(np.abs(Wq.reshape(Wq.shape[0], -1)).sum(axis=1).max(initial=0)) if Wq.size else 0.0
        feasible = []
        for e in range(ops.WEIGHT_EXP_MAX, ops.WEIGHT_EXP_MIN - 1, -1):
            m = delta / 2.0 ** (e + ops.ACT_SHIFT)
            vth_mant = int(round(theta / (m * 2 ** ops.VTH_SHIFT)))
            if not (1 <= vth_mant <= ops.VTH_MANT_MAX):
                problems.append((k, e, f"threshold mantissa {vth_mant}"))
                continue
            fit = _bias_fit(bias / m)
            if fit is None:
                problems.append((k, e, f"bias {float(np.max(np.abs(bias / m))):.4g} membrane units"))
                continue
            worst = row_abs * x_bound * 2.0 ** (e + ops.ACT_SHIFT)
            feasible.append((e, m, vth_mant, fit, worst))
        if not feasible:
            continue
        headroom = [f for f in feasible if f[2] <= ops.VTH_MANT_TARGET]
        if headroom:        # the finest membrane that still leaves >= 32 thresholds of voltage range
            e, m, vth_mant, (bq, be), worst = max(headroom, key=lambda f: f[0])
        else:               # even the smallest exponent gives a larger mantissa: take the smallest
            e, m, vth_mant, (bq, be), worst = min(feasible, key=lambda f: f[0])
        return FixedSynapse(weight=Wq, weight_exp=e, bias=bq, bias_exp=be, vth_mant=vth_mant, membrane_unit=m,
                            weight_shift=k, max_current=worst, headroom=worst <= ops.CURRENT_MAX)
    _, e, what = problems[-1] if problems else (0, 0, "no weights")
    raise MSTError(f"{name}: no weight exponent in [{ops.WEIGHT_EXP_MIN}, {ops.WEIGHT_EXP_MAX}] fits Loihi's "
                   f"limits even with 1-bit weights (threshold θ = {theta:.6g}, largest |bias| "
                   f"{float(np.max(np.abs(bias), initial=0)):.6g}, largest |weight·unit| "
                   f"{float(np.max(np.abs(rows), initial=0)):.6g}; at weight_exp {e}: {what}); the threshold is "
                   f"too large or too small for its weights to be represented")


def channel_exponents(q: FixedSynapse, w_scaled: np.ndarray, x_bound: float) -> FixedSynapse:
    """Per-output-channel weight exponents (format §2a, extension version 4) on top of :func:`quantize_synapse`'s
    fit: the membrane unit ``m``, threshold and bias stay; output channel o takes the smallest exponent
    ``e_o >= -8`` whose quantum ``m · 2**(e_o + 6)`` still holds its own largest |w| within 127, so a channel with
    small weights keeps (nearly) 8 bits of its own instead of the layer quantum's fewer (on Loihi: one synapse
    group per exponent, all feeding the layer's neurons). ``q.weight_exp`` becomes an int64 (Co,) array."""
    w = np.asarray(w_scaled, dtype=np.float64)
    rows = w.reshape(w.shape[0], -1)
    m = q.membrane_unit
    exps = np.empty(rows.shape[0], dtype=np.int64)
    Wq = np.empty(rows.shape, dtype=np.int64)
    for o, r in enumerate(rows):
        amax = float(np.max(np.abs(r), initial=0.0))
        e = next((e for e in range(ops.WEIGHT_EXP_MIN, ops.WEIGHT_EXP_MAX + 1)
                  if np.round(amax / (m * 2.0 ** (e + ops.ACT_SHIFT))) <= ops.WEIGHT_MANT_MAX), ops.WEIGHT_EXP_MAX)
        exps[o] = e
        Wq[o] = np.clip(np.round(r / (m * 2.0 ** (e + ops.ACT_SHIFT))), -ops.WEIGHT_MANT_MAX, ops.WEIGHT_MANT_MAX)
    q.weight = Wq.reshape(w.shape)
    q.weight_exp = exps
    q.max_current = float((np.abs(Wq).sum(axis=1) * 2.0 ** (exps + ops.ACT_SHIFT)).max(initial=0.0)) * x_bound
    q.headroom = q.max_current <= ops.CURRENT_MAX
    return q


def quantize_source_synapse(weights: list, bias: np.ndarray, theta: float, name: str = "layer"):
    """Fixed-point parameters of a conv with one weight set per spike input (format §5b), all summing into one
    IF population: one bit-accurate Dense per source (8-bit mantissas, its own exponent in [−8, 7]) into one LIF.

    The neurons' membrane unit ``m``, threshold and bias are :func:`quantize_synapse`'s for all the weights
    together (the largest |w| of any source maps to 127). Each source k then takes the smallest exponent
    ``e_k`` whose quantum ``Δ_k = m · 2**(e_k + 6)`` still holds its own largest |w| in 127, so a source with
    smaller weights keeps (nearly) 8 bits of its own instead of the shared quantum's fewer. Returns
    ``(mantissas per source, exponents, FixedSynapse of the shared neuron)``; ``max_current`` is the worst case
    ``max_o Σ_k Σ_i |W_k[o, i]| · 2**(e_k + 6)``."""
    Co = np.asarray(weights[0]).shape[0]
    allw = np.concatenate([np.asarray(w, dtype=np.float64).reshape(Co, -1) for w in weights], axis=1)
    q = quantize_synapse(allw, bias, theta, 1.0, name=name)
    m = q.membrane_unit
    mants, exps = [], []
    worst = np.zeros(Co)
    for w in weights:
        w = np.asarray(w, dtype=np.float64)
        amax = float(np.max(np.abs(w), initial=0.0))
        e = next((e for e in range(ops.WEIGHT_EXP_MIN, ops.WEIGHT_EXP_MAX + 1)
                  if np.round(amax / (m * 2.0 ** (e + ops.ACT_SHIFT))) <= ops.WEIGHT_MANT_MAX), ops.WEIGHT_EXP_MAX)
        Wq = np.clip(np.round(w / (m * 2.0 ** (e + ops.ACT_SHIFT))), -ops.WEIGHT_MANT_MAX,
                     ops.WEIGHT_MANT_MAX).astype(np.int64)
        mants.append(Wq)
        exps.append(e)
        worst += np.abs(Wq.reshape(Co, -1)).sum(axis=1) * 2.0 ** (e + ops.ACT_SHIFT)
    q.max_current = float(worst.max(initial=0.0))
    q.headroom = q.max_current <= ops.CURRENT_MAX
    return mants, exps, q


def quantize_readout(w_scaled: np.ndarray, bias: np.ndarray, name: str = "readout"):
    """The readout (host/embedded processor, int64): 8-bit weight mantissas, exponent in [0, 16],
    integer bias < 2**40. Returns (W int, weight_exp, b int, unit m) with W·2**weight_exp·m ≈
    w_scaled, b·m ≈ bias."""
    amax = float(np.max(np.abs(w_scaled))) if w_scaled.size else 0.0
    delta = amax / 127.0 if amax > 0 else 1.0
    Wq = np.clip(np.round(w_scaled / delta), -127, 127).astype(np.int64)
    bmax = float(np.max(np.abs(bias))) if np.size(bias) else 0.0
    blim = 2.0 ** ops.READOUT_BIAS_BITS - 1
    for e in range(ops.READOUT_MAX_WEIGHT_EXP, -1, -1):
        m = delta / 2.0 ** e
        if round(bmax / m) <= blim:
            bq = np.round(np.asarray(bias, dtype=np.float64) / m).astype(np.int64)
            return Wq, e, bq, m
    raise MSTError(f"{name}: bias {bmax:.6g} is {bmax / delta:.4g} weight quanta, beyond the readout's "
                   f"{ops.READOUT_BIAS_BITS}-bit bias")


def _residual_fixed(layer: Layer, L: list, r: float, unit: dict, bound: dict) -> tuple[dict, int]:
    """The fixed-point parameters of a residual node in its stage's unit ``r`` and the bound of its payload
    (not checked here): spike inputs get integer gains ``round(gain / r)``, graded inputs (same unit) gain
    1; a stream affine (§5a) on the first input becomes ``floor(scale_mant · x / 2**scale_shift)`` with
    15-bit mantissas and an integer ``offset = round(offset_f / r)``."""
    gains, bnd = [], 0
    fix: dict = {}
    for j, (k, gain) in enumerate(zip(layer.inputs, np.asarray(layer.flt["gain"]).reshape(-1))):
        if L[k].output == "spikes":
            gains.append(int(round(float(gain) / r)))
            bnd += abs(gains[-1]) * neurons.burst_of(L[k].neuron)       # a graded payload carries up to B
            continue
        if not math.isclose(unit[k], r, rel_tol=1e-12):
            raise MSTError(f"residual {layer.name}: graded input {L[k].name} has another unit")
        gains.append(1)
        if j == 0 and "scale" in layer.flt:
            g = np.asarray(layer.flt["scale"], dtype=np.float64).reshape(-1)
            gmax = float(np.max(np.abs(g), initial=0.0))
            lim = (1 << ops.STREAM_SCALE_BITS) - 1
            if gmax == 0:
                shift = 0
            else:
                shift = min(int(math.floor(math.log2(lim / gmax))), ops.STREAM_SCALE_MAX_SHIFT)
            if shift < 0:
                raise MSTError(f"residual {layer.name}: a stream scale of {gmax:.6g} (a BatchNorm on the stream with "
                               f"a very small variance) does not fit a {ops.STREAM_SCALE_BITS}-bit mantissa")
            mant = np.clip(np.round(g * 2.0 ** shift), -lim, lim).astype(np.int64)
            off = np.round(np.asarray(layer.flt["offset"], dtype=np.float64).reshape(-1) / r)
            if float(np.max(np.abs(off), initial=0.0)) > ops.PAYLOAD_MAX:
                raise MSTError(f"residual {layer.name}: a stream offset of {float(np.max(np.abs(off))) * r:.6g} is "
                               f"beyond Loihi's 24-bit graded spikes in this stage's unit {r:.6g}")
            off = off.astype(np.int64)
            fix.update(scale_mant=mant, scale_shift=np.int64(shift), offset=off)
            mmax = int(np.max(np.abs(mant), initial=0))
            bnd += ((mmax * int(bound[k]) + (1 << shift) - 1) >> shift) + int(np.max(np.abs(off), initial=0))
        else:
            bnd += int(bound[k])
    fix.update(gain=np.asarray(gains, dtype=np.int64), unit=float(r))
    return fix, bnd


def _stage_units(L: list) -> dict[int, float]:
    """One residual unit per stage: the stage's largest spike value (gain × the largest payload, B for a graded
    IF_BURST source, so the stream's unit stays that of the binary network) maps to 2**12 − 1. Where the stage's
    payload would then exceed 24 bits (a stream affine, §5a, can grow it block after block), the largest
    gain maps to 2**b − 1 with the largest b >= 6 that fits; none fits: MSTError."""
    gmax: dict[int, float] = {}
    for layer in L:
        if layer.type == "mst_residual":
            st = int(layer.mst["stage"])
            for k, gain in zip(layer.inputs, np.asarray(layer.flt["gain"]).reshape(-1)):
                if L[k].output == "spikes":       # a graded payload (B spikes of the gain) is the largest value
                    gmax[st] = max(gmax.get(st, 0.0), float(gain) * neurons.burst_of(L[k].neuron))
    units = {}
    for st, gm in gmax.items():
        worst = None
        for bits in range(ops.RESIDUAL_EXPORT_GAIN_BITS, ops.RESIDUAL_MIN_GAIN_BITS - 1, -1):
            r = gm / (2 ** bits - 1)
            unit: dict[int, float] = {}
            bound: dict[int, int] = {}
            worst = (0, "")
            for i, layer in enumerate(L):
                if layer.type != "mst_residual" or int(layer.mst["stage"]) != st:
                    continue
                _, bnd = _residual_fixed(layer, L, r, unit, bound)
                unit[i], bound[i] = r, bnd
                worst = max(worst, (bnd, layer.name))
            if worst[0] <= ops.PAYLOAD_MAX:
                units[st] = r
                break
        else:
            raise MSTError(f"stage {st}: the residual payload reaches {worst[0]} at {worst[1]} even with "
                           f"{ops.RESIDUAL_MIN_GAIN_BITS}-bit residual gains, beyond Loihi's 24-bit graded spikes "
                           f"(|x| <= {ops.PAYLOAD_MAX}); the stream's BatchNorm scales grow it too much to export "
                           "in fixed point (export with --precision float)")
    return units


def _set_fixed_neuron(layer: Layer, vth_mant: int) -> None:
    layer.neuron["vThMant"] = np.int64(vth_mant)
    layer.neuron["vInit"] = np.int64((vth_mant << ops.VTH_SHIFT) // 2)


def quantize_graph(graph: NetxGraph, per_channel: bool = False) -> None:
    """Add the fixed-point parameters (``fix`` dicts, integer ``weight``/``bias``) to a float graph.

    Every neuron layer is fitted to Loihi's bit widths (:func:`quantize_synapse`); graded
    payloads (input image, residual stream) are bounded and must stay within 24 bits.
    ``per_channel``: single-input convs get one weight exponent per output channel (:func:`channel_exponents`).
    """
    L = graph.layers
    stage_unit = _stage_units(L)
    unit: dict[int, float] = {}                      # value of one integer unit of each graded output
    bound: dict[int, int] = {}                       # largest |payload| of each graded output
    for i, layer in enumerate(L):
        t = layer.type
        if t == "input":
            layer.fix = {"frac_bits": np.int64(ops.INPUT_FRAC_BITS)}
            unit[i] = 2.0 ** -ops.INPUT_FRAC_BITS
            bound[i] = 32767
        elif t == "mst_residual":
            r = stage_unit[int(layer.mst["stage"])]
            layer.fix, bnd = _residual_fixed(layer, L, r, unit, bound)
            if bnd > ops.PAYLOAD_MAX:
                raise MSTError(f"residual {layer.name}: its payload can reach {bnd}, beyond Loihi's 24-bit graded "
                               f"spikes (|x| <= {ops.PAYLOAD_MAX})")
            unit[i] = r
            bound[i] = bnd
        elif t == "conv" and len(layer.inputs) > 1:          # one weight set per spike input (§5b)
            S = len(layer.inputs)
            W = np.asarray(layer.flt["weight"], dtype=np.float64)
            cg = W.shape[1] // S
            mants, exps, q = quantize_source_synapse([W[:, k * cg:(k + 1) * cg] for k in range(S)],
                                                     np.asarray(layer.flt["bias"]), float(layer.neuron["threshold"]),
                                                     name=layer.name)
            layer.params["weight"] = np.concatenate(mants, axis=1).astype(np.int16)
            layer.params["bias"] = q.bias
            layer.fix = {"weight_exp": np.asarray(exps, dtype=np.int64), "bias_exp": np.int64(q.bias_exp),
                         "input_unit": 1.0, "membrane_unit": float(q.membrane_unit),
                         "max_current": float(q.max_current) * max(neurons.burst_of(L[k].neuron)
                                                                   for k in layer.inputs)}
            _set_fixed_neuron(layer, q.vth_mant)
        elif t in ("conv", "dense"):
            src = layer.inputs[0]
            spikes = L[src].output == "spikes"
            u = 1.0 if spikes else unit[src]
            x_bound = float(neurons.burst_of(L[src].neuron)) if spikes else float(bound[src])
            q = quantize_synapse(np.asarray(layer.flt["weight"]) * u, np.asarray(layer.flt["bias"]),
                                 float(layer.neuron["threshold"]), x_bound, name=layer.name)
            if per_channel and t == "conv":
                q = channel_exponents(q, np.asarray(layer.flt["weight"]) * u, x_bound)
            layer.params["weight"] = q.weight.astype(np.int16)
            layer.params["bias"] = q.bias
            layer.fix = {"weight_exp": np.asarray(q.weight_exp, dtype=np.int64) if np.ndim(q.weight_exp)
                         else np.int64(q.weight_exp), "bias_exp": np.int64(q.bias_exp),
                         "input_unit": float(u), "membrane_unit": float(q.membrane_unit),
                         "max_current": float(q.max_current)}
            _set_fixed_neuron(layer, q.vth_mant)
        elif t == "mst_qk":
            theta_a = float(layer.neuron["threshold"])
            c = float(layer.flt["scale"]) * ops.DYN_VTH / theta_a
            mant, sh = ops.mant_shift(c, ops.SCALE_BITS)
            layer.fix = {"scale_mant": np.int64(mant), "scale_shift": np.int64(sh),
                         "membrane_unit": theta_a / ops.DYN_VTH}
            _set_fixed_neuron(layer, ops.DYN_VTH >> ops.VTH_SHIFT)
        elif t == "mst_softmax_av":
            theta_av = float(layer.neuron["threshold"])
            lf = 2.0 ** ops.LOGIT_FRAC_BITS
            v = float(layer.flt["theta_v"]) * ops.DYN_VTH / theta_av
            vm, vs = ops.mant_shift(v, ops.V_BITS)
            fx = {"a_mult": np.int64(round(float(layer.flt["theta_a"]) * lf)),
                  "bias": np.round(np.asarray(layer.flt["bias"]) * lf).astype(np.int64),
                  "v_mant": np.int64(vm), "v_shift": np.int64(vs), "membrane_unit": theta_av / ops.DYN_VTH}
            if "mask" in layer.flt:
                fx["mask"] = np.round(np.asarray(layer.flt["mask"]) * lf).astype(np.int64)
            layer.fix = fx
            _set_fixed_neuron(layer, ops.DYN_VTH >> ops.VTH_SHIFT)
        elif t == "mst_readout":
            src = layer.inputs[0]
            # a token LayerNorm (§5a) hands the head normalized values in units of 2**-NORM_FRAC_BITS
            u_in = 2.0 ** -ops.NORM_FRAC_BITS if layer.mst.get("token_norm") == "layer" else unit[src]
            Wq, e, bq, m = quantize_readout(np.asarray(layer.flt["weight"]) * u_in,
                                            np.asarray(layer.flt["bias"]), layer.name)
            layer.params["weight"] = Wq.astype(np.int16)
            layer.params["bias"] = bq
            layer.fix = {"weight_exp": np.int64(e), "unit": float(m), "input_unit": float(u_in)}
            if layer.mst.get("token_norm") == "layer":
                layer.fix["norm_frac_bits"] = np.int64(ops.NORM_FRAC_BITS)
    graph.exp_table = ops.make_exp_table(ops.LOGIT_FRAC_BITS, ops.EXP_OUT_BITS)
    graph.attrs.update(precision="fixed", softmax_frac_bits=ops.LOGIT_FRAC_BITS,
                       softmax_out_bits=ops.EXP_OUT_BITS, softmax_prob_bits=ops.PROB_BITS,
                       input_frac_bits=ops.INPUT_FRAC_BITS)
