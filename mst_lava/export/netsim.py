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
from mst_lava import neurons
from mst_lava.errors import MSTError
from mst_lava.export.graph import NetxGraph
from mst_lava.export.layers import LAYER_TYPES, new_counts, pair, result_totals, rsm_site


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
        """Totals over every layer (:func:`mst_lava.export.layers.result_totals`, the keys the Lava runner's have)."""
        return result_totals(self.counts)


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
    def _device_params(self, P: dict, dtype) -> dict:
        """A layer's numpy parameters (:mod:`mst_lava.export.layers`) as tensors on the device: integers
        int64, floats ``dtype``, the synaptic fan-outs float64 (exact counts); per-input sets alike."""
        out = {}
        for k, v in P.items():
            if k == "sources":                     # one parameter set per spike input (format §5b)
                v = [self._device_params(Pk, dtype) for Pk in v]
            elif isinstance(v, np.ndarray):
                integer = v.dtype.kind in "iub"
                dt = torch.int64 if integer else torch.float64 if k == "fanout" else dtype
                v = torch.as_tensor(v.astype(np.int64 if integer else np.float64), device=self.device).to(dt)
            out[k] = v
        return out

    def _prep(self) -> None:
        g = self.graph
        self.types, self.p, self.rsm = [], [], []
        n_users = [0] * len(g.layers)
        for i, L in enumerate(g.layers):
            if L.type not in LAYER_TYPES:
                raise MSTError(f"layer {i} ({L.name}): type {L.type!r} is not executable by NetSim")
            for k in L.inputs:
                n_users[k] += 1
            lt = LAYER_TYPES[L.type]
            P = self._device_params(lt.params(g, i, self.fixed), self.dtype)
            if lt.neuron:
                P["vth"] = L.threshold(self.precision)
                P["burst"] = neurons.burst_of(L.neuron)
            site = rsm_site(L)
            if site is not None:
                site["index"] = torch.as_tensor(site["index"], device=self.device)
            self.types.append(lt)
            self.p.append(P)
            self.rsm.append(site)
        self.n_users = n_users

    # -- helpers ---------------------------------------------------------------------------
    def _spike_dtype(self):
        return torch.int64 if self.fixed else self.dtype

    @staticmethod
    def _mask(site, spikes: torch.Tensor, T: int, seed: int) -> torch.Tensor:
        if site is None:
            return spikes
        keep = torch.stack([ops.rsm_keep(seed, site["site_id"], site["block"], t, site["index"], site["threshold"])
                            for t in range(T)], 0)                    # T, *shape
        return spikes * keep.unsqueeze(1)         # a dropped message loses its whole payload

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
        if not self.fixed:
            x = x.to(self.dtype)
        B = x.shape[0]
        vals: dict[int, torch.Tensor] = {}
        users = list(self.n_users)
        counts: dict = {}
        recorded = {}
        readout = None
        logits = pred = None
        for i, L in enumerate(g.layers):
            lt, P = self.types[i], self.p[i]
            c = new_counts(L)
            ins = [vals[k] for k in L.inputs] if L.inputs else [x]
            # the layer's value (a neuron layer: its input current) and its counts (format §7)
            out, extra = lt.batched(P, ins, T, B, self.fixed)
            c.update({k: int(round(v)) for k, v in extra.items()})
            if lt.neuron:
                if not self.fixed:
                    out = out.to(self.dtype)
                out = self._neuron(P, self.rsm[i], out, T, seed, c, lt.neuron_bias(P, self.fixed))
            elif L.type == "mst_readout":
                readout = out
                tot = out.sum(0)
                logits = lt.logits(P, tot, T, self.fixed)
                pred = tot.argmax(-1)
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

        for i, L in enumerate(g.layers):
            lt = self.types[i]
            P = self._device_params(lt.params(g, i, False), dt)
            out = lt.ann(P, [vals[k] for k in L.inputs] if L.inputs else [x])
            vals[i] = neurons.of(L.neuron).ann_value(out, float(L.neuron["threshold"]), L_levels,
                                                     neurons.burst_of(L.neuron)) if lt.neuron else out
        return vals[int(g.attrs.get("output_layer", len(g.layers) - 1))]

    def _neuron(self, P, site, cur, T, seed, c, bias=None):
        spikes, _, ovf = ops.if_scan(cur, P["vth"], self.fixed, T=T, bias=bias, burst=P["burst"])
        c.update(ovf)                      # 24-bit current wraps and voltage saturations (fixed; 0 in float)
        c["spikes"] = int(spikes.sum())    # unit spikes: a graded payload s counts s
        c["neuron_updates"] = int(np.prod(spikes.shape))
        spikes = self._mask(site, spikes, T, seed)
        c["delivered"] = int(spikes.sum())
        c["messages"] = int((spikes != 0).sum())
        c["dropped"] = c["spikes"] - c["delivered"]
        return spikes.to(self._spike_dtype())


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
                                  pair(L.params.get("stride", 1)), pair(L.params.get("padding", 0)),
                                  int(np.asarray(L.params.get("groups", 1))))
        else:
            fan = ops.dense_fanout(L.params["weight"])
        out[i] = int((ev.reshape(T, -1).astype(np.int64) @ fan.reshape(-1)).sum())
    return out
