"""Loihi's 24-bit behaviour in both fixed-point executors: currents wrap around, voltages
saturate, and both count the same overflow events per layer (torch NetSim == Lava, exactly)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import small_model  # noqa: E402

from mst_lava.export import NetSim, export_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def hot_graph():
    """A fixed export whose exponents are pushed up (still within Loihi's range) so currents overflow."""
    g = export_model(small_model(4), precision="fixed")
    for name in ("block0.attn.q", "block0.mlp1", "block1.sc2", "merge1"):
        L = g.layers[g.index(name)]
        L.fix["weight_exp"] = np.int64(7)
    return g


def _overflow_counts(counts):
    return {n: (c["current_overflows"], c["voltage_overflows"]) for n, c in counts.items()
            if "current_overflows" in c}


def test_fixed_runs_count_overflows_and_float_runs_none(hot_graph):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    rq = NetSim(hot_graph, precision="fixed").run(x, T=6)
    ov = _overflow_counts(rq.counts)
    assert ov["block1.sc2"][0] > 0 and ov["merge1"][0] > 0          # currents wrapped around
    assert ov["block0.attn.q"][1] > 0                               # voltages saturated
    rf = NetSim(hot_graph, precision="float").run(x, T=6)
    assert all(a == b == 0 for a, b in _overflow_counts(rf.counts).values())
    assert set(_overflow_counts(rf.counts)) == set(ov)             # every neuron layer reports both counts


@pytest.mark.parametrize("granularity", ["block", "layer"])
def test_lava_fixed_wraps_and_saturates_exactly_like_torch(hot_graph, granularity):
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava import runner
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    T = 6
    ref = NetSim(hot_graph, precision="fixed").run(x, T=T)
    res = runner.run(hot_graph, x.numpy(), T, precision="fixed", granularity=granularity)
    assert _overflow_counts(res.counts) == _overflow_counts(ref.counts)
    assert sum(a for a, _ in _overflow_counts(res.counts).values()) > 0
    assert sum(b for _, b in _overflow_counts(res.counts).values()) > 0
    assert res.site_counts() == ref.site_counts()
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())
