"""Done-when parity: Lava vs the torch simulation of the same exported file, 5 digits test images, T = 32.

* fixed point: every layer's spikes, delivered spikes, synaptic ops and neuron updates equal
  exactly, without masking and with 75 % RSM on Q, K and A;
* floating point: identical predictions, per-site spike counts within 0.5 % (the largest
  difference is printed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mst_lava.lava  # noqa: F401
from mst_lava.export import NetSim, export_checkpoint, read_network
from mst_lava.lava import runner

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "export" / "digits.pt"
T = 32
N = 5
QKA = ["Q=0.75", "K=0.75", "A=0.75"]

pytestmark = pytest.mark.skipif(not CKPT.exists(), reason="the trained digits checkpoint export/digits.pt is absent")


@pytest.fixture(scope="module")
def images():
    from mst_lava.data import get_dataset
    ds = get_dataset("digits", None, "test", 8, in_chans=1)
    return torch.stack([torch.as_tensor(ds[i][0]) for i in range(N)]).float()


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("lava_parity")
    out = {}
    for name, prec, mask in (("fixed", "fixed", None), ("fixed_qka", "fixed", QKA), ("float", "float", None),
                             ("float_qka", "float", QKA)):
        export_checkpoint(CKPT, d / f"{name}.net", precision=prec, mask=mask or {}, seed=3)
        out[name] = read_network(d / f"{name}.net")
    return out


def _compare_exact(ref, res):
    keys = ("spikes", "delivered", "synops", "neuron_updates")
    diffs = []
    for name, c in ref.counts.items():
        lc = res.counts.get(name, {})
        for k in keys:
            if int(c.get(k, 0)) != int(lc.get(k, 0)):
                diffs.append((name, k, c.get(k), lc.get(k)))
    return diffs


@pytest.mark.parametrize("net_name,pipeline", [("fixed", True), ("fixed_qka", True), ("fixed_qka", False)])
def test_fixed_point_spike_counts_equal_torch_exactly(nets, images, net_name, pipeline):
    graph = nets[net_name]
    ref = NetSim(graph, precision="fixed").run(images, T)
    res = runner.run(graph, images.numpy(), T, precision="fixed", pipeline=pipeline)
    assert _compare_exact(ref, res) == []
    assert res.site_counts() == ref.site_counts()
    assert sum(ref.site_counts().values()) > 100_000            # a real, busy network
    np.testing.assert_array_equal(res.pred, ref.pred.numpy())
    # the readout is integer: Lava's accumulated scores equal torch's exactly
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())
    if net_name == "fixed_qka":
        dropped = sum(c["dropped"] for c in res.counts.values())
        emitted = sum(c["spikes"] for n, c in res.counts.items() if c["site"] in ("Q", "K", "A"))
        assert 0.7 < dropped / emitted < 0.8                    # RSM dropped ~75 % of Q, K, A spikes


@pytest.mark.parametrize("net_name", ["float", "float_qka"])
def test_float_predictions_identical_and_sites_within_half_percent(nets, images, net_name):
    graph = nets[net_name]
    ref = NetSim(graph, precision="float").run(images, T)
    res = runner.run(graph, images.numpy(), T, precision="float")
    np.testing.assert_array_equal(res.pred, ref.pred.numpy())
    a, b = ref.site_counts(), res.site_counts()
    assert set(a) == set(b)
    worst = max(abs(b[k] - a[k]) / max(a[k], 1) for k in a)
    print(f"{net_name}: largest per-site spike-count difference {100 * worst:.4f} %")
    assert worst <= 0.005
    np.testing.assert_allclose(res.logits, ref.logits.numpy(), rtol=1e-3, atol=1e-3)


def test_fixed_file_runs_as_float_too(nets, images):
    """A fixed file keeps its float parameters: --precision float runs the floating_pt models."""
    graph = nets["fixed"]
    ref = NetSim(graph, precision="float").run(images[:2], 8)
    res = runner.run(graph, images[:2].numpy(), 8, precision="float")
    np.testing.assert_array_equal(res.pred, ref.pred.numpy())


@pytest.mark.slow
def test_layer_granularity_fixed_parity(nets, images):
    """One Lava process per layer part (~110 processes, pipelined synapses): still exact."""
    graph = nets["fixed_qka"]
    ref = NetSim(graph, precision="fixed").run(images, T)
    res = runner.run(graph, images.numpy(), T, precision="fixed", granularity="layer")
    assert res.n_procs > 100
    assert _compare_exact(ref, res) == []


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_lava_conv_synapses_with_one_step_delays_stay_aligned(nets, images, precision):
    """Pointwise convs in lava.proc.conv's own Conv process (one step of latency each, 24 of them):
    the latency alignment keeps every count equal to torch's."""
    graph = nets["fixed_qka"]
    ref = NetSim(graph, precision=precision).run(images[:1], 6)
    res = runner.run(graph, images[:1].numpy(), 6, precision=precision, granularity="layer", lava_synapses=True)
    assert "24 Conv" in res.meta["processes"]
    assert res.meta["latency"] > 20
    if precision == "fixed":
        assert _compare_exact(ref, res) == []
    else:
        np.testing.assert_array_equal(res.pred, ref.pred.numpy())
        a, b = ref.site_counts(), res.site_counts()
        assert max(abs(b[k] - a[k]) / max(a[k], 1) for k in a) <= 0.005
