"""Torch executor of an exported network file (float or fixed point), CPU or CUDA.

Runs exactly the network the exporter wrote: in ``fixed`` precision integer weights,
thresholds, biases and the integer softmax / dynamic products of :mod:`mst_lava.netx_ops`
(the same functions the Lava ProcessModels call), so its spike counts are the reference the
Lava run must equal bit for bit. Time is folded into the batch: each layer is evaluated for
all T steps at once (the graph is feed-forward in time), only the IF neurons scan over T.

    sim = NetSim(read_network("export/digits.net"), device="cuda")
    res = sim.run(images, T=32)          # images (B, C, H, W), normalized as in training
    res.pred, res.logits, res.counts["block0.attn.q"]["spikes"]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mst_lava import netx_ops as ops
from mst_lava.errors import MSTError
from mst_lava.export.graph import NetxGraph, token_norm, uses_stream_affine


@dataclass
class SimResult:
    logits: torch.Tensor                 # (B, K) float estimate of the ANN logits
    pred: torch.Tensor                   # (B,) argmax of the accumulated readout
    counts: dict                         # layer name → {"site", "block", "type", "spikes", "delivered", "dropped",
                                         #   "neurons", "synops", "neuron_updates", ...} (docs/netx-mst-format.md §7)
    readout: torch.Tensor | None = None  # (T, B, K) per-step readout (int64 in fixed precision)
    spikes: dict = field(default_factory=dict)  # layer name → (T, B, ...) delivered spikes, when record=True

    def site_counts(self) -> dict:
        """{"SITE@BLOCK": spikes} summed over the batch, sites only."""
        return {f"{c['site']}@{c['block']}": c["spikes"] for c in self.counts.values() if c["site"]}

    def totals(self) -> dict:
        keys = ("spikes", "delivered", "synops", "neuron_updates")
        return {k: int(sum(c.get(k, 0) for c in self.counts.values())) for k in keys}


class NetSim:
    """Executor of an MST netx graph. ``precision`` defaults to the file's."""

    def __init__(self, graph: NetxGraph, precision: str | None = None, device="cpu",
                 dtype: torch.dtype = torch.float64):
        if graph.kind != "mst":
            raise MSTError(f"{graph.path or 'network'} is a plain netx file; NetSim runs mst_lava.netx files "
                           "(use count_synops for plain netx spike trains)")
        self.graph = graph
        self.precision = precision or graph.precision
        if self.precision not in ("float", "fixed"):
            raise MSTError(f"precision must be 'float' or 'fixed', not {self.precision!r}")
        if self.precision == "fixed" and graph.precision != "fixed":
            raise MSTError(f"{graph.path or 'network'} was exported with --precision float; "
                           "re-export with --precision fixed to run fixed point")
        self.device = torch.device(device)
        self.dtype = dtype
        self.fixed = self.precision == "fixed"
        self._prep()

    # -- parameters on the device ------------------------------------------------------
    def _t(self, a, integer=False):
        arr = np.asarray(a)
        return torch.as_tensor(arr.astype(np.int64 if integer else np.float64), device=self.device).to(
            torch.int64 if integer else self.dtype)

    def _prep(self) -> None:
        g = self.graph
        self.p = []
        n_users = [0] * len(g.layers)
        for i, L in enumerate(g.layers):
            for k in L.inputs:
                n_users[k] += 1
            P = {}
            if L.type in ("conv", "mst_readout", "dense"):
                if self.fixed:
                    P["w"] = self._t(L.params["weight"], True)
                    P["b"] = self._t(L.params["bias"], True)
                    P["exp"] = int(L.fix["weight_exp"])
                else:
                    P["w"] = self._t(L.flt["weight"])
                    P["b"] = self._t(L.flt["bias"])
            if L.neuron is not None:
                P["vth"] = L.threshold(self.precision)
            if L.type == "mst_residual":
                P["gain"] = [int(v) for v in np.asarray(L.fix["gain"]).reshape(-1)] if self.fixed else \
                    [float(v) for v in np.asarray(L.flt["gain"]).reshape(-1)]
                if uses_stream_affine(L):          # §5a: the first input passes a BatchNorm on the stream
                    P["affine"] = (lambda x, L=L: ops.stream_affine_fixed(
                        x, L.fix["scale_mant"], int(L.fix["scale_shift"]), L.fix["offset"])) if self.fixed else \
                        (lambda x, L=L: ops.stream_affine_float(x, L.flt["scale"], L.flt["offset"]))
            if L.type == "mst_readout" and token_norm(L) == "layer":
                src = g.layers[L.inputs[0]]
                P["norm"] = dict(eps=float(L.flt["norm_eps"]),
                                 unit=float(src.fix["unit"]) if self.fixed else 1.0,
                                 frac_bits=int(L.fix["norm_frac_bits"]) if self.fixed else None)
            if L.type == "mst_softmax_av":
                if self.fixed:
                    P["bias"] = self._t(L.fix["bias"], True)
                    P["mask"] = self._t(L.fix["mask"], True) if "mask" in L.fix else None
                else:
                    P["bias"] = self._t(L.flt["bias"])
                    P["mask"] = self._t(L.flt["mask"]) if "mask" in L.flt else None
            if L.site and L.rsm_ratio > 0:
                idx = ops.rsm_index(L.mst["layout"], L.shape, grid=L.mst.get("grid"),
                                    window=int(L.mst.get("window", 0)), shift=int(L.mst.get("shift", 0)),
                                    heads=int(L.mst.get("heads", 1)))
                P["rsm_index"] = torch.as_tensor(idx, device=self.device)
            # synaptic ops per input event: its non-zero synapses in the weights this precision runs (§7)
            if L.type == "conv":
                in_shape = g.layers[L.inputs[0]].shape
                P["fanout"] = torch.as_tensor(ops.conv_fanout(in_shape, P["w"], _pair(L.params.get("stride", 1)),
                                                              _pair(L.params.get("padding", 0)),
                                                              int(np.asarray(L.params.get("groups", 1)))),
                                              device=self.device, dtype=torch.float64)
            if L.type == "mst_readout":
                P["fanout"] = torch.as_tensor(ops.dense_fanout(P["w"]), device=self.device,
                                              dtype=torch.float64).view(-1, 1, 1)
            self.p.append(P)
        self.n_users = n_users
        self.exp_table = torch.as_tensor(g.exp_table, device=self.device) if g.exp_table is not None else None

    # -- helpers ---------------------------------------------------------------------------
    def _spike_dtype(self):
        return torch.int64 if self.fixed else self.dtype

    def _mask(self, L, P, spikes: torch.Tensor, T: int, seed: int) -> torch.Tensor:
        if "rsm_index" not in P:
            return spikes
        thr = int(L.mst["rsm_threshold"])
        keep = torch.stack([ops.rsm_keep(seed, int(L.mst["site_id"]), L.block, t, P["rsm_index"], thr)
                            for t in range(T)], 0)                    # T, *shape
        return spikes & keep.unsqueeze(1)

    # -- run -------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, x, T: int, *, seed: int | None = None, record: bool = False) -> SimResult:
        """Simulate ``T`` steps on images ``x`` (B, C, H, W). ``seed`` overrides the file's RSM seed."""
        g = self.graph
        T = int(T)
        if T < 1:
            raise MSTError(f"T must be >= 1, got {T}")
        seed = g.seed if seed is None else int(seed)
        x = torch.as_tensor(x, device=self.device)
        in_shape = tuple(g.layers[0].shape)
        if x.ndim == len(in_shape):
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != in_shape:
            raise MSTError(f"input has shape {tuple(x.shape[1:])} per sample; the network expects {in_shape}")
        B = x.shape[0]
        vals: dict[int, torch.Tensor] = {}
        users = list(self.n_users)
        counts: dict = {}
        recorded = {}
        readout = None
        logits = pred = None
        for i, L in enumerate(g.layers):
            P = self.p[i]
            c = {"site": L.site, "block": L.block, "type": L.type, "spikes": 0, "delivered": 0, "dropped": 0,
                 "neurons": int(np.prod(L.shape)), "synops": 0, "neuron_updates": 0}
            ins = [vals[k] for k in L.inputs]
            out = None
            if L.type == "input":
                out = ops.quantize_input(x) if self.fixed else x.to(self.dtype)
                out = out.unsqueeze(0)                                            # (1, B, C, H, W): constant
            elif L.type == "conv":
                src = ins[0]
                Tin = src.shape[0]
                acc = ops.conv2d(src.reshape((Tin * B,) + tuple(src.shape[2:])), P["w"], None,
                                 _pair(L.params.get("stride", 1)), _pair(L.params.get("padding", 0)),
                                 int(np.asarray(L.params.get("groups", 1))))
                acc = acc.reshape((Tin, B) + tuple(acc.shape[1:]))
                bias = P["b"].view(1, 1, -1, 1, 1)
                if self.fixed:                 # raw current; the neuron wraps it to 24 bits and adds the bias
                    cur, nbias = ops.loihi_current(acc, P["exp"]), P["b"].view(1, -1, 1, 1)
                else:
                    cur, nbias = acc + bias, None
                events = (src != 0).sum(dim=(0, 1)).to(torch.float64)          # per input element
                c["synops"] = int(round(float((events * P["fanout"]).sum()) * (T if Tin == 1 else 1)))
                # a graded input also costs dense multiply-accumulates, every step (as the Lava Synapse)
                c["analog_macs"] = 0 if g.layers[L.inputs[0]].output == "spikes" else \
                    int(np.prod(L.shape)) * int(np.prod(P["w"].shape[1:])) * T * B
                out = self._neuron(L, P, cur, T, seed, c, nbias)
            elif L.type == "mst_residual":
                out = None
                c["residual_adds"] = 0
                for j, (k, gain, v) in enumerate(zip(L.inputs, P["gain"], ins)):
                    term = v * gain if gain != 1 else v
                    if j == 0 and "affine" in P:
                        term = P["affine"](term)
                    out = term if out is None else out + term
                    if gain == 0:
                        continue                              # no synapse: no op (§7)
                    nz = int((v != 0).sum()) * (T if v.shape[0] == 1 else 1)
                    c["synops"] += nz
                    if g.layers[k].output == "spikes":
                        c["residual_adds"] += nz              # spike events added into the stream
                if out.shape[0] == 1 and T > 1:
                    out = out.expand((T,) + tuple(out.shape[1:]))
            elif L.type == "mst_qk":
                w, s, h = int(L.mst["window"]), int(L.mst["shift"]), int(L.mst["heads"])
                Sq = ops.to_windows(ops.cumsum0(ins[0].to(torch.int64)), w, s, h)
                Sk = ops.to_windows(ops.cumsum0(ins[1].to(torch.int64)), w, s, h)
                Pm = ops.qk_products(Sq, Sk)
                if self.fixed:
                    cur = ops.qk_current_fixed(Pm, int(L.fix["scale_mant"]), int(L.fix["scale_shift"]))
                else:
                    cur = ops.qk_current_float(Pm, float(L.flt["scale"])).to(self.dtype)
                N = w * w
                c["synops"] = int(((ins[0] != 0).sum() + (ins[1] != 0).sum()) * N)
                out = self._neuron(L, P, cur, T, seed, c)
            elif L.type == "mst_softmax_av":
                w, s, h = int(L.mst["window"]), int(L.mst["shift"]), int(L.mst["heads"])
                H, W = (int(v) for v in np.asarray(L.mst["grid"]).reshape(-1))
                SA = ops.cumsum0(ins[0].to(torch.int64))
                SV = ops.to_windows(ops.cumsum0(ins[1].to(torch.int64)), w, s, h)
                if self.fixed:
                    cur = ops.softmax_av_fixed(SA, SV, a_mult=int(L.fix["a_mult"]), bias=P["bias"], mask=P["mask"],
                                               exp_table=self.exp_table, prob_bits=int(g.attrs["softmax_prob_bits"]),
                                               v_mant=int(L.fix["v_mant"]), v_shift=int(L.fix["v_shift"]))
                else:
                    cur = ops.softmax_av_float(SA, SV, theta_a=float(L.flt["theta_a"]),
                                               theta_v=float(L.flt["theta_v"]), bias=P["bias"],
                                               mask=P["mask"]).to(self.dtype)
                cur = ops.from_windows(cur, w, s, H, W)
                d = SV.shape[-1]
                c["synops"] = int((ins[1] != 0).sum() * w * w + (ins[0] != 0).sum() * d)
                n_z = int(np.prod(g.layers[L.inputs[0]].shape)) * T * B       # softmax inputs, every step
                c["softmax_elements"] = n_z
                c["av_macs"] = n_z * d
                out = self._neuron(L, P, cur, T, seed, c)
            elif L.type == "mst_readout":
                src = ins[0]
                if "norm" in P:          # §5a: LayerNorm per token, sample and step, on the host (numpy, float64)
                    xn = src.cpu().numpy()
                    rows = [[ops.norm_readout_input(xn[t, j], **P["norm"]) for j in range(xn.shape[1])]
                            for t in range(xn.shape[0])]
                    xs = torch.as_tensor(np.array(rows), device=self.device)
                else:
                    xs = src.sum(dim=(-2, -1))                                  # (T, B, C) token sum
                if self.fixed:
                    y = ops.exact_matmul(xs, P["w"].t()) * (1 << P["exp"]) + P["b"]
                    readout = y
                    tot = y.sum(0)
                    logits = tot.to(torch.float64) * float(L.fix["unit"]) / T
                    pred = tot.argmax(-1)
                else:
                    y = xs.to(self.dtype) @ P["w"].t() + P["b"]
                    readout = y
                    logits = y.sum(0) / T
                    pred = logits.argmax(-1)
                c["synops"] = int(round(float(((src != 0).sum(dim=(0, 1)).to(torch.float64) * P["fanout"]).sum())))
                c["analog_macs"] = int(np.prod(P["w"].shape)) * T * B
                out = y
            else:
                raise MSTError(f"layer {i} ({L.name}): type {L.type!r} is not executable by NetSim")
            vals[i] = out
            counts[L.name or f"layer{i}"] = c
            if record and L.output == "spikes":
                recorded[L.name] = out
            for k in L.inputs:
                users[k] -= 1
                if users[k] == 0 and not record:
                    del vals[k]
        if logits is None:
            raise MSTError("network has no mst_readout layer")
        return SimResult(logits=logits.float(), pred=pred, counts=counts, readout=readout, spikes=recorded)

    @torch.no_grad()
    def run_ann(self, x, L_levels: int | None = None) -> torch.Tensor:
        """The exported float graph evaluated as the ANN it came from (QCFS in place of IF, no masks).

        Every neuron layer outputs its QCFS rate in [0, 1] (λ is folded into the next weights),
        dynamic products act on rates. Equals the model's logits up to float rounding when
        BN folding and all weight layouts are right. Returns (B, K) logits.
        """
        g = self.graph
        if L_levels is None:
            cfg = g.attrs.get("model_config") or {}          # a dict (read_network decodes it)
            L_levels = int(cfg.get("L", 16))
        dt = torch.float64
        x = torch.as_tensor(x, device=self.device, dtype=dt)
        vals = {}

        def qcfs_rate(cur, theta):
            return torch.clamp(torch.floor(cur * (L_levels / theta) + 0.5), 0, L_levels) / L_levels

        for i, L in enumerate(g.layers):
            ins = [vals[k] for k in L.inputs]
            if L.type == "input":
                out = x
            elif L.type == "conv":
                w = self._t(L.flt["weight"]).to(dt)
                cur = ops.conv2d(ins[0], w, self._t(L.flt["bias"]).to(dt), _pair(L.params.get("stride", 1)),
                                 _pair(L.params.get("padding", 0)), int(np.asarray(L.params.get("groups", 1))))
                out = qcfs_rate(cur, float(L.neuron["threshold"]))
            elif L.type == "mst_residual":
                terms = [v * float(gn) for v, gn in zip(ins, np.asarray(L.flt["gain"]).reshape(-1))]
                if uses_stream_affine(L):
                    terms[0] = ops.stream_affine_float(terms[0], L.flt["scale"], L.flt["offset"])
                out = sum(terms)
            elif L.type == "mst_qk":
                w, s, h = int(L.mst["window"]), int(L.mst["shift"]), int(L.mst["heads"])
                q, k = ops.to_windows(ins[0], w, s, h), ops.to_windows(ins[1], w, s, h)
                out = qcfs_rate(float(L.flt["scale"]) * (q @ k.transpose(-1, -2)), float(L.neuron["threshold"]))
            elif L.type == "mst_softmax_av":
                w, s, h = int(L.mst["window"]), int(L.mst["shift"]), int(L.mst["heads"])
                H, W = (int(v) for v in np.asarray(L.mst["grid"]).reshape(-1))
                z = ins[0] * float(L.flt["theta_a"]) + self._t(L.flt["bias"]).to(dt)
                if "mask" in L.flt:
                    m = self._t(L.flt["mask"]).to(dt)
                    z = z + m.unsqueeze(1)
                v = ops.to_windows(ins[1], w, s, h) * float(L.flt["theta_v"])
                cur = ops.from_windows(torch.softmax(z, -1) @ v, w, s, H, W)
                out = qcfs_rate(cur, float(L.neuron["threshold"]))
            elif L.type == "mst_readout":
                xr = ins[0]
                if token_norm(L) == "layer":     # LayerNorm over the channels of every token (§5a)
                    mu = xr.mean(dim=1, keepdim=True)
                    d = xr - mu
                    xr = d / torch.sqrt((d * d).mean(dim=1, keepdim=True) + float(L.flt["norm_eps"]))
                out = xr.sum(dim=(-2, -1)) @ self._t(L.flt["weight"]).to(dt).t() + self._t(L.flt["bias"]).to(dt)
            else:
                raise MSTError(f"layer {i} ({L.name}): type {L.type!r} is not executable by NetSim")
            vals[i] = out
        return vals[int(g.attrs.get("output_layer", len(g.layers) - 1))]

    def _neuron(self, L, P, cur, T, seed, c, bias=None):
        vth = P["vth"]
        spikes, _, ovf = ops.if_scan(cur, vth, self.fixed, T=T, bias=bias)
        c.update(ovf)                      # 24-bit current wraps and voltage saturations (fixed; 0 in float)
        c["spikes"] = int(spikes.sum())
        c["neuron_updates"] = int(np.prod(spikes.shape))
        spikes = self._mask(L, P, spikes, T, seed)
        c["delivered"] = int(spikes.sum())
        c["dropped"] = c["spikes"] - c["delivered"]
        return spikes.to(self._spike_dtype())


def _pair(v):
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def count_synops(graph: NetxGraph, spikes: dict) -> dict:
    """Synaptic ops of plain conv/dense layers given presynaptic spike trains (format §7).

    ``spikes`` maps a layer index to that layer's output spikes as (T, C, H, W) or (T, n)
    (any array; nonzero = an event). Returns {consumer layer index: ops}, where one event
    of a presynaptic neuron costs one op per non-zero synapse leaving it (conv:
    :func:`netx_ops.conv_fanout`; dense: :func:`netx_ops.dense_fanout`). A ``flatten``
    between the spiking layer and a dense layer only reorders the events (C-order), so a
    dense layer after a flatten is counted from the spikes of the flatten's input.
    """
    out = {}
    for i, L in enumerate(graph.layers):
        if L.type not in ("conv", "dense") or not L.inputs:
            continue
        src = L.inputs[0]
        while src not in spikes and graph.layers[src].type == "flatten" and graph.layers[src].inputs:
            src = graph.layers[src].inputs[0]
        if src not in spikes:
            continue
        ev = np.asarray(spikes[src]) != 0
        T = ev.shape[0]
        if L.type == "conv":
            w = np.asarray(L.params["weight"])
            fan = ops.conv_fanout(tuple(graph.layers[src].shape), w.reshape(w.shape[:4]),
                                  _pair(L.params.get("stride", 1)), _pair(L.params.get("padding", 0)),
                                  int(np.asarray(L.params.get("groups", 1))))
        else:
            fan = ops.dense_fanout(L.params["weight"])
        out[i] = int((ev.reshape(T, -1).astype(np.int64) @ fan.reshape(-1)).sum())
    return out
