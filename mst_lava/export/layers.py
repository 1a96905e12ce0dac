"""One object per layer type of an mst_lava.netx file: its parameters, its arithmetic, its counting rule.

The torch executor (:class:`mst_lava.export.netsim.NetSim`, time-batched), the Lava kernels
(:mod:`mst_lava.lava.kernels`, one sample and one step at a time), the Lava builder and the reader
(:mod:`mst_lava.export.hdf5io`) all take what depends on a layer's type from :data:`LAYER_TYPES`:

* structure (the reader's checks): ``output`` (``spikes``/``graded``), ``neuron`` (owns an IF
  population), ``float_keys``/``fixed_keys`` (the ``mst/float``/``mst/fixed`` keys it needs);
* ``params(graph, i, fixed)``: the layer's parameters in the units of a precision (numpy arrays;
  fixed point: the integer mantissas), read once from a validated graph;
* arithmetic, on numpy arrays or torch tensors alike (any leading dims: ``(T, B, ...)`` in NetSim,
  none in a kernel), each a thin composition of :mod:`mst_lava.netx_ops`: the step form (the value at
  step t, from the cumulative counts a kernel keeps as state) and the time-batched form (NetSim);
* ``counts(...)``: the layer's share of the counting rule (docs/netx-mst-format.md §7) from event
  totals, the same formula whether the totals cover one step of one sample or T steps of a batch.

numpy and netx_ops only: no torch import (the Lava runtime runs without it), no Lava import.
"""
from __future__ import annotations

import numpy as np

from mst_lava import netx_ops as ops
from mst_lava import neurons

# ----------------------------------------------------------------------------------------
# helpers shared by the layer types


def pair(v) -> tuple[int, int]:
    """A netx ``stride``/``padding`` value (one or two integers) as ``(y, x)``."""
    a = np.asarray(1 if v is None else v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def weight_exponent(e):
    """A conv's fixed-point weight exponent: an int (one per layer), or an int64 (Co,) array (one per output
    channel, format §2, extension version 4)."""
    a = np.asarray(e).reshape(-1)
    return int(a[0]) if a.size == 1 else a.astype(np.int64)


def new_counts(layer) -> dict:
    """The counts record of one layer, all zero: the keys every executor reports (format §7); a layer
    type adds its own (``analog_macs``, ``residual_adds``, ``softmax_elements``, ``av_macs``, overflows).

    ``spikes``/``delivered``/``dropped`` count unit spikes (a graded payload s counts s), ``messages`` the
    delivered events (one per non-zero payload: = ``delivered`` for binary neurons); ``synops`` is the payload
    rule (s accumulations per synapse), ``synops_messages`` one operation per message and synapse."""
    return {"site": layer.site, "block": layer.block, "type": layer.type, "spikes": 0, "delivered": 0,
            "dropped": 0, "messages": 0, "neurons": int(np.prod(layer.shape)), "synops": 0, "synops_messages": 0,
            "neuron_updates": 0}


RESULT_TOTALS = ("spikes", "delivered", "dropped", "messages", "synops", "synops_messages", "neuron_updates",
                 "analog_macs", "residual_adds", "softmax_elements")


def result_totals(counts: dict) -> dict:
    """The totals over every layer of a run's per-layer counts (NetSim's and the Lava runner's alike)."""
    return {k: int(sum(c.get(k, 0) for c in counts.values())) for k in RESULT_TOTALS}


def events(x, spike: bool):
    """Events per element of an input value: a spike input's payload (0/1 binary, the spike count of a graded
    message), a graded value's 1 where it is non-zero (int64, numpy or torch)."""
    return ops.as_int64(x) if spike else ops.as_int64(x != 0)


def rsm_site(layer) -> dict | None:
    """The RSM parameters of a layer whose spikes are masked (a site with a ratio > 0), else None:
    ``site_id``, ``block``, ``threshold`` and the element ``index`` the torch site sees (``netx_ops.rsm_index``)."""
    thr = int(layer.mst.get("rsm_threshold", 0) or 0)
    if not layer.site or layer.rsm_ratio <= 0 or thr <= 0:
        return None
    m = layer.mst
    idx = ops.rsm_index(str(m["layout"]), tuple(int(s) for s in layer.shape), grid=m.get("grid"),
                        window=int(m.get("window", 0) or 0), shift=int(m.get("shift", 0) or 0),
                        heads=int(m.get("heads", 1) or 1))
    return {"site_id": int(m["site_id"]), "block": layer.block, "threshold": thr, "index": idx}


def synops(fanout, events) -> float:
    """``Σ fanout · events``: events per input element (any count, any shape matching ``fanout``) × its
    non-zero synapses. Exact (integers in float64)."""
    if ops.is_torch(events):
        return float(fanout.reshape(-1) @ events.reshape(-1).to(fanout.dtype))
    return float(np.dot(fanout.reshape(-1), events.reshape(-1)))


def nonzero(x) -> int:
    """Number of events (non-zero values) in ``x``."""
    return int((x != 0).sum()) if ops.is_torch(x) else int(np.count_nonzero(x))


def payload(x) -> int:
    """Unit spikes in a spike tensor ``x``: its sum (the number of events for binary spikes)."""
    return int(ops.as_int64(x).sum())


def channel_events(x):
    """Events per channel of ``(..., C, H, W)`` values: (C,) counts, summed over tokens and leading dims."""
    C = x.shape[-3]
    if ops.is_torch(x):
        return (x != 0).to(ops.torch.int64).sum(-1).sum(-1).reshape(-1, C).sum(0)
    return np.count_nonzero(np.reshape(x, (-1, C, x.shape[-2] * x.shape[-1])), axis=-1).sum(axis=0)


def _sum_tokens(x):
    return x.sum(dim=(-2, -1)) if ops.is_torch(x) else x.sum(axis=(-2, -1))


def _float_or_fixed(layer, key: str, fixed: bool):
    """``weight``/``bias`` in a precision's units: the standard dataset (fixed mantissas) or ``mst/float``."""
    return np.asarray(layer.params[key] if fixed else layer.flt[key])


class LayerType:
    """Base: a layer type of an MST file."""

    type = ""
    output = "spikes"           # what the layer sends: "spikes" (0/1 events) or "graded" (a value per step)
    neuron = False              # owns an IF population (its threshold in ``neuron/``)
    float_keys: tuple = ()      # mst/float keys the type needs
    fixed_keys: tuple = ()      # mst/fixed keys the type needs in a fixed file

    def params(self, graph, i: int, fixed: bool) -> dict:
        """The layer's parameters in a precision's units (numpy; fixed point: the integer mantissas), read once."""
        return {}

    @staticmethod
    def in_burst(graph, i: int) -> int:
        """The largest payload of the spike inputs of layer ``i`` (1: binary spikes, the registry's ``burst``)."""
        return max([neurons.burst_of(graph.layers[k].neuron) for k in graph.layers[i].inputs] or [1])

    def neuron_bias(self, P, fixed: bool):
        """The bias the layer's IF neurons add after the 24-bit wrap (fixed-point conv), else None."""
        return None

    def batched(self, P, ins: list, T: int, B: int, fixed: bool):
        """Time-batched executor step: inputs ``(T or 1, B, ...)`` (1: the same value every step) → the layer's
        value (the neurons' input current for a neuron layer) and its counts over the T steps of B samples."""
        raise NotImplementedError

    def ann(self, P, ins: list):
        """The float graph as the ANN it came from: rates in, the value (a neuron layer: the QCFS input) out."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------
# the layer types

class Input(LayerType):
    """The image (or event frame), constant over the steps of a sample; fixed point: netx_ops.quantize_input."""

    type, output, fixed_keys = "input", "graded", ("frac_bits",)

    def params(self, graph, i, fixed):
        """``frac_bits`` of the input quantization (fixed point), None in float."""
        L = graph.layers[i]
        fb = int(L.fix.get("frac_bits", graph.attrs.get("input_frac_bits", ops.INPUT_FRAC_BITS))) if fixed else None
        return {"frac_bits": fb}

    @staticmethod
    def value(P, x, fixed: bool):
        """Fixed point: the quantized image (int64); float: the image as given (the executor picks its dtype)."""
        return ops.quantize_input(x, P["frac_bits"]) if fixed else x

    def batched(self, P, ins, T, B, fixed):
        """The image as a (1, B, C, H, W) value, the same every step; no counts."""
        return self.value(P, ins[0], fixed)[None], {}          # (1, B, C, H, W): constant over the steps

    def ann(self, P, ins):
        """The image itself."""
        return ins[0]


class Conv(LayerType):
    """``conv`` + IF: the synaptic accumulation ``W ⋆ x`` (netx_ops.conv2d), the neuron's input current
    (fixed: the raw Loihi current ``loihi_current(acc, weight_exp)``, the neuron wraps it to 24 bits and adds
    the bias; float: ``acc + b``).

    Several spike inputs (extension version 3, format §5b, the event-driven merge): one weight set ``W_k`` per
    input (``weight`` holds them side by side on the input-channel axis) and, in fixed point, one weight
    exponent ``e_k`` each; ``P["sources"]`` holds one single-input parameter set per input (bias None) and the
    current is their sum: fixed ``Σ_k loihi_current(W_k ⋆ s_k, e_k)``, float ``Σ_k W_k ⋆ s_k + b``."""

    type, neuron = "conv", True
    float_keys, fixed_keys = ("weight", "bias"), ("weight_exp", "bias_exp")

    def params(self, graph, i, fixed):
        """Weights, bias, geometry and fan-outs of a conv; one parameter set per spike input for §5b; ``in_burst``."""
        L = graph.layers[i]
        srcs = [graph.layers[k] for k in L.inputs]
        W, b = _float_or_fixed(L, "weight", fixed), _float_or_fixed(L, "bias", fixed)
        geo = dict(stride=L.params.get("stride", 1), padding=L.params.get("padding", 0),
                   groups=L.params.get("groups", 1), out_shape=L.shape)
        if len(srcs) == 1:
            P = self.make_params(W, b, fixed=fixed, weight_exp=L.fix["weight_exp"] if fixed else 0,
                                 in_shape=srcs[0].shape, spike_input=srcs[0].output == "spikes", **geo)
        else:
            exps = np.asarray(L.fix["weight_exp"]).reshape(-1) if fixed else np.zeros(len(srcs), dtype=np.int64)
            P = self.make_source_params(W, b, fixed=fixed, weight_exps=exps, in_shapes=[s.shape for s in srcs], **geo)
        P["in_burst"] = self.in_burst(graph, i)
        return P

    @staticmethod
    def make_params(weight, bias, *, fixed: bool, weight_exp: int = 0, stride=1, padding=0, groups=1, in_shape,
                    out_shape, spike_input: bool = True) -> dict:
        """The parameter set of a single-input conv: weights, bias, exponent (an int or one per output channel),
        geometry, fan-out, conv plan, MACs per step."""
        w = np.asarray(weight)
        w = w.reshape(w.shape[:4]).astype(np.int64 if fixed else np.float64)
        in_shape = tuple(int(s) for s in in_shape)
        stride, padding = pair(stride), pair(padding)
        groups = int(np.asarray(groups).reshape(-1)[0])
        return {"weight": w, "bias": None if bias is None else np.asarray(bias).reshape(-1).astype(w.dtype),
                "weight_exp": weight_exponent(weight_exp), "stride": stride, "padding": padding, "groups": groups,
                "in_shape": in_shape, "out_shape": tuple(int(s) for s in out_shape), "spike_input": bool(spike_input),
                # synaptic ops per input event: its non-zero synapses in the weights this precision runs (§7)
                "fanout": ops.conv_fanout(in_shape, w, stride, padding, groups).astype(np.float64),
                "plan": ops.ConvPlan(w, stride, padding, groups),          # W ⋆ x on numpy, planned once
                # dense multiply-accumulates of one step on a graded input: every output × in/groups·kH·kW
                "macs": float(np.prod(out_shape)) * float(np.prod(w.shape[1:]))}

    @classmethod
    def make_source_params(cls, weight, bias, *, fixed: bool, weight_exps, stride=1, padding=0, groups=1,
                           in_shapes, out_shape) -> dict:
        """Parameters of a conv with one weight set per spike input (§5b): ``weight`` (out, S·C/groups, kH, kW),
        source k's set the k-th block of C/groups input channels, ``weight_exps`` (S,)."""
        w = np.asarray(weight)
        w = w.reshape(w.shape[:4])
        S = len(in_shapes)
        cg = w.shape[1] // S
        srcs = [cls.make_params(w[:, k * cg:(k + 1) * cg], None, fixed=fixed, weight_exp=int(weight_exps[k]),
                                stride=stride, padding=padding, groups=groups, in_shape=in_shapes[k],
                                out_shape=out_shape, spike_input=True) for k in range(S)]
        b = None if bias is None else np.asarray(bias).reshape(-1).astype(srcs[0]["weight"].dtype)
        return {"sources": srcs, "bias": b, "out_shape": tuple(int(s) for s in out_shape), "spike_input": True}

    @staticmethod
    def accumulate(P, x):
        """``W ⋆ x`` for ``x`` (..., C, H, W) (exact int64 in fixed point); a single-input parameter set."""
        lead = tuple(x.shape[:-3])
        x = x.reshape((-1,) + tuple(x.shape[-3:]))
        acc = ops.conv2d(x, P["weight"], None, P["stride"], P["padding"], P["groups"]) if ops.is_torch(x) \
            else P["plan"](x)
        return acc.reshape(lead + tuple(acc.shape[1:]))

    @staticmethod
    def current(P, acc, fixed: bool):
        """The IF input from the accumulation: fixed the raw current (bias: :meth:`neuron_bias`), float ``acc + b``."""
        if fixed:
            return ops.loihi_current(acc, P["weight_exp"])
        return acc if P["bias"] is None else acc + ops.like(P["bias"], acc).reshape(-1, 1, 1)

    @classmethod
    def input_current(cls, P, xs: list, fixed: bool):
        """The IF input of the layer from its inputs' values ``xs``: one input ``current(accumulate(x))``; one
        weight set per spike input (§5b) the sum over the inputs of each one's current (fixed: every source
        shifted by its own exponent, as one bit-accurate Dense per source feeding one LIF), float plus ``b``."""
        if "sources" not in P:
            return cls.current(P, cls.accumulate(P, xs[0]), fixed)
        total = None
        for Pk, x in zip(P["sources"], xs):
            cur = cls.current(Pk, cls.accumulate(Pk, x), fixed)        # Pk has no bias: float gives W_k ⋆ s_k
            total = cur if total is None else total + cur
        return total if fixed else cls.current({"bias": P["bias"]}, total, False)

    def neuron_bias(self, P, fixed):
        """The integer bias, shaped (Co, 1, 1), that the IF neurons add after the 24-bit wrap (fixed point only)."""
        return P["bias"].reshape(-1, 1, 1) if fixed and P["bias"] is not None else None

    @staticmethod
    def counts(P, events, steps: int, messages=None) -> dict:
        """``events``: events per input element (C, H, W) over ``steps`` sample-steps (a spike input's payload);
        ``messages``: the same as message counts (graded payloads: one per non-zero payload; None = ``events``).
        One weight set per input (§5b): lists, one per input, summed over the inputs. ``synops`` = events × their
        non-zero synapses (the payload rule), ``synops_messages`` = messages × their non-zero synapses."""
        srcs = P["sources"] if "sources" in P else [P]
        evs = events if "sources" in P else [events]
        msgs = evs if messages is None else (messages if "sources" in P else [messages])
        out = {"synops": sum(synops(Pk["fanout"], ev) for Pk, ev in zip(srcs, evs)),
               "analog_macs": 0.0 if P["spike_input"] else P["macs"] * steps}
        out["synops_messages"] = out["synops"] if messages is None else \
            sum(synops(Pk["fanout"], m) for Pk, m in zip(srcs, msgs))
        return out

    def batched(self, P, ins, T, B, fixed):
        """The neurons' input currents (T or 1, B, Co, H, W) and the counts (payload and message synops, analog
        MACs)."""
        # events per input element over the T steps of the B samples (an input constant over the steps: × T)
        def per_element(f):
            return [f(x).sum(0).sum(0) * (T if x.shape[0] == 1 else 1) for x in ins]
        ev = per_element(lambda x: events(x, P["spike_input"]))
        msg = per_element(lambda x: events(x, False)) if P.get("in_burst", 1) > 1 else None
        if "sources" not in P:
            ev, msg = ev[0], None if msg is None else msg[0]
        return self.input_current(P, ins, fixed), self.counts(P, ev, T * B, msg)

    def ann(self, P, ins):
        """The QCFS input of the ANN: the float current of the rates."""
        return self.input_current(P, ins, False)


class Residual(LayerType):
    """``x(t) = Σ_k gain[k] · in_k(t)`` (float or int64); extension version 2 (§5a): the first input enters as
    ``scale ⊙ x + offset`` (fixed: ``floor(scale_mant ⊙ x / 2**scale_shift) + offset``)."""

    type, output = "mst_residual", "graded"
    float_keys, fixed_keys = ("gain",), ("gain", "unit")

    def params(self, graph, i, fixed):
        """Gains per input (float, or integers in the stage's unit), which inputs are spikes, the §5a affine."""
        L = graph.layers[i]
        gains = np.asarray(L.fix["gain"] if fixed else L.flt["gain"]).reshape(-1)
        aff = None
        if "scale" in L.flt or "offset" in L.flt:         # format §5a: a BatchNorm on the stream
            aff = {"scale": L.fix["scale_mant"], "shift": int(L.fix["scale_shift"]), "offset": L.fix["offset"]} \
                if fixed else {"scale": L.flt["scale"], "offset": L.flt["offset"]}
        P = self.make_params(gains, [graph.layers[k].output == "spikes" for k in L.inputs], fixed, aff)
        P["in_burst"] = self.in_burst(graph, i)
        return P

    @staticmethod
    def make_params(gains, spike_inputs, fixed: bool, affine: dict | None = None) -> dict:
        """The parameter set from gains, spike-input flags and an optional stream affine (§5a)."""
        g = [int(v) if fixed else float(v) for v in np.asarray(gains).reshape(-1)]
        if affine is not None:
            dt = np.int64 if fixed else np.float64
            affine = {"scale": np.asarray(affine["scale"]).astype(dt).reshape(-1), "shift": int(affine.get("shift", 0)),
                      "offset": np.asarray(affine["offset"]).astype(dt).reshape(-1)}
        return {"gains": g, "spike_inputs": [bool(s) for s in spike_inputs], "affine": affine}

    @staticmethod
    def value(P, xs, fixed: bool):
        """``Σ_k gain_k · x_k`` with the affine on the first input (float, or int64 in fixed point)."""
        acc = None
        for j, (g, x) in enumerate(zip(P["gains"], xs)):
            term = x * g if g != 1 else x
            a = P["affine"]
            if j == 0 and a is not None:
                term = ops.stream_affine_fixed(term, a["scale"], a["shift"], a["offset"]) if fixed else \
                    ops.stream_affine_float(term, a["scale"], a["offset"])
            acc = term if acc is None else acc + term
        return acc

    @staticmethod
    def counts(P, evs, messages=None) -> dict:
        """``evs``: events of each input (a spike input's payload, a graded input's non-zero values); ``messages``
        the same counted as messages (None: = ``evs``). An input with gain 0 has no synapse: no op (§7); the
        affine adds none. ``residual_adds``: the unit spikes added into the stream."""
        msgs = evs if messages is None else messages
        live = [(n, m, sp) for n, m, g, sp in zip(evs, msgs, P["gains"], P["spike_inputs"]) if g != 0]
        return {"synops": float(sum(n for n, _, _ in live)), "synops_messages": float(sum(m for _, m, _ in live)),
                "residual_adds": float(sum(n for n, _, sp in live if sp))}

    def input_events(self, P, xs):
        """(events, messages or None) of each input value, as :meth:`counts` takes them."""
        ev = [payload(x) if sp else nonzero(x) for x, sp in zip(xs, P["spike_inputs"])]
        return ev, ([nonzero(x) for x in xs] if P.get("in_burst", 1) > 1 else None)

    def batched(self, P, ins, T, B, fixed):
        """The stream value over the T steps (a constant input broadcast) and its counts."""
        out = self.value(P, ins, fixed)
        if out.shape[0] == 1 and T > 1:
            out = out.expand((T,) + tuple(out.shape[1:])) if ops.is_torch(out) else \
                np.broadcast_to(out, (T,) + out.shape[1:])
        ev, msg = self.input_events(P, ins)
        rep = [T if v.shape[0] == 1 else 1 for v in ins]
        return out, self.counts(P, [e * r for e, r in zip(ev, rep)],
                                None if msg is None else [m * r for m, r in zip(msg, rep)])

    def ann(self, P, ins):
        """The stream value of the ANN's rates."""
        return self.value(P, ins, False)


class _Windowed(LayerType):
    """Shared by the two dynamic products: windows, shift and heads of the attention (``mst/``)."""

    neuron = True

    @staticmethod
    def _window(L) -> dict:
        m = L.mst
        w = int(m["window"])
        return {"window": w, "shift": int(m["shift"]), "heads": int(m["heads"]), "N": w * w,
                "grid": tuple(int(v) for v in np.asarray(m["grid"]).reshape(-1))}

    @staticmethod
    def windows(P, S):
        return ops.to_windows(S, P["window"], P["shift"], P["heads"])


class QK(_Windowed):
    """The A-site current from the compensated spike product ``P(t) = S_q(t)·S_k(t)ᵀ`` per window and head
    (format §5): fixed ``F = floor(mant·P/(t·2**shift))``, float ``F = c·P/t``; current ``F(t) − F(t−1)``."""

    type = "mst_qk"
    float_keys, fixed_keys = ("scale",), ("scale_mant", "scale_shift")

    def params(self, graph, i, fixed):
        """Window geometry and the product constant (float ``scale``; fixed ``mant``, ``scale_shift``)."""
        L = graph.layers[i]
        P = self._window(L)
        if fixed:
            P.update(mant=int(L.fix["scale_mant"]), scale_shift=int(L.fix["scale_shift"]))
        else:
            P.update(scale=float(L.flt["scale"]))
        return P

    def products(self, P, Sq, Sk):
        """``P = S_q·S_kᵀ`` per window and head from cumulative counts on the grid (..., C, H, W)."""
        return ops.qk_products(self.windows(P, ops.as_int64(Sq)), self.windows(P, ops.as_int64(Sk)))

    def value(self, P, Sq, Sk, t, fixed: bool):
        """Step form: F(t) from the cumulative counts at step t (t >= 1)."""
        prod = self.products(P, Sq, Sk)
        return ops.qk_value_fixed(prod, t, P["mant"], P["scale_shift"]) if fixed else \
            ops.qk_value_float(prod, t, P["scale"])

    def currents(self, P, Sq, Sk, fixed: bool):
        """Time-batched: the currents F(t) − F(t−1) for cumulative counts (T, ...)."""
        prod = self.products(P, Sq, Sk)
        return ops.qk_current_fixed(prod, P["mant"], P["scale_shift"]) if fixed else \
            ops.qk_current_float(prod, P["scale"])

    @staticmethod
    def counts(P, q_events: int, k_events: int, q_msgs: int | None = None, k_msgs: int | None = None) -> dict:
        """Accumulator updates of an event-driven P: each new Q or K spike meets the N tokens of its window
        (``synops``: unit spikes; ``synops_messages``: messages, default the same)."""
        n = float((q_events + k_events) * P["N"])
        return {"synops": n, "synops_messages": n if q_msgs is None else float((q_msgs + k_msgs) * P["N"])}

    def step_counts(self, P, q, k) -> dict:
        """:meth:`counts` of input values ``q``, ``k``."""
        return self.counts(P, payload(q), payload(k), nonzero(q), nonzero(k))

    def batched(self, P, ins, T, B, fixed):
        """The A neurons' currents from the cumulative Q and K payloads, and the accumulator counts."""
        Sq, Sk = ops.cumsum0(ops.as_int64(ins[0])), ops.cumsum0(ops.as_int64(ins[1]))
        return self.currents(P, Sq, Sk, fixed), self.step_counts(P, ins[0], ins[1])

    def ann(self, P, ins):
        """``c · q kᵀ`` of the ANN's Q and K rates per window and head."""
        q, k = self.windows(P, ins[0]), self.windows(P, ins[1])
        return ops.qk_value_float(q @ k.swapaxes(-1, -2), 1, P["scale"])


class SoftmaxAV(_Windowed):
    """The AV-site current ``G(t) − G(t−1)``, ``G(t) = softmax(z(t)) @ V(t)`` of the A rates and V counts
    (relative-position bias, shift mask; fixed: the integer softmax of the exp table), on the V grid."""

    type = "mst_softmax_av"
    float_keys, fixed_keys = ("theta_a", "theta_v", "bias"), ("a_mult", "bias", "v_mant", "v_shift")

    def params(self, graph, i, fixed):
        """Window geometry, θ_A and θ_V (or their fixed-point multipliers), bias table, shift mask, exp table."""
        L = graph.layers[i]
        P = self._window(L)
        C = int(graph.layers[L.inputs[1]].shape[0])
        P.update(d=C // P["heads"], a_size=int(np.prod(graph.layers[L.inputs[0]].shape)))
        if fixed:
            P.update(a_mult=int(L.fix["a_mult"]), v_mant=int(L.fix["v_mant"]), v_shift=int(L.fix["v_shift"]),
                     bias=np.asarray(L.fix["bias"]).astype(np.int64),
                     mask=np.asarray(L.fix["mask"]).astype(np.int64) if "mask" in L.fix else None,
                     exp_table=None if graph.exp_table is None else np.asarray(graph.exp_table, dtype=np.int64),
                     prob_bits=int(graph.attrs.get("softmax_prob_bits", ops.PROB_BITS)))
        else:
            P.update(theta_a=float(L.flt["theta_a"]), theta_v=float(L.flt["theta_v"]),
                     bias=np.asarray(L.flt["bias"]).astype(np.float64),
                     mask=np.asarray(L.flt["mask"]).astype(np.float64) if "mask" in L.flt else None)
        return P

    @staticmethod
    def _kw(P, fixed: bool) -> dict:
        if fixed:
            return dict(a_mult=P["a_mult"], bias=P["bias"], mask=P["mask"], exp_table=P["exp_table"],
                        prob_bits=P["prob_bits"], v_mant=P["v_mant"], v_shift=P["v_shift"])
        return dict(theta_a=P["theta_a"], theta_v=P["theta_v"], bias=P["bias"], mask=P["mask"])

    def value(self, P, SA, SV, t, fixed: bool):
        """Step form: G(t) per window (nW, h, N, d) from the cumulative A counts and V counts (grid) at step t."""
        SA, SVw = ops.as_int64(SA), self.windows(P, ops.as_int64(SV))
        f = ops.softmax_av_value_fixed if fixed else ops.softmax_av_value_float
        return f(SA, SVw, t, **self._kw(P, fixed))

    def currents(self, P, SA, SV, fixed: bool):
        """Time-batched currents on the grid (T, ..., C, H, W) for cumulative counts (T, ...)."""
        SA, SVw = ops.as_int64(SA), self.windows(P, ops.as_int64(SV))
        f = ops.softmax_av_fixed if fixed else ops.softmax_av_float
        return self.to_grid(P, f(SA, SVw, **self._kw(P, fixed)))

    @staticmethod
    def to_grid(P, x):
        """Values per window and head (..., nW, h, N, d) back on the un-shifted (..., C, H, W) grid."""
        H, W = P["grid"]
        return ops.from_windows(x, P["window"], P["shift"], H, W)

    @staticmethod
    def counts(P, a_events: int, v_events: int, steps: int, a_msgs: int | None = None,
               v_msgs: int | None = None) -> dict:
        """Each new V spike feeds the N rows of its window, each new A spike the d values of its row; the
        softmax is evaluated on every A element every step (``softmax_elements``), times d for ``av_macs``.
        ``synops`` counts unit spikes, ``synops_messages`` messages (default the same)."""
        n_z = float(P["a_size"]) * steps
        n = float(v_events * P["N"] + a_events * P["d"])
        return {"synops": n, "synops_messages": n if a_msgs is None else float(v_msgs * P["N"] + a_msgs * P["d"]),
                "softmax_elements": n_z, "av_macs": n_z * P["d"]}

    def step_counts(self, P, a, v, steps: int) -> dict:
        """:meth:`counts` of input values ``a``, ``v`` over ``steps`` sample-steps."""
        return self.counts(P, payload(a), payload(v), steps, nonzero(a), nonzero(v))

    def batched(self, P, ins, T, B, fixed):
        """The AV neurons' currents from the cumulative A and V payloads, and the counts."""
        SA, SV = ops.cumsum0(ops.as_int64(ins[0])), ops.cumsum0(ops.as_int64(ins[1]))
        return self.currents(P, SA, SV, fixed), self.step_counts(P, ins[0], ins[1], T * B)

    def ann(self, P, ins):
        """``softmax(θ_A·A + B + M) · θ_V V`` of the ANN's rates, on the grid."""
        G = ops.softmax_av_value_float(ins[0], self.windows(P, ins[1]), 1, **self._kw(P, False))
        return self.to_grid(P, G)


class Readout(LayerType):
    """``y(t) = W · Σ_tokens x(t) + b`` of the last residual (final BN, token mean, head folded); extension
    version 2: ``Σ_tokens LN(x(t))`` per sample and step on the host (netx_ops.norm_readout_input). Fixed:
    ``(W · Σ) · 2**weight_exp + b`` in int64; logits = Σ_t y(t) · unit / T."""

    type, output = "mst_readout", "graded"
    float_keys, fixed_keys = ("weight", "bias"), ("weight_exp", "unit")

    def params(self, graph, i, fixed):
        """Head weights and bias (fixed: mantissas, exponent, unit), the token norm (§5a), fan-outs."""
        L = graph.layers[i]
        w = _float_or_fixed(L, "weight", fixed).astype(np.int64 if fixed else np.float64)
        norm = None
        if str(L.mst.get("token_norm", "none")) == "layer":     # LayerNorm per token and step (format §5a)
            src = graph.layers[L.inputs[0]]
            norm = dict(eps=float(L.flt["norm_eps"]), unit=float(src.fix["unit"]) if fixed else 1.0,
                        frac_bits=int(L.fix["norm_frac_bits"]) if fixed else None)
        return {"weight": w, "bias": _float_or_fixed(L, "bias", fixed).reshape(-1).astype(w.dtype),
                "weight_exp": int(L.fix["weight_exp"]) if fixed else 0,
                "unit": float(L.fix["unit"]) if fixed else 1.0, "norm": norm,
                "fanout": ops.dense_fanout(w).astype(np.float64)}

    @staticmethod
    def pool(P, x):
        """The readout's input (..., C) from the stream (..., C, H, W): the token sum, or with the token norm
        ``norm_readout_input`` of every sample and step (numpy, float64, on the host)."""
        if P["norm"] is None:
            return _sum_tokens(x)
        xn = x.detach().cpu().numpy() if ops.is_torch(x) else np.asarray(x)
        lead = xn.shape[:-3]
        flat = xn.reshape((-1,) + xn.shape[-3:])
        out = np.array([ops.norm_readout_input(s, **P["norm"]) for s in flat]).reshape(lead + (xn.shape[-3],))
        return ops.like(out, x)

    @staticmethod
    def value(P, pooled, fixed: bool):
        """``y`` (..., K) from the pooled input (..., C)."""
        W = ops.like(P["weight"], pooled)
        Wt = W.t() if ops.is_torch(W) else W.T
        if fixed:
            return ops.exact_matmul(pooled, Wt) * (1 << P["weight_exp"]) + ops.like(P["bias"], pooled, "int64")
        x = pooled.to(W.dtype) if ops.is_torch(pooled) else np.asarray(pooled, dtype=W.dtype)
        return x @ Wt + ops.like(P["bias"], x)

    @staticmethod
    def counts(P, events, steps: int) -> dict:
        """``events``: events per input channel (C,). Synaptic ops: × the non-zero weights of the channel (§7);
        ``analog_macs``: ``K·C`` every step."""
        n = synops(P["fanout"], events)
        return {"synops": n, "synops_messages": n, "analog_macs": float(np.prod(P["weight"].shape)) * steps}

    @staticmethod
    def logits(P, scores, T: int, fixed: bool):
        """The logits estimate from the accumulated readout ``scores = Σ_t y(t)`` (..., K): fixed point
        ``scores · unit / T`` (float64), float ``scores / T``. Predictions are the argmax of ``scores``."""
        if fixed:
            s = scores.to(ops.torch.float64) if ops.is_torch(scores) else np.asarray(scores, dtype=np.float64)
            return s * P["unit"] / T
        return scores / T

    def batched(self, P, ins, T, B, fixed):
        """The per-step class scores (T, B, K) of the stream, and the counts."""
        x = ins[0]                                   # (T, B, C, H, W): the residual stream, every step
        return self.value(P, self.pool(P, x), fixed), self.counts(P, channel_events(x), T * B)

    def ann(self, P, ins):
        """The ANN's logits from its stream."""
        return self.value(P, self.pool(P, ins[0]), False)


# every layer type an MST file may hold (the reader's order of "known" types)
LAYER_TYPES: dict[str, LayerType] = {t.type: t for t in (Input(), Conv(), QK(), SoftmaxAV(), Residual(), Readout())}
