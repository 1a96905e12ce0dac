"""The HDF5 → Lava builder: process graph shape, RSM cuts, latency alignment, refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mst_lava.lava  # noqa: F401
from mst_lava.errors import MSTError
from mst_lava.export import NetSim, export_model
from mst_lava.lava import process as P
from mst_lava.lava import runner
from mst_lava.lava.builder import build_network
from mst_lava.model import build_model

ALL_SITES = ["SC1", "Q", "K", "A", "V", "AV", "Proj", "SC2", "MLP1", "MLP2", "embed", "merge"]


def _graph(mask=(), precision="fixed", preset="digits", **over):
    torch.manual_seed(0)
    model = build_model(preset, **over).eval()
    with torch.no_grad():                       # livelier random network: larger weights
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return export_model(model, precision=precision, mask=[f"{m}=0.5" for m in mask], seed=11)


def _x(graph, n=1):
    g = torch.Generator().manual_seed(1)
    return torch.randn((n,) + tuple(graph.layers[0].shape), generator=g)


def test_unmasked_digits_is_eight_processes():
    g = _graph()
    net = build_network(g, _x(g).numpy(), 4)
    kinds = [type(p).__name__ for p in net.procs]
    assert kinds.count("Segment") == 6 and len(kinds) == 8 and "RSM" not in kinds
    assert net.latency == 6 and net.total_steps == 4 + 6          # encoder→stem→4 blocks+merge→readout
    assert build_network(g, _x(g).numpy(), 4, pipeline=False).latency == 0


def test_rsm_sites_become_rsm_processes_between_segments():
    g = _graph(["Q", "K", "A"])
    net = build_network(g, _x(g).numpy(), 4)
    rsm = [p for p in net.procs if isinstance(p, P.RSM)]
    assert len(rsm) == 12                                       # Q, K, A in 4 blocks
    assert sum(isinstance(p, P.Segment) for p in net.procs) == 6 + 2 * 4
    # V goes straight from the first segment of its block to the third: delayed by the two RSM hops
    delayed = [p for p in net.procs if p.proc_params["in_delays"]]
    assert delayed, "some inputs must be re-aligned"


@pytest.mark.parametrize("granularity", ["block", "layer"])
def test_every_site_masked_is_still_exact(granularity):
    """All 12 site kinds masked (84 processes in block granularity): Lava = torch, event for event."""
    g = _graph(ALL_SITES)
    x = _x(g)
    ref = NetSim(g, precision="fixed").run(x, 4)
    res = runner.run(g, x.numpy(), 4, precision="fixed", granularity=granularity)
    for name, c in ref.counts.items():
        for k in ("spikes", "delivered", "synops"):
            assert c[k] == res.counts.get(name, {}).get(k, 0), (name, k)
    assert sum(c["dropped"] for c in res.counts.values()) > 0
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())


def test_refusals():
    g = _graph(precision="float")
    x = _x(g).numpy()
    with pytest.raises(MSTError, match="--precision fixed"):
        build_network(g, x, 4, precision="fixed")
    with pytest.raises(MSTError, match="expects"):
        build_network(g, np.zeros((1, 3, 8, 8)), 4)
    with pytest.raises(MSTError, match="granularity"):
        build_network(g, x, 4, granularity="neuron")
    with pytest.raises(MSTError, match="T must be"):
        build_network(g, x, 0)
    g.kind = "netx"
    with pytest.raises(MSTError, match="plain lava-dl netx"):
        build_network(g, x, 4)
