"""One object per layer type (mst_lava.export.layers): the executors and the reader take each layer's arithmetic,
counting rule and structure from it (issue 13, item 1).

The Lava kernels step a layer one step at a time; NetSim runs the same layer object time-batched. Here both forms
run on the same numpy spike trains: the values must be equal element for element, in float as in fixed point
(the float attention is no longer written twice), and the kernels' counts summed over the steps must equal the
time-batched counts.
"""
from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import small_model

from mst_lava.export import export_model
from mst_lava.export.hdf5io import MST_FILE_TYPES
from mst_lava.export.layers import LAYER_TYPES, new_counts
from mst_lava.lava.kernels import KERNELS


def test_every_mst_layer_type_has_one_object_and_one_kernel():
    assert tuple(LAYER_TYPES) == MST_FILE_TYPES
    assert set(KERNELS) == set(LAYER_TYPES) - {"input"}          # the input layer is the Lava encoder process
    assert {t for t, lt in LAYER_TYPES.items() if lt.neuron} == {"conv", "mst_qk", "mst_softmax_av"}
    assert {t for t, lt in LAYER_TYPES.items() if lt.output == "graded"} == {"input", "mst_residual", "mst_readout"}


@pytest.fixture(scope="module")
def graphs():
    m = small_model(0)
    return {p: export_model(m, precision=p) for p in ("float", "fixed")}


def _trains(graph, i, T, rng):
    """Random inputs of layer i, (T, 1, ...) per input: 0/1 spikes, or integer-valued graded values."""
    L = graph.layers[i]
    out = []
    for k in L.inputs:
        src = graph.layers[k]
        shape = (T, 1) + tuple(int(s) for s in src.shape)
        if src.output == "spikes":
            out.append((rng.random(shape) < 0.3).astype(np.int64))
        else:
            out.append(rng.integers(-40, 40, size=shape).astype(np.int64))
    return out


@pytest.mark.parametrize("precision", ["float", "fixed"])
@pytest.mark.parametrize("ltype", ["conv", "mst_residual", "mst_qk", "mst_softmax_av", "mst_readout"])
def test_kernel_steps_equal_the_time_batched_layer(graphs, precision, ltype):
    graph = graphs[precision]
    fixed = precision == "fixed"
    i = next(j for j, L in enumerate(graph.layers) if L.type == ltype)
    lt = LAYER_TYPES[ltype]
    P = lt.params(graph, i, fixed)
    T = 6
    ins = _trains(graph, i, T, np.random.default_rng(i))
    if not fixed:
        ins = [x.astype(np.float64) for x in ins]
    batched, counts = lt.batched(P, ins, T, 1, fixed)
    kern = KERNELS[ltype].from_params(P, fixed)
    kern.reset()
    steps = np.stack([kern.step(t, *[x[t, 0] for x in ins]) for t in range(T)])
    want = np.asarray(batched)[:, 0]
    assert steps.dtype == want.dtype == (np.int64 if fixed else np.float64)
    assert np.array_equal(steps, want)
    assert any(v > 0 for v in counts.values())
    assert dict(zip(kern.count_names, kern.counts)) == {k: counts[k] for k in kern.count_names}


def test_new_counts_is_the_record_of_both_executors(graphs):
    L = graphs["float"].layers[1]
    c = new_counts(L)
    assert c == {"site": L.site, "block": L.block, "type": L.type, "spikes": 0, "delivered": 0, "dropped": 0,
                 "messages": 0, "neurons": int(np.prod(L.shape)), "synops": 0, "synops_messages": 0,
                 "neuron_updates": 0}


def test_exact_matmul_stays_exact_beyond_float64():
    """numpy: float64 BLAS only where every partial sum is below 2**52; larger products in int64, exactly."""
    from mst_lava import netx_ops as ops
    rng = np.random.default_rng(5)
    for lo in (100, 1 << 29):                       # below / far beyond what float64 holds exactly
        a = rng.integers(-lo, lo, size=(3, 8), dtype=np.int64)
        b = rng.integers(-lo, lo, size=(8, 5), dtype=np.int64)
        want = np.array(a.astype(object) @ b.astype(object), dtype=np.int64)
        got = ops.exact_matmul(a, b)
        assert got.dtype == np.int64 and np.array_equal(got, want)


@pytest.mark.parametrize("shape,kw", [((6, 4, 1, 1), {}), ((4, 1, 1, 1), {"groups": 4}),
                                      ((6, 4, 2, 2), {"stride": (2, 2)})])
def test_conv2d_matrix_schedules_equal_the_general_float_conv(shape, kw):
    """The pointwise, depthwise and patch schedules of netx_ops.conv2d (numpy) compute torch's conv in float."""
    import torch

    from mst_lava import netx_ops as ops
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((3, 4, 8, 8)), rng.standard_normal(shape)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, kw.get("stride", 1), 0, 1,
                                     kw.get("groups", 1)).numpy()
    np.testing.assert_allclose(ops.conv2d(x, w, None, **kw), ref, rtol=1e-12, atol=1e-12)
