"""The neuron registry (mst_lava/neurons.py): a contract every registered type meets, and the graded IF_BURST neuron.

For every entry of ``NEURON_TYPES`` (binary ``IF`` with B = 1, graded ``IF_BURST`` with B = 4):
* format round trip: the exporter writes the type's fields, the reader returns them and finds no problem;
* float step = the torch simulator's neuron (snn/neuron.py) on the same currents;
* float executor (NetSim) = the torch SNN simulator (compensated attention, --burst B): same per-site spike counts
  (a payload s counts s), same predictions, with RSM;
* fixed point: NetSim (torch) = Lava, every count, with RSM (a dropped graded message loses its whole payload).
Crafted bad neuron groups are refused with one message naming the field.
"""
from __future__ import annotations

import contextlib

import h5py
import numpy as np
import pytest
import torch
from model_fixtures import digits_images, spiky_mst

from mst_lava import netx_ops as ops
from mst_lava import neurons
from mst_lava.errors import MSTError
from mst_lava.export import NetSim, export_model, read_network, write_network
from mst_lava.snn import OpCounter, simulate
from mst_lava.snn.neuron import burst_step, if_step

CASES = {"IF": 1, "IF_BURST": 4}
MASK = {"Q": 0.5, "V": 0.5, "MLP1": 0.5}


def test_every_registered_type_is_covered():
    assert set(CASES) == set(neurons.NEURON_TYPES)


@pytest.fixture(scope="module")
def model():
    return spiky_mst(seed=1)


@pytest.fixture(scope="module")
def model32():
    return spiky_mst(seed=1).float()


@pytest.mark.parametrize("name", CASES)
def test_round_trip_and_fields(tmp_path, model32, name):
    B = CASES[name]
    g = export_model(model32, precision="fixed", burst=B, mask=MASK, seed=2)
    write_network(tmp_path / "n.net", g)
    r = read_network(tmp_path / "n.net")
    assert r.mst_version == (4 if B > 1 else 1)
    for L in r.layers:
        if L.neuron is None:
            continue
        assert L.neuron["type"] == name and neurons.of(L.neuron).problems(L.neuron) == []
        assert neurons.burst_of(L.neuron) == B
        if B > 1:
            assert int(L.neuron["messageBits"]) == neurons.payload_bits(B) == 3


@pytest.mark.parametrize("name", CASES)
def test_float_step_equals_the_simulator_neuron(name):
    B = CASES[name]
    torch.manual_seed(0)
    cur = torch.randn(6, 50, dtype=torch.float64) * 1.5
    u = 0.7
    spikes, _, _ = ops.if_scan(cur, u, False, burst=B)
    v = torch.full((50,), u / 2, dtype=torch.float64)
    for t in range(6):
        v, s = if_step(v, cur[t], u) if B == 1 else burst_step(v, cur[t], u, B)
        assert torch.equal(spikes[t].to(torch.float64), s.to(torch.float64))
    assert int(spikes.max()) == B                     # the payload reaches B on these currents


@pytest.mark.parametrize("name", CASES)
def test_float_executor_equals_the_torch_snn(model, name):
    B = CASES[name]
    x = digits_images(4).double()
    T, seed = (2, 5)
    c = OpCounter(model)
    r = simulate(model, x, T, mask=MASK, seed=seed, counter=c, attention="compensated", burst=B)
    s = c.summary(T)
    sites_m = {f"{e['site']}@{e['block']}": int(round(e["spikes_emitted"] * len(x))) for e in s["sites"]}
    res = NetSim(export_model(model, precision="float", mask=MASK, seed=seed, burst=B)).run(x, T)
    sites_n = res.site_counts()
    assert set(sites_m) == set(sites_n) and sum(sites_n.values()) > 1000
    worst = max(abs(sites_m[k] - sites_n[k]) / max(sites_n[k], 1) for k in sites_n)
    assert worst <= 0.005, worst
    assert torch.equal(r.predictions(), res.pred)


@pytest.mark.parametrize("name", CASES)
def test_fixed_torch_equals_fixed_lava(model32, name):
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava import runner
    B = CASES[name]
    x = digits_images(3)
    T = 2
    g = export_model(model32, precision="fixed", mask=MASK, seed=4, burst=B)
    ref = NetSim(g, precision="fixed").run(x, T)
    res = runner.run(g, x.numpy(), T, precision="fixed")
    keys = ("spikes", "delivered", "dropped", "messages", "synops", "synops_messages", "neuron_updates",
            "current_overflows", "voltage_overflows", "residual_adds")
    for lname, c in ref.counts.items():
        for k in keys:
            assert int(c.get(k, 0)) == int(res.counts.get(lname, {}).get(k, 0)), (lname, k)
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())
    tot = {k: sum(c[k] for c in ref.counts.values()) for k in ("delivered", "messages", "dropped",
                                                                 "synops", "synops_messages")}
    assert tot["dropped"] > 0                                     # RSM acted
    if B > 1:      # graded payloads: more unit spikes than messages, payload synops above message synops
        assert tot["delivered"] > tot["messages"] and tot["synops"] > tot["synops_messages"]
    else:
        assert tot["delivered"] == tot["messages"] and tot["synops"] == tot["synops_messages"]


def test_a_dropped_graded_message_loses_its_whole_payload(model):
    x = digits_images(2).double()
    g = export_model(model, precision="float", mask={"V": 0.75}, seed=1, burst=4)
    plain = NetSim(export_model(model, precision="float", seed=1, burst=4)).run(x, 1, record=True)
    masked = NetSim(g).run(x, 1, record=True)
    name = next(L.name for L in g.layers if L.site == "V")
    before, after = plain.spikes[name], masked.spikes[name]
    kept = after != 0
    assert torch.equal(after[kept], before[kept])                 # kept messages keep their payload
    assert int((before[~kept] > 1).sum()) > 0                     # dropped messages had payloads > 1


def test_one_step_burst_file_is_the_ann(model):
    """B = L at T = 1: the graded file computes the ANN (its own run_ann) exactly, in float."""
    m = model
    x = digits_images(4).double()
    L = int(m.cfg.L)
    g = export_model(m, precision="float", burst=L)
    res = NetSim(g).run(x, 1)
    with torch.no_grad():
        ann = NetSim(g).run_ann(x)
    torch.testing.assert_close(res.logits.double(), ann.double(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# refusals

def _set(path, layer, key, value):
    with h5py.File(path, "r+") as f:
        grp = f[f"layer/{layer}/neuron"]
        if value is None:
            del grp[key]
        else:
            if key in grp:
                del grp[key]
            grp[key] = value


@pytest.fixture(scope="module")
def burst_file(tmp_path_factory, model32):
    p = tmp_path_factory.mktemp("neurons") / "b.net"
    write_network(p, export_model(model32, precision="fixed", burst=4))
    return p


@pytest.mark.parametrize("key,value,words", [
    ("burst", None, "burst"),
    ("messageBits", None, "messageBits"),
    ("burst", np.int64(16), "burst is 16"),              # does not fit the declared 3-bit payload
    ("burst", np.float64(4.5), "one integer"),
    ("messageBits", np.int64(30), "messageBits is 30"),
    ("vDecay", np.int64(4096), "vDecay"),
    ("refDelay", np.int64(5), "refDelay"),
    ("iDecay", np.int64(0), "iDecay"),
    ("type", np.bytes_(b"LIF"), "LIF"),
])
def test_bad_neuron_fields_are_refused(tmp_path, burst_file, key, value, words):
    p = tmp_path / "bad.net"
    p.write_bytes(burst_file.read_bytes())
    _set(p, 1, key, value)
    with pytest.raises(MSTError, match=words):
        read_network(p)


def test_binary_file_with_graded_fields_needs_version_4(tmp_path, model32):
    p = tmp_path / "v1.net"
    write_network(p, export_model(model32, precision="fixed"))
    with h5py.File(p, "r+") as f:
        grp = f["layer/1/neuron"]
        del grp["type"]
        grp["type"] = np.bytes_(b"IF_BURST")
        grp["burst"] = np.int64(2)
        grp["messageBits"] = np.int64(2)
    with pytest.raises(MSTError, match="extension version 4"):
        read_network(p)


@pytest.mark.parametrize("burst,bits,words", [(0, 8, "integer >= 1"), (2.5, 8, "integer >= 1"),
                                              (300, 8, "9-bit payloads"), (4, 30, "payload-bits")])
def test_bad_burst_options(model32, burst, bits, words):
    with pytest.raises(MSTError, match=words):
        export_model(model32, burst=burst, payload_bits=bits)


@pytest.mark.parametrize("args,words", [(["--burst", "0"], "--burst"), (["--burst", "-2"], "--burst"),
                                        (["--burst", "2.5"], "--burst"), (["--burst", "300"], "9-bit payloads"),
                                        (["--burst", "4", "--payload-bits", "30"], "payload-bits")])
def test_mst_export_refuses_bad_burst_options_and_writes_nothing(tmp_path, capsys, args, words):
    from pathlib import Path

    from mst_lava.export.cli import export_main
    ckpt = Path(__file__).resolve().parent.parent / "export" / "digits.pt"
    out = tmp_path / "b.net"
    with pytest.raises(SystemExit) if args[1] in ("0", "-2", "2.5") else contextlib.nullcontext():
        rc = export_main([str(ckpt), "-o", str(out), *args])
        assert rc == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.iterdir())
