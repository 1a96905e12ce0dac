"""Fixed point: quantization error bounds, integer softmax accuracy, numpy == torch bit parity of
the shared arithmetic (netx_ops), RSM dropping in the executor, fixed vs float executor."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mst_lava import netx_ops as ops
from mst_lava.errors import MSTError
from mst_lava.export import NetSim, export_model
from mst_lava.export.quantize import quantize_synapse
from mst_lava.model import rsm

torch.set_num_threads(1)


from model_fixtures import small_model  # noqa: E402


def test_weight_threshold_bias_quantization_error_bounds():
    rng = np.random.default_rng(0)
    for scale in (1e-4, 0.03, 2.0):
        w = rng.normal(size=(16, 8, 1, 1)) * scale
        b = rng.normal(size=16) * scale * 5
        theta = float(rng.uniform(0.5, 4)) * scale * 20
        q = quantize_synapse(w, b, theta)
        assert q.weight_shift == 0                                      # full 8-bit mantissas
        delta = np.abs(w).max() / 127
        W, e, m = q.weight, q.weight_exp, q.membrane_unit
        assert W.dtype == np.int64 and np.abs(W).max() == 127
        assert ops.WEIGHT_EXP_MIN <= e <= ops.WEIGHT_EXP_MAX
        assert np.abs(W * delta - w).max() <= delta / 2 + 1e-15          # 8-bit mantissa: half a step
        assert math.isclose(m * 2 ** (e + ops.ACT_SHIFT), delta)
        vth = q.vth
        assert vth == q.vth_mant << 6 and 1 <= q.vth_mant < 2 ** 17     # 17-bit mantissa << 6
        assert abs(vth * m - theta) <= 32 * m
        assert q.vth_mant >= 2 ** 10                                    # threshold resolution kept
        assert ops.BIAS_EXP_MIN <= q.bias_exp <= ops.BIAS_EXP_MAX
        assert np.all(q.bias % (1 << q.bias_exp) == 0) and np.abs(q.bias >> q.bias_exp).max() <= 4095
        assert np.abs(q.bias * m - b).max() <= m * 2 ** q.bias_exp / 2 + 1e-18
        # spike inputs: the worst-case current (all inputs spike) fits the 24-bit current
        assert q.headroom and np.abs(W).reshape(16, -1).sum(1).max() * 2 ** (e + 6) <= ops.CURRENT_MAX


def test_quantization_fits_large_biases_jointly_or_refuses_by_name():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 4, 1, 1))
    theta = 1000.0 * np.abs(w).max()                                    # needs a negative exponent
    q = quantize_synapse(w, np.full(8, 700 * np.abs(w).max()), theta, x_bound=30000)
    assert q.weight_exp < 0 and q.vth_mant <= ops.VTH_MANT_MAX and np.abs(q.bias >> q.bias_exp).max() <= 4095
    # a bias so large against the threshold that no exponent and no weight rescaling can hold it
    with pytest.raises(MSTError, match=r"merge9.*no weight exponent"):
        quantize_synapse(w, np.full(8, 1e12), 1e-3, name="merge9")


def test_fixed_if_wraps_current_and_saturates_voltage_like_lavas_bit_accurate_lif():
    lim = 2 ** 23
    assert ops.wrap24(np.array([lim - 1, lim, -lim, -lim - 1, 3 * lim + 5])).tolist() == \
        [lim - 1, -lim, -lim, lim - 1, -lim + 5]
    raw = np.array([[lim + 10], [-10], [5 * lim]], dtype=np.int64)[:, None]        # (T=3, B=1, n=1)
    for x in (raw, torch.from_numpy(raw)):
        s, v, ovf = ops.if_scan(x, 64 * 1000, True, bias=np.int64(-7) if not torch.is_tensor(x) else torch.tensor(-7))
        assert ovf == {"current_overflows": 2, "voltage_overflows": 1}
        assert s.reshape(-1).tolist() == [False, False, False]
    # voltage saturation: a large negative current drives v to -(2**23 - 1), no further
    cur = np.full((4, 1), -(lim - 1), dtype=np.int64)
    s, v, ovf = ops.if_scan(cur, 64, True)
    assert int(v[0]) == -(lim - 1) and ovf["voltage_overflows"] == 3 and ovf["current_overflows"] == 0


@pytest.mark.parametrize("bits", [12, 15])
def test_mant_shift_relative_error(bits):
    for v in (1e-6, 0.37, 1.0, 3.9, 12345.6):
        mant, sh = ops.mant_shift(v, bits)
        assert 2 ** (bits - 1) <= mant < 2 ** bits
        assert abs(mant * 2.0 ** -sh - v) <= v * 2.0 ** -bits


def test_integer_softmax_close_to_float_softmax():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 16)) * 3
    z[:, 3] -= 100                                                      # a masked entry
    zi = np.round(z * 2 ** ops.LOGIT_FRAC_BITS).astype(np.int64)
    p = ops.softmax_fixed(zi, ops.make_exp_table(), ops.PROB_BITS) / 2 ** ops.PROB_BITS
    e = np.exp(z - z.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    assert np.abs(p - ref).max() < 4e-3
    assert np.all(p[:, 3] == 0)


def _pair(x):
    return x, torch.from_numpy(np.ascontiguousarray(x))


def test_netx_ops_bit_identical_on_numpy_and_torch():
    rng = np.random.default_rng(2)
    T, B, C, H, W, h, w = 5, 2, 4, 8, 8, 2, 4
    # conv (integer, strided, padded, depthwise)
    x_np, x_t = _pair(rng.integers(-300, 300, size=(B, C, H, W)).astype(np.int64))
    for kw in (dict(weight=rng.integers(-127, 128, (6, C, 3, 3)), stride=(1, 1), padding=(1, 1)),
               dict(weight=rng.integers(-127, 128, (6, C, 2, 2)), stride=(2, 2), padding=(0, 0)),
               dict(weight=rng.integers(-127, 128, (C, 1, 1, 1)), groups=C),
               dict(weight=rng.integers(-127, 128, (6, C, 1, 1)))):
        a = ops.conv2d(x_np, **kw)
        b = ops.conv2d(x_t, **kw)
        np.testing.assert_array_equal(a, b.numpy())
        ref = torch.nn.functional.conv2d(x_t.double(), torch.from_numpy(kw["weight"]).double(), None,
                                         kw.get("stride", 1), kw.get("padding", 0), 1, kw.get("groups", 1))
        np.testing.assert_array_equal(a, ref.round().long().numpy())
    # IF scan
    cur_np, cur_t = _pair(rng.integers(-2000, 9000, size=(T, B, C)).astype(np.int64))
    s1, v1, o1 = ops.if_scan(cur_np, 7001, True)
    s2, v2, o2 = ops.if_scan(cur_t, 7001, True)
    assert o1 == o2
    np.testing.assert_array_equal(s1, s2.numpy())
    np.testing.assert_array_equal(v1, v2.numpy())
    # windows, Q·Kᵀ currents, softmax·V currents
    q_np, q_t = _pair(np.cumsum(rng.random((T, B, C, H, W)) < 0.4, 0).astype(np.int64))
    k_np, k_t = _pair(np.cumsum(rng.random((T, B, C, H, W)) < 0.3, 0).astype(np.int64))
    Qn, Qt = ops.to_windows(q_np, w, 2, h), ops.to_windows(q_t, w, 2, h)
    np.testing.assert_array_equal(Qn, Qt.numpy())
    Kn, Kt = ops.to_windows(k_np, w, 2, h), ops.to_windows(k_t, w, 2, h)
    Pn, Pt = ops.qk_products(Qn, Kn), ops.qk_products(Qt, Kt)
    np.testing.assert_array_equal(Pn, Pt.numpy())
    for mant, sh in ((23403, -1), (17000, 3)):
        np.testing.assert_array_equal(ops.qk_current_fixed(Pn, mant, sh), ops.qk_current_fixed(Pt, mant, sh).numpy())
    nW, N = Pn.shape[2], w * w
    SA_np, SA_t = _pair(np.cumsum(rng.random((T, B, nW, h, N, N)) < 0.5, 0).astype(np.int64))
    bias_np = rng.integers(-40, 40, size=(h, N, N))
    mask_np = np.where(rng.random((nW, N, N)) < 0.3, -25600, 0)
    kw = dict(a_mult=786, exp_table=ops.make_exp_table(), prob_bits=ops.PROB_BITS, v_mant=2098, v_shift=-5)
    In = ops.softmax_av_fixed(SA_np, Kn, bias=bias_np, mask=mask_np, **kw)
    It = ops.softmax_av_fixed(SA_t, Kt, bias=torch.from_numpy(bias_np), mask=torch.from_numpy(mask_np), **kw)
    np.testing.assert_array_equal(In, It.numpy())
    np.testing.assert_array_equal(ops.from_windows(In, w, 2, H, W), ops.from_windows(It, w, 2, H, W).numpy())
    # step-wise use (what a Lava ProcessModel does each step) equals the time-batched form
    F_prev = G_prev = 0
    for t in range(1, T + 1):
        F = ops.qk_value_fixed(Pn[t - 1], t, 23403, -1)
        np.testing.assert_array_equal(F - F_prev, ops.qk_current_fixed(Pn, 23403, -1)[t - 1])
        G = ops.softmax_av_value_fixed(SA_np[t - 1], Kn[t - 1], t, bias=bias_np, mask=mask_np, **kw)
        np.testing.assert_array_equal(G - G_prev, In[t - 1])
        F_prev, G_prev = F, G
    # telescoping: the summed currents equal the last value exactly
    np.testing.assert_array_equal(In.sum(0), G)
    # RSM keep masks
    idx = ops.rsm_index("window_heads", (C, H, W), window=w, shift=2, heads=h)
    thr = rsm.drop_threshold(0.75)
    a = ops.rsm_keep(5, 1, 3, 7, idx, thr)
    b = ops.rsm_keep(5, 1, 3, 7, torch.from_numpy(idx), thr)
    np.testing.assert_array_equal(a, b.numpy())


def test_executor_drops_spikes_with_the_shared_generator():
    model = small_model(1)
    g = export_model(model, precision="fixed", mask={"MLP1": 0.5}, seed=11)
    x = torch.randn(2, 1, 8, 8)
    res = NetSim(g).run(x, T=8, record=True)
    i = g.index("block0.mlp1")
    L = g.layers[i]
    C, H, W = L.shape
    got = res.spikes["block0.mlp1"]                                      # delivered, (T, B, C, H, W)
    g0 = export_model(model, precision="fixed", seed=11)
    raw = NetSim(g0).run(x, T=8, record=True).spikes["block0.mlp1"]      # same network, nothing dropped
    for t in range(8):
        keep = rsm.keep_mask_torch(11, "MLP1", 0, t, C * H * W, 0.5).view(H, W, C).permute(2, 0, 1)
        torch.testing.assert_close(got[t], raw[t] * keep.long())
    c = res.counts["block0.mlp1"]
    assert c["spikes"] == int(raw.sum()) and 0.4 < c["delivered"] / c["spikes"] < 0.6


def test_fixed_executor_tracks_float_executor():
    model = small_model(2)
    g = export_model(model, precision="fixed")
    assert all(np.abs(lay.params["weight"]).max() <= 127 for lay in g.layers if lay.type == "conv")
    x = torch.randn(4, 1, 8, 8)
    rf = NetSim(g, precision="float").run(x, T=16)
    rq = NetSim(g, precision="fixed").run(x, T=16)
    for name, cf in rf.counts.items():
        if cf["site"]:
            cq = rq.counts[name]
            assert abs(cq["spikes"] - cf["spikes"]) <= 0.05 * cf["spikes"] + 20, name
    assert (rf.logits - rq.logits).abs().max() < 0.1 * rf.logits.abs().max() + 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fixed_executor_cpu_equals_cuda():
    g = export_model(small_model(3), precision="fixed", mask={"Q": 0.75, "K": 0.75, "A": 0.75})
    x = torch.randn(3, 1, 8, 8)
    a = NetSim(g, device="cpu").run(x, T=12)
    b = NetSim(g, device="cuda").run(x, T=12)
    assert a.counts == b.counts
    assert torch.equal(a.readout, b.readout.cpu())


DIGITS = Path(__file__).resolve().parents[1] / "export" / "digits.pt"


@pytest.mark.skipif(not DIGITS.exists(), reason="export/digits.pt not trained yet")
def test_trained_digits_fixed_close_to_float():
    from mst_lava.checkpoint import load_checkpoint
    from mst_lava.data import get_dataset
    model, _ = load_checkpoint(DIGITS)
    ds = get_dataset("digits", split="test")
    n = 24
    x = torch.stack([ds[i][0] for i in range(n)])
    y = torch.tensor([int(ds[i][1]) for i in range(n)])
    g = export_model(model, precision="fixed")
    ann = (model(x).argmax(-1) == y).float().mean().item()
    fl = (NetSim(g, precision="float").run(x, T=32).pred == y).float().mean().item()
    fx = (NetSim(g, precision="fixed").run(x, T=32).pred == y).float().mean().item()
    assert ann >= 0.9 and fl >= ann - 0.15 and fx >= fl - 0.1
