"""Lava processes against hand computations: the IF neuron and the RSM process."""
from __future__ import annotations

import numpy as np
import pytest
from lava.proc.io.sink import RingBuffer

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before lava)
from mst_lava.lava import models as M
from mst_lava.lava import process as P
from mst_lava.lava.session import LavaSession
from mst_lava.model import rsm


def _run(procs, root, steps, precision="float"):
    with LavaSession(root, M.run_config(procs, precision)) as s:
        s.run(steps)
        return s


def _if_by_hand(currents: np.ndarray, vth):
    """Spike trains of IF neurons with reset by subtraction, v0 = vth/2, spike on v >= vth."""
    v = np.full(currents.shape[1:], vth / 2 if isinstance(vth, float) else vth // 2, dtype=currents.dtype)
    out = []
    for x in currents:
        v = v + x
        s = v >= vth
        v = v - s * vth
        out.append(s)
    return np.stack(out), v


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_if_neuron_matches_hand_computation(precision):
    T = 12
    rng = np.random.default_rng(1)
    if precision == "float":
        vth = 1.0
        cur = rng.uniform(-0.3, 0.9, size=(T, 2, 3))
        cur[:, 0, 0] = 0.5                       # lands exactly on the threshold: v0 + 0.5 = 1.0 → spike
    else:
        vth = 1000
        cur = rng.integers(-300, 900, size=(T, 2, 3)).astype(np.int64)
        cur[:, 0, 0] = 500
    # the encoder presents frame t at step t (event-frame mode with F == T)
    enc = P.InputEncoder(data=cur[None], shape=(2, 3), T=T)
    nrn = P.IFNeuron(shape=(2, 3), vth=vth, fixed=precision == "fixed", T=T, n_samples=1)
    sink = RingBuffer(shape=(2, 3), buffer=T)
    enc.out.connect(nrn.a_in)
    nrn.s_out.connect(sink.a_in)
    with LavaSession(sink, M.run_config([enc, nrn], precision)) as s:
        s.run(T)
        got = np.moveaxis(sink.data.get(), -1, 0)
        v_lava = nrn.v.get()
        counts = nrn.counts.get()
    want, v_want = _if_by_hand(cur, vth)
    assert want[:, 0, 0].tolist() == [True, False] * (T // 2)   # 1.0 → spike, 0.5, 1.0 → spike, ...
    np.testing.assert_array_equal(got.astype(bool), want)
    np.testing.assert_allclose(v_lava, v_want, rtol=0, atol=1e-12)
    assert counts[0, 0] == want.sum() and counts[0, 1] == want.size


def test_if_neuron_resets_between_samples():
    T = 5
    data = np.array([[0.25], [0.25]])                    # two samples, the same constant current
    enc = P.InputEncoder(data=data, shape=(1,), T=T)
    nrn = P.IFNeuron(shape=(1,), vth=1.0, T=T, n_samples=2)
    ro = P.Readout(in_shape=(1,), num_classes=1, T=T, n_samples=2)
    enc.out.connect(nrn.a_in)
    nrn.s_out.connect(ro.x_in)
    with LavaSession(ro, M.run_config([enc, nrn, ro])) as s:
        s.run(2 * T)
        scores = ro.scores.get()
    # v: .5 → .75, 1.0 (spike) → 0, .25, .5, .75: one spike per sample because v restarts at θ/2
    # (without the reset the second sample would start at .75 and spike twice)
    np.testing.assert_array_equal(scores[:, 0], [1, 1])


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_rsm_drops_the_events_of_keep_mask_numpy(precision):
    T, shape = 6, (3, 4, 5)
    n = int(np.prod(shape))
    seed, site, block, ratio = 7, "Q", 2, 0.75
    ones = np.ones((1,) + shape, dtype=np.int64 if precision == "fixed" else np.float64)
    enc = P.InputEncoder(data=ones, shape=shape, T=T)
    r = P.RSM(shape=shape, seed=seed, site_id=rsm.SITES.index(site), block=block,
              threshold=rsm.drop_threshold(ratio), fixed=precision == "fixed", T=T, n_samples=1)
    sink = RingBuffer(shape=shape, buffer=T)
    enc.out.connect(r.s_in)
    r.s_out.connect(sink.a_in)
    with LavaSession(sink, M.run_config([enc, r], precision)) as s:
        s.run(T)
        got = np.moveaxis(sink.data.get(), -1, 0).reshape(T, n)
        counts = r.counts.get()
    want = np.stack([rsm.keep_mask_numpy(seed, site, block, t, n, ratio) for t in range(T)])
    np.testing.assert_array_equal(got.astype(bool), want)
    assert 0.6 < 1 - want.mean() < 0.9                         # about 75 % dropped
    # events, delivered, dropped (unit spikes), delivered messages (= delivered for binary spikes)
    assert counts[0].tolist() == [T * n, want.sum(), T * n - want.sum(), want.sum()]


def test_rsm_with_a_layout_index_uses_the_torch_element_index():
    """A port tensor stored in another order than the site's: ``index`` maps each element to the site's index."""
    T, shape = 3, (2, 3)
    index = np.arange(6).reshape(3, 2).T.copy()           # stored (c, x) ↔ site order (x, c)
    enc = P.InputEncoder(data=np.ones((1,) + shape), shape=shape, T=T)
    r = P.RSM(shape=shape, seed=1, site_id=3, block=0, threshold=rsm.drop_threshold(0.5), index=index, T=T)
    sink = RingBuffer(shape=shape, buffer=T)
    enc.out.connect(r.s_in)
    r.s_out.connect(sink.a_in)
    with LavaSession(sink, M.run_config([enc, r])) as s:
        s.run(T)
        got = np.moveaxis(sink.data.get(), -1, 0)
    for t in range(T):
        keep = rsm.keep_mask_numpy(1, 3, 0, t, 6, 0.5)
        np.testing.assert_array_equal(got[t].astype(bool), keep[index])


def test_pipelined_segment_is_aligned_by_delays():
    """A one-step-latency path and a zero-latency path into a residual add arrive aligned."""
    from mst_lava.lava import kernels as K
    from mst_lava.lava.builder import LavaNetwork, align_latencies
    T = 4
    data = np.arange(1, 2 * T + 1, dtype=np.float64).reshape(1, 2 * T, 1)   # frame t = t + 1
    enc = P.InputEncoder(data=data, shape=(1,), T=2 * T)
    # slow path: a pipelined segment doubling its input; fast path: straight into the residual
    seg = P.Segment(plan=[(K.ResidualKernel([2.0], [False]), [("in", 0)])], outputs=[("k", 0)],
                    in_shapes=[(1,)], out_shapes=[(1,)], T=2 * T, pipelined=True, name="slow")
    res = P.Residual(kernel=K.ResidualKernel([1.0, 1.0], [False, False]), shape=(1,), T=2 * T, name="add")
    ro = P.Readout(in_shape=(1,), num_classes=1, T=1, n_samples=2 * T)   # one "sample" per step: a trace
    net = LavaNetwork(graph=None, precision="float", T=2 * T, n_samples=1, granularity="test",
                      procs=[enc, seg, res, ro], encoder=enc, readout=ro, knodes=[])
    net.connect(enc, "out", seg, "in0")
    net.connect(enc, "out", res, "in0")
    net.connect(seg, "out0", res, "in1")
    net.connect(res, "out", ro, "x_in")
    align_latencies(net)
    assert net.latency == 1 and res.proc_params["in_delays"] == {"in0": 1}
    with LavaSession(ro, M.run_config(net.procs)) as s:
        s.run(2 * T + net.latency)
        trace = ro.scores.get()[:, 0]
    np.testing.assert_array_equal(trace, 3 * data[0, :, 0])        # x + 2x of the same step


def test_delay_line_shifts_by_its_delay():
    T = 6
    data = np.arange(1, T + 1, dtype=np.float64).reshape(1, T, 1)
    enc = P.InputEncoder(data=data, shape=(1,), T=T)
    dl = P.DelayLine(shape=(1,), delay=2)
    sink = RingBuffer(shape=(1,), buffer=T)
    enc.out.connect(dl.s_in)
    dl.s_out.connect(sink.a_in)
    with LavaSession(sink, M.run_config([enc, dl])) as s:
        s.run(T)
        got = sink.data.get()[0]
    np.testing.assert_array_equal(got, [0, 0, 1, 2, 3, 4])
