"""mst inspect: per-layer synapse counts against an independent count, bit widths from the file,
placement per target, a greedy core partition within the per-core limits, Markdown and JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
from model_fixtures import small_model  # noqa: E402

from mst_lava import netx_ops as ops
from mst_lava.cli import main
from mst_lava.export import export_model, read_network, write_network
from mst_lava.inspect_net import core_limits, inspect_graph


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect")
    m = small_model(0)
    for prec in ("fixed", "float"):
        write_network(d / f"{prec}.net", export_model(m, precision=prec))
    return d


def test_synapse_counts_bit_widths_and_partition(nets):
    g = read_network(nets / "fixed.net")
    rep = inspect_graph(g, "loihi2")
    rows = {r["name"]: r for r in rep["layers"]}
    for name in ("embed", "block0.attn.q", "merge1", "block0.sc1"):
        L = g.layers[g.index(name)]
        w = np.asarray(L.params["weight"])
        src = g.layers[L.inputs[0]].shape
        stride = tuple(np.broadcast_to(np.asarray(L.params["stride"]).reshape(-1), (2,)))
        pad = tuple(np.broadcast_to(np.asarray(L.params["padding"]).reshape(-1), (2,)))
        fan = ops.conv_fanout(src, np.ones(w.shape, dtype=bool), stride, pad, int(L.params["groups"]))
        r = rows[name]
        assert r["synapses"] == int(fan.sum()) and r["fan_out"] == int(fan.max())   # every connection once
        assert r["fan_in"] == w.shape[1] * w.shape[2] * w.shape[3]
        assert r["nonzero_synapses"] <= r["synapses"]
        assert r["weight_bits"] <= 8 and -8 <= r["weight_exp"] <= 7 and r["threshold_bits"] <= 17
        assert r["bias_bits"] <= 13 and 0 <= r["bias_exp"] <= 7
        assert r["maps_to"] == "neurocore" and r["cores"] >= 1
    assert rows["block0.attn.a"]["mapping"].startswith("embedded processors")
    assert rows["readout"]["maps_to"] == rows["input"]["maps_to"] == "host"
    t = rep["totals"]
    assert t["cores"] == sum(r["cores"] for r in rep["layers"]) and t["chips"] == 1
    lim = core_limits("loihi2")
    for r in rep["layers"]:
        if r.get("core_max"):
            assert r["core_max"]["neurons"] <= lim["neurons"] and r["core_max"]["synapses"] <= lim["synapses"]


def test_loihi1_keeps_graded_layers_off_the_cores_and_fits_its_limits(nets):
    rep = inspect_graph(read_network(nets / "fixed.net"), "loihi")
    rows = {r["name"]: r for r in rep["layers"]}
    assert rows["block0.attn.q"]["maps_to"] == "neurocore"
    for name in ("embed", "block0.sc1", "stage0.in", "merge1", "block0.attn.a"):
        assert rows[name]["maps_to"] == "host"                      # graded streams: no Loihi 1 spikes
    lim = core_limits("loihi")
    for r in rep["layers"]:
        cm = r.get("core_max")
        if cm:
            assert cm["neurons"] <= lim["neurons"] and cm["fan_in_axons"] <= lim["fan_in"]
            assert cm["synapse_bits"] <= lim["synapse_bits"]


def test_cli_markdown_and_json(nets, tmp_path, capsys):
    out = tmp_path / "i.json"
    assert main(["inspect", str(nets / "fixed.net"), "--target", "loihi", "--json", str(out)]) == 0
    md = capsys.readouterr().out
    assert "| block0.attn.q |" in md and "neurocores →" in md and "fan_in_axons_per_core" in md
    rep = json.loads(out.read_text())
    assert rep["target"] == "loihi" and rep["totals"]["cores"] > 0 and len(rep["layers"]) == 42
    assert main(["inspect", str(nets / "float.net")]) == 0
    assert "float file: no bit widths" in capsys.readouterr().out


def test_cli_errors_are_one_line(nets, tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.net")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert main(["inspect", str(nets / "fixed.net"), "--target", "truenorth"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--target" in err[0]
