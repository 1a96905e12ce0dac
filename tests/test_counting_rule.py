"""One counting rule everywhere (docs/netx-mst-format.md §7): a synaptic op is one event (a delivered
spike, or a nonzero graded value) times one **non-zero** synapse leaving it.

The rule is written once (``netx_ops.conv_fanout`` / ``dense_fanout``) and used by the torch SNN
counters (``mst_lava.snn.counters``), the torch executor of a file (``NetSim``, ``count_synops``)
and the Lava kernels (``mst_lava.lava.kernels``); these tests hold them to it on weights with zeros,
on dense layers and on flatten → dense.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_fixtures import small_model
from torch import nn

from mst_lava import netx_ops as ops
from mst_lava.export import NetSim, count_synops, export_model, read_network, write_network
from mst_lava.export.plain import conv_layer, cuba_neuron, dense_layer, flatten_layer, input_layer, plain_network
from mst_lava.lava.kernels import SynapseKernel
from mst_lava.snn.counters import conv_fanout as snn_conv_fanout
from mst_lava.snn.counters import linear_fanout


def _with_zeros(shape, seed: int, p_zero: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.integers(-5, 6, size=shape).astype(np.float64)
    w[rng.random(shape) < p_zero] = 0
    return w


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,hw", [
    (3, 4, 3, 1, 1, 1, 1, (5, 6)),
    (4, 6, 3, 2, 1, 1, 2, (7, 6)),       # grouped, strided
    (4, 4, 1, 1, 0, 1, 4, (4, 4)),       # depthwise 1×1 (the MST's SC sites)
    (2, 3, 2, 2, 0, 1, 1, (6, 6)),       # patch merging
    (2, 3, 3, 1, 2, 2, 1, (6, 5)),       # dilation
    (2, 2, 3, 3, 0, 1, 1, (7, 7)),       # uncovered border
])
def test_conv_fanout_is_the_nonzero_synapses_of_each_input(cin, cout, k, stride, pad, dil, groups, hw):
    """Every input element's fan-out = Σ over the outputs of the conv of its one-hot with (W ≠ 0)."""
    w = _with_zeros((cout, cin // groups, k, k), seed=cin * 10 + cout)
    assert (w == 0).any() and (w != 0).any()
    C, (H, W) = cin, hw
    onehots = torch.eye(C * H * W, dtype=torch.float64).reshape(-1, C, H, W)
    nz = torch.from_numpy((w != 0).astype(np.float64))
    brute = F.conv2d(onehots, nz, None, stride, pad, dil, groups).sum(dim=(1, 2, 3)).reshape(C, H, W)
    fan = ops.conv_fanout((C, H, W), w, (stride, stride), (pad, pad), groups, (dil, dil))
    np.testing.assert_array_equal(fan, brute.numpy().astype(np.int64))
    # the torch SNN counters use the same function
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
    np.testing.assert_array_equal(snn_conv_fanout(conv, hw).numpy(), fan)
    # every synapse (connectivity, mst inspect): the same with ones
    ones = torch.ones_like(nz)
    all_syn = F.conv2d(onehots, ones, None, stride, pad, dil, groups).sum(dim=(1, 2, 3)).reshape(C, H, W)
    np.testing.assert_array_equal(ops.conv_fanout((C, H, W), np.ones_like(w), (stride, stride), (pad, pad), groups,
                                                  (dil, dil)), all_syn.numpy().astype(np.int64))


def test_dense_layer_with_zero_weights_counts_two_not_six():
    """Input 0 drives two non-zero synapses, input 1 none: one event on each is 2 ops (6 synapses exist)."""
    w = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    s = np.array([[1, 1]])                                  # T = 1, one event on each input
    np.testing.assert_array_equal(ops.dense_fanout(w), [2, 0])
    g = plain_network([input_layer((2,), neuron=cuba_neuron(64)), dense_layer(w, cuba_neuron(64))])
    assert count_synops(g, {0: s}) == {1: 2}
    k = SynapseKernel("dense", w, None, in_shape=(2,), out_shape=(3,))
    k.step(0, s[0].astype(np.float64))
    assert k.counts[0] == 2
    kf = SynapseKernel("dense", w.astype(np.int64), None, in_shape=(2,), out_shape=(3,), fixed=True)
    kf.step(0, s[0].astype(np.int64))
    assert kf.counts[0] == 2
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
    np.testing.assert_array_equal(linear_fanout(lin).numpy(), [2, 0])


def test_flatten_then_dense_is_counted(tmp_path):
    """A dense layer after a flatten counts the events of the flatten's input (C-order), in count_synops
    (also on the file as written and read back) and in the Lava kernels."""
    wc = _with_zeros((4, 2, 3, 3), seed=1)
    wd = _with_zeros((5, 4 * 3 * 3), seed=2, p_zero=0.5)
    layers = [input_layer((2, 3, 3), neuron=cuba_neuron(64)),
              conv_layer(wc, (4, 3, 3), cuba_neuron(64), padding=1),
              flatten_layer(),
              dense_layer(wd, cuba_neuron(64))]
    g = plain_network(layers)
    write_network(tmp_path / "plain.net", g)
    g2 = read_network(tmp_path / "plain.net")
    assert [L.type for L in g2.layers] == ["input", "conv", "flatten", "dense"]
    rng = np.random.default_rng(0)
    T = 6
    s0 = (rng.random((T, 2, 3, 3)) < 0.4).astype(np.int64)
    s1 = (rng.random((T, 4, 3, 3)) < 0.4).astype(np.int64)
    nz_c = torch.from_numpy((wc != 0).astype(np.float64))
    want_conv = int(F.conv2d(torch.from_numpy(s0).double(), nz_c, padding=1).sum())
    want_dense = int(sum(((wd != 0) @ s1[t].reshape(-1)).sum() for t in range(T)))
    assert want_dense > 0
    for graph in (g, g2):
        assert count_synops(graph, {0: s0, 1: s1}) == {1: want_conv, 3: want_dense}
    # Lava kernels: flatten then dense
    flat = SynapseKernel("flatten", in_shape=(4, 3, 3), out_shape=(36,))
    dense = SynapseKernel("dense", wd, None, in_shape=(36,), out_shape=(5,))
    conv = SynapseKernel("conv", wc, None, in_shape=(2, 3, 3), out_shape=(4, 3, 3), padding=(1, 1))
    for t in range(T):
        dense.step(t, flat.step(t, s1[t].astype(np.float64)))
        conv.step(t, s0[t].astype(np.float64))
    assert (conv.counts[0], dense.counts[0]) == (want_conv, want_dense)


def _step_kernels(graph, x, T: int, precision: str) -> dict:
    """The Lava kernel graph of ``graph`` stepped in plain Python (no Lava runtime): synops per layer."""
    from mst_lava.lava.builder import kernel_graph
    knodes, _ = kernel_graph(graph, precision, T, graph.seed)
    data = ops.quantize_input(x, ops.INPUT_FRAC_BITS) if precision == "fixed" else x.astype(np.float64)
    synops: dict = {}
    for sample in data:
        for k in knodes:
            k.kernel.reset()
            k.kernel.counts[:] = 0
        for t in range(T):
            vals = {-1: sample}
            for k in knodes:
                vals[k.id] = k.kernel.step(t, *[vals[i] for i in k.inputs])
        for k in knodes:
            if "synops" in k.kernel.count_names:
                name = graph.layers[k.layer].name
                synops[name] = synops.get(name, 0) + int(k.kernel.counts[k.kernel.count_names.index("synops")])
    return synops


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_mst_file_with_zero_weights_netsim_equals_rule_and_lava_kernels(precision):
    """Zeroed weights in a spike-fed conv and in the readout: NetSim counts exactly the rule (checked by brute
    force on its recorded spikes), and the Lava kernels count what NetSim counts, layer by layer."""
    graph = export_model(small_model(0), precision=precision)
    q = graph.layers[graph.index("block0.attn.q")]
    ro = next(L for L in graph.layers if L.type == "mst_readout")
    rng = np.random.default_rng(3)
    for L in (q, ro):
        zero = rng.random(np.asarray(L.flt["weight"]).shape) < 0.5
        L.flt["weight"] = np.where(zero, 0.0, L.flt["weight"])
        L.params["weight"] = np.where(zero, 0, L.params["weight"]).astype(np.asarray(L.params["weight"]).dtype)
    x = torch.randn(2, *graph.layers[0].shape, generator=torch.Generator().manual_seed(0))
    T = 5
    res = NetSim(graph, precision=precision).run(x, T, record=True)
    w = np.asarray(q.params["weight"] if precision == "fixed" else q.flt["weight"])
    src = res.spikes[graph.layers[q.inputs[0]].name].double()           # (T, B, C, H, W) delivered spikes
    nz = torch.from_numpy((w != 0).astype(np.float64))
    want_q = int(F.conv2d(src.flatten(0, 1), nz).sum())
    assert 0 < res.counts["block0.attn.q"]["synops"] == want_q
    rw = np.asarray(ro.params["weight"] if precision == "fixed" else ro.flt["weight"])
    assert (rw == 0).any()
    lava = _step_kernels(graph, x.numpy(), T, precision)
    ref = {name: c["synops"] for name, c in res.counts.items() if name in lava}
    assert set(ref) == set(lava) and lava == ref
