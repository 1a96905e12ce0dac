"""Builders for plain lava-dl netx networks (input/conv/flatten/dense chains with CUBA neurons).

Written with the same :func:`~mst_lava.export.hdf5io.write_network` as MST files, so a test
can prove the standard groups are what lava-dl's ``netx.hdf5.Network`` reads.
"""
from __future__ import annotations

import numpy as np

from mst_lava.export.graph import Layer, NetxGraph


def cuba_neuron(vth: int, i_decay: int = 4096, v_decay: int = 0, ref_delay: int = 1) -> dict:
    """lava-dl CUBA neuron description (integer threshold mantissa, 12-bit decays)."""
    return {"type": "CUBA", "iDecay": np.int64(i_decay), "vDecay": np.int64(v_decay),
            "vThMant": np.int64(vth), "refDelay": np.int64(ref_delay), "gradedSpike": False}


def input_layer(shape, neuron: dict | None = None, weight: int = 64, bias: int = 0) -> Layer:
    params = {"weight": np.float32(weight), "bias": np.float32(bias)}
    return Layer(type="input", shape=tuple(shape), params=params, neuron=neuron,
                 output="spikes" if neuron else "graded")


def conv_layer(weight, out_shape, neuron: dict, *, stride=1, padding=0, bias=None, groups: int = 1) -> Layer:
    """``weight`` (out, in/groups, kH, kW) in torch layout; ``out_shape`` (C, H, W)."""
    w = np.asarray(weight)
    params = {"weight": w.astype(np.float32), "stride": np.array([stride, stride]),
              "padding": np.array([padding, padding]), "dilation": np.array([1, 1]), "groups": np.int64(groups),
              "inChannels": np.int64(w.shape[1] * groups), "outChannels": np.int64(w.shape[0]),
              "kernelSize": np.array(w.shape[2:4])}
    if bias is not None:
        params["bias"] = np.asarray(bias, dtype=np.float32)
    return Layer(type="conv", shape=tuple(out_shape), params=params, neuron=neuron)


def flatten_layer() -> Layer:
    return Layer(type="flatten", shape=None, output="spikes")


def dense_layer(weight, neuron: dict | None, bias=None) -> Layer:
    w = np.asarray(weight)
    params = {"weight": w.astype(np.float32), "inFeatures": np.int64(w.shape[1]), "outFeatures": np.int64(w.shape[0])}
    if bias is not None:
        params["bias"] = np.asarray(bias, dtype=np.float32)
    return Layer(type="dense", shape=(w.shape[0],), params=params, neuron=neuron)


def plain_network(layers: list[Layer], t_sample: int = 16) -> NetxGraph:
    for i, layer in enumerate(layers):
        layer.inputs = [i - 1] if i else []
        layer.name = layer.name or f"layer{i}"
    return NetxGraph(layers=list(layers), attrs={"tSample": int(t_sample)}, kind="netx")
