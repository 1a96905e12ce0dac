"""Operation counts of the ANN an exported network came from: the dense ANN and the zero-skipping ANN.

The energy reports compare the SNN with two ANN baselines (docs/energy.md, "Baselines"):

* **dense ANN**: every multiply-accumulate of the layers (a conv: every output × in/groups·kH·kW; the readout:
  K·C) and of the attention products (Q·Kᵀ and softmax·V: nW·h·N·N·d each), whatever the values;
* **zero-skipping ANN**: the same model on an accelerator that skips zeros: one MAC per non-zero input × its
  non-zero synapses (the format's fan-out rule, §7, applied to the ANN's activations: QCFS levels, the
  residual stream, the image); Q·Kᵀ one MAC per pair of non-zero q and k elements that meet; softmax·V one
  MAC per non-zero V element × the N softmax weights of its window (a softmax weight is never exactly zero).

Both come from the file's own graph (:class:`mst_lava.export.graph.NetxGraph`, its float parameters), evaluated
as the ANN (``LayerType.ann``, the registry's neuron ``ann_value``) in numpy: no torch, so ``mst run`` on a Lava
backend can report them. ``snn-eval`` exports its model in memory and uses the same functions.
"""
from __future__ import annotations

import numpy as np

from mst_lava import neurons
from mst_lava.export.layers import LAYER_TYPES


def dense_counts(graph) -> dict:
    """Per-inference MACs of the dense ANN, in the structure of :func:`mst_lava.snn.counters.ann_counts`."""
    layer_macs = matmul = soft = 0.0
    rows = []
    for L in graph.layers:
        macs = 0.0
        if L.type == "conv":
            w = np.asarray(L.params["weight"])
            per_out = float(np.prod(w.shape[1:4])) / max(len(L.inputs), 1)    # §5b: one merge on the stream
            macs = float(np.prod(L.shape)) * per_out
            layer_macs += macs
        elif L.type == "mst_readout":
            macs = float(np.prod(np.asarray(L.params["weight"]).shape))
            layer_macs += macs
        elif L.type == "mst_qk":
            d = graph.layers[L.inputs[0]].shape[0] // int(L.mst["heads"])
            n_el = float(np.prod(L.shape))
            macs = 2 * n_el * d                  # Q·Kᵀ here, softmax·V at the mst_softmax_av that reads it
            matmul += macs
            soft += n_el
        if macs:
            rows.append({"name": L.name, "type": L.type, "macs": macs})
    return {"samples": 1, "macs": layer_macs + matmul, "layer_macs": layer_macs, "matmul_macs": matmul,
            "softmax_elements": soft, "layers": rows, "source": "the exported file's graph (dense ANN)"}


def _nz(x) -> np.ndarray:
    return (np.asarray(x) != 0)


def zero_skipping_counts(graph, images, batch: int = 64) -> dict:
    """Per-inference MACs of the zero-skipping ANN on ``images`` (n, C, H, W) (numpy float), mean over the images."""
    images = np.asarray(images, dtype=np.float64)
    n = len(images)
    levels = int((graph.attrs.get("model_config") or {}).get("L", 16))
    types = [LAYER_TYPES[L.type] for L in graph.layers]
    params = [t.params(graph, i, False) for i, t in enumerate(types)]
    layer_macs = matmul = 0.0
    soft = sum(float(np.prod(L.shape)) for L in graph.layers if L.type == "mst_qk")     # per image
    per_layer = np.zeros(len(graph.layers))
    for s in range(0, n, batch):
        x = images[s:s + batch]
        vals: dict[int, np.ndarray] = {}
        for i, L in enumerate(graph.layers):
            lt, P = types[i], params[i]
            ins = [vals[k] for k in L.inputs] if L.inputs else [x]
            macs = 0.0
            if L.type == "conv":
                if "sources" in P:       # §5b: the ANN's merge reads the stream, non-zero where any source is
                    ev = np.logical_or.reduce([_nz(v) for v in ins]).sum(0)
                    macs = float(np.dot(P["sources"][0]["fanout"].reshape(-1), ev.reshape(-1)))
                else:
                    macs = float(np.dot(P["fanout"].reshape(-1), _nz(ins[0]).sum(0).reshape(-1)))
                layer_macs += macs
            elif L.type == "mst_readout":
                pooled = lt.pool(P, ins[0])
                macs = float(np.dot(P["fanout"].reshape(-1), _nz(pooled).sum(0).reshape(-1)))
                layer_macs += macs
            elif L.type == "mst_qk":
                q, k = (_nz(lt.windows(P, v)).sum(-2) for v in ins)            # (B, nW, h, d) non-zero tokens
                macs = float((q * k).sum())
                matmul += macs
            elif L.type == "mst_softmax_av":
                v = _nz(lt.windows(P, ins[1])).sum()                           # non-zero V elements
                macs = float(v) * P["N"]
                matmul += macs
            per_layer[i] += macs
            out = lt.ann(P, ins)
            if lt.neuron:
                out = neurons.of(L.neuron).ann_value(out, float(L.neuron["threshold"]), levels,
                                                     neurons.burst_of(L.neuron))
            vals[i] = np.asarray(out)
    rows = [{"name": L.name, "type": L.type, "macs": per_layer[i] / n} for i, L in enumerate(graph.layers)
            if per_layer[i]]
    return {"samples": n, "macs": (layer_macs + matmul) / n, "layer_macs": layer_macs / n,
            "matmul_macs": matmul / n, "softmax_elements": soft,
            "layers": rows, "source": f"the exported file's graph on {n} images (zero-skipping ANN)"}
