"""The standard groups are real netx: our writer's plain networks run in lava-dl, and lava-dl's
shipped networks load through our reader; synaptic-op count of tiny.net on its ground truth."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before lava)
from mst_lava.errors import MSTError
from mst_lava.export import count_synops, read_network, write_network
from mst_lava.export.plain import conv_layer, cuba_neuron, dense_layer, flatten_layer, input_layer, plain_network


def _netx_dir():
    for p in map(Path, sys.path):
        cand = p / "tests" / "lava" / "lib" / "dl" / "netx"
        if (cand / "tiny.net").exists():
            return cand
    return None


NETX = _netx_dir()
needs_shipped = pytest.mark.skipif(NETX is None, reason="lava-dl's shipped netx files not found")


def _plain_net(rng):
    # input 2x8x8 -> conv 4@3x3 stride 2 -> flatten -> dense 6 ; CUBA neurons, integer weights
    wc = rng.integers(-20, 40, size=(4, 2, 3, 3))
    wd = rng.integers(-30, 60, size=(6, 4 * 3 * 3))
    layers = [input_layer((2, 8, 8), cuba_neuron(vth=80, v_decay=0), weight=64, bias=0),
              conv_layer(wc, (4, 3, 3), cuba_neuron(vth=40), stride=2),
              flatten_layer(),
              dense_layer(wd, cuba_neuron(vth=30))]
    return plain_network(layers), wc, wd


def test_plain_network_round_trips_and_runs_in_lava_dl(tmp_path):
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.conv import utils as conv_utils
    conv_utils.TORCH_IS_AVAILABLE = False

    rng = np.random.default_rng(0)
    graph, wc, wd = _plain_net(rng)
    path = tmp_path / "plain.net"
    write_network(path, graph)

    back = read_network(path)                         # our reader: plain netx kind
    assert back.kind == "netx" and [lay.type for lay in back.layers] == ["input", "conv", "flatten", "dense"]
    np.testing.assert_array_equal(back.layers[1].params["weight"], wc)

    net = netx.hdf5.Network(net_config=str(path))     # lava-dl's own reader
    assert len(net) == 3
    assert type(net.layers[0]) is netx.blocks.process.Input
    assert type(net.layers[1]) is netx.blocks.process.Conv
    assert type(net.layers[2]) is netx.blocks.process.Dense
    assert net.layers[1].shape == (3, 3, 4) and net.layers[2].shape == (6,)
    # netx flips the kernel and reorders it to Lava's (out, x, y, in)
    lava_w = net.layers[1].synapse.weight.init
    np.testing.assert_array_equal(np.asarray(lava_w), wc[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))

    steps = 12
    # constant input current: input neurons driven by bias (the test_hdf5 way)
    net.in_layer.neuron.bias_mant.init = rng.integers(0, 12, size=(8, 8, 2))
    sink = io.sink.RingBuffer(shape=net.out_layer.out.shape, buffer=steps)
    net.out_layer.out.connect(sink.a_in)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = sink.data.get()
    finally:
        net.stop()
    assert out.shape == (6, steps)
    assert out.sum() > 0                               # spikes made it through all layers


@needs_shipped
@pytest.mark.parametrize("name,types", [
    ("tiny.net", ["input", "conv", "conv"]),
    ("mnist.net", ["input", "dense", "dense", "dense"]),
    ("gts/pilotnet_lif/network.net", None),
])
def test_shipped_networks_load_through_reader(name, types):
    g = read_network(NETX / name)
    assert g.kind == "netx"
    if types:
        assert [lay.type for lay in g.layers] == types
    assert g.layers[0].type == "input"
    for layer in g.layers:
        if layer.type in ("conv", "dense"):
            assert "weight" in layer.params


@needs_shipped
def test_tiny_net_synops_on_ground_truth_match_independent_count():
    g = read_network(NETX / "tiny.net")
    gts = NETX / "gts" / "tinynet"
    s_in = np.load(gts / "input.npy")[0]              # (C, H, W, T) spikes of the input layer
    s_l1 = np.load(gts / "layer1.npy")[0]             # (C, H, W, T) spikes of conv layer 1
    spikes = {0: np.moveaxis(s_in, -1, 0), 1: np.moveaxis(s_l1, -1, 0)}
    ops = count_synops(g, spikes)

    # independent: Σ_out conv(s, W ≠ 0) counts, for every input event, the non-zero synapses it drives
    # (format §7; tiny.net has zero weights: 210 in layer 1, 9033 in layer 2)
    def ones_conv_total(s, layer):
        w = np.asarray(layer.params["weight"])
        k = torch.from_numpy((w.reshape(w.shape[:4]) != 0).astype(np.float64))
        st = int(np.asarray(layer.params["stride"]).reshape(-1)[0])
        x = torch.from_numpy(np.moveaxis(s, -1, 0).astype(np.float64))   # (T, C, H, W)
        return int(torch.nn.functional.conv2d(x, k, stride=st).sum())

    want1 = ones_conv_total(s_in, g.layers[1])
    want2 = ones_conv_total(s_l1, g.layers[2])
    assert s_in.sum() > 0 and s_l1.sum() > 0
    assert ops == {1: want1, 2: want2}


def test_reader_refuses_cuba_in_mst_file(tmp_path):
    from model_fixtures import small_model

    from mst_lava.export import export_model
    graph = export_model(small_model(0), precision="float")
    graph.layers[1].neuron = {k: v for k, v in cuba_neuron(vth=40).items()}
    graph.layers[1].neuron["threshold"] = 1.0
    path = tmp_path / "bad.net"
    write_network(path, graph)
    with pytest.raises(MSTError, match=r"layer/1 \(embed\)/neuron: type is 'CUBA'; MST neurons must be .IF."):
        read_network(path)
    # a plain netx chain dressed up as an MST file is refused by position and type, not run
    plain, _, _ = _plain_net(np.random.default_rng(1))
    plain.kind = "mst"
    for i, layer in enumerate(plain.layers):
        layer.mst = {"layout": "none"}
        layer.name = f"l{i}"
    plain.layers[2].shape = (36,)
    plain.attrs["precision"] = "float"
    write_network(path, plain)
    with pytest.raises(MSTError, match=r"layer/0 \(l0\)"):
        read_network(path)


def test_lava_dl_netx_on_an_mst_file_fails_as_the_format_doc_says(tmp_path):
    """docs/netx-mst-format.md §1: netx skips our extension layer types and fails at the first IF neuron:
    get_neuron_params returns None for type 'IF', and AbstractBlock.__init__ (netx/blocks/process.py)
    raises AttributeError: 'NoneType' object has no attribute 'pop'."""
    from lava.lib.dl import netx
    from model_fixtures import small_model

    from mst_lava.export import export_model
    path = tmp_path / "mst.net"
    write_network(path, export_model(small_model(0), precision="fixed"))
    assert netx.hdf5.Network.get_neuron_params({"type": "IF"}) is None
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'pop'") as e:
        netx.hdf5.Network(net_config=str(path))
    assert e.traceback[-1].path.name == "process.py" and e.traceback[-1].path.parent.name == "blocks"
