"""Per-output-channel weight exponents (mst-export --weight-exponents channel; format §2a, extension version 4)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from model_fixtures import digits_images, spiky_mst

from mst_lava import netx_ops as ops
from mst_lava.errors import MSTError
from mst_lava.export import NetSim, export_model, read_network, write_network
from mst_lava.export.quantize import channel_exponents, quantize_synapse


def test_shift_exp_per_channel_numpy_equals_torch_and_the_scalar_form():
    rng = np.random.default_rng(0)
    x = rng.integers(-5000, 5000, size=(2, 3, 4, 5))
    e = np.array([-3, 0, 2])
    got = ops.shift_exp(x, e)
    for c in range(3):
        np.testing.assert_array_equal(got[:, c], ops.shift_exp(x[:, c], int(e[c])))
    np.testing.assert_array_equal(ops.shift_exp(torch.as_tensor(x), torch.as_tensor(e)).numpy(), got)


def test_every_channel_keeps_its_own_bits():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 4)) * np.array([1, 1, 0.01, 0.1, 1, 1, 0.02, 1])[:, None]
    q = quantize_synapse(w, np.zeros(8), 1.0)
    layer_err = np.abs(q.weight * q.membrane_unit * 2.0 ** (q.weight_exp + 6) - w).max(axis=1) / np.abs(w).max(axis=1)
    qc = channel_exponents(quantize_synapse(w, np.zeros(8), 1.0), w, 1.0)
    deq = qc.weight * qc.membrane_unit * 2.0 ** (qc.weight_exp[:, None] + 6)
    chan_err = np.abs(deq - w).max(axis=1) / np.abs(w).max(axis=1)
    assert qc.membrane_unit == q.membrane_unit and qc.vth_mant == q.vth_mant       # threshold and bias unchanged
    assert chan_err.max() <= 1 / 127                  # at most half of one of >= 64 steps of its own range
    assert layer_err[2] > 10 * chan_err[2]            # the small channel lost its bits with one layer exponent
    assert np.abs(qc.weight).max(axis=1).min() >= 64


@pytest.fixture(scope="module")
def model32():
    return spiky_mst(seed=2).float()


def test_binary_file_with_channel_exponents_round_trips_and_lava_equals_torch(tmp_path, model32):
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava import runner
    g = export_model(model32, precision="fixed", weight_exponents="channel", mask={"Q": 0.5}, seed=1)
    write_network(tmp_path / "c.net", g)
    r = read_network(tmp_path / "c.net")
    assert r.mst_version == 4
    convs = [L for L in r.layers if L.type == "conv" and len(L.inputs) == 1]
    assert all(np.asarray(L.fix["weight_exp"]).shape == (L.shape[0],) for L in convs)
    x = digits_images(3)
    ref = NetSim(r, precision="fixed").run(x, 4)
    res = runner.run(r, x.numpy(), 4, precision="fixed")
    for name, c in ref.counts.items():
        for k in ("spikes", "delivered", "synops", "neuron_updates", "current_overflows", "voltage_overflows"):
            assert int(c.get(k, 0)) == int(res.counts.get(name, {}).get(k, 0)), (name, k)
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())


@pytest.mark.parametrize("how,words", [
    (lambda f: f["mst"].attrs.__setitem__("version", 3), "one weight exponent per output channel, a field of "
                                                         "extension version 4"),
    (lambda f: _exp(f, np.zeros(3, dtype=np.int64)), r"weight_exp has shape \(3,\)"),
    (lambda f: _exp(f, None, 9), "weight_exp holds 9"),
])
def test_bad_channel_exponents_are_refused(tmp_path, model32, how, words):
    p = tmp_path / "c.net"
    write_network(p, export_model(model32, precision="fixed", weight_exponents="channel"))
    with h5py.File(p, "r+") as f:
        how(f)
    with pytest.raises(MSTError, match=words):
        read_network(p)


def _exp(f, value, set_first=None):
    d = f["layer/1/mst/fixed"]
    v = np.asarray(d["weight_exp"][()]).copy() if value is None else value
    if set_first is not None:
        v[0] = set_first
    del d["weight_exp"]
    d["weight_exp"] = v


def test_unknown_weight_exponents_option(model32):
    with pytest.raises(MSTError, match="weight exponents"):
        export_model(model32, precision="fixed", weight_exponents="neuron")
