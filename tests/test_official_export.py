"""The official MST topology in the .net format (extension version 2, docs/netx-mst-format.md §5a).

The three switches of the paper's own code, ``mlp_norm`` (BatchNorm after fc1/fc2: folded into the
linear layers), ``mlp_skip_norm`` (the MLP output is added to BN2 of the stream: a per-channel affine
on the residual's stream input) and ``final_layernorm`` (a LayerNorm per token and step in the
readout, on the host, float64 even in a fixed-point run), checked

* against the model: the exported float graph run as an ANN equals ``model(x)``, each switch alone
  and all together; the compensated torch SNN equals the float executor (per-step LayerNorm, as the
  official ``snn_validate`` and ``snn-eval`` run it);
* across the two executors: Lava equals NetSim exactly in fixed point (every count, the integer
  scores), with identical predictions in float;
* in the reader: version 1 files stay version 1, version-2 fields in a version-1 file, newer
  versions and malformed fields are refused with one-line messages;
* end to end: a synthetic checkpoint in the official format goes through import-official,
  snn-eval, mst-export, mst run --backend lava-cpu and mst verify.
"""
from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch
from test_official import official_state_dict, save_official  # noqa: F401  (save_official: a fixture)

from mst_lava import netx_ops as ops
from mst_lava.errors import MSTError
from mst_lava.export import NetSim, export_model, read_network, write_network
from mst_lava.model import build_model
from mst_lava.snn import OpCounter, simulate
from mst_lava.snn.testing import make_spiky, sharpen_attention

SWITCHES = ("mlp_norm", "mlp_skip_norm", "final_layernorm")


@torch.no_grad()
def official_digits(switches=SWITCHES, seed: int = 0, spiky: bool = False) -> torch.nn.Module:
    """A digits-sized MST with the given official switches, every BN/LN affine and statistic random."""
    torch.manual_seed(seed)
    m = build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0, **{k: True for k in switches})
    if spiky:
        m = sharpen_attention(make_spiky(m, seed=seed), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
            mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=g))
            mod.bias.copy_(0.3 * torch.randn(mod.bias.shape, generator=g))
            if not spiky and isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(0.3 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(mod.running_var.shape, generator=g))
    return m.eval()


def _digits(n: int = 4) -> torch.Tensor:
    from mst_lava.data import get_dataset
    ds = get_dataset("digits", None, "test", 8, in_chans=1)
    return torch.stack([torch.as_tensor(ds[i][0]) for i in range(n)]).float()


@pytest.mark.parametrize("switches", [SWITCHES] + [(s,) for s in SWITCHES], ids=["all"] + list(SWITCHES))
def test_float_graph_as_ann_equals_the_model(switches):
    m = official_digits(switches).double()
    x = _digits().double()
    g = export_model(m, precision="float")
    with torch.no_grad():
        got, want = NetSim(g).run_ann(x), m(x)
    assert (got - want).abs().max() <= 1e-10 * max(1.0, float(want.abs().max()))
    # the switches are really in the graph: the same weights with a switch off give other logits
    ro = g.layers[-1]
    assert (ro.mst.get("token_norm") == "layer") == ("final_layernorm" in switches)
    assert any(L.type == "mst_residual" and "scale" in L.flt for L in g.layers) == ("mlp_skip_norm" in switches)
    plain = build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0).double().eval()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if k in plain.state_dict()}, strict=False)
    with torch.no_grad():
        assert (plain(x) - want).abs().max() > 1e-3


def test_compensated_snn_equals_the_float_executor():
    """The torch SNN (attention="compensated") runs the model's own code per step: BN2 of the stream and
    the LayerNorm of each step's tokens. The float executor of the export must be the same network."""
    m = official_digits(seed=2, spiky=True).double()
    x = _digits(5).double()
    T, seed, mask = 16, 7, {"Q": 0.5, "K": 0.5, "A": 0.5}
    c = OpCounter(m)
    r = simulate(m, x, T, mask=mask, seed=seed, counter=c, attention="compensated")
    s = c.summary(T)
    sites_m = {f"{e['site']}@{e['block']}": int(round(e["spikes_emitted"] * len(x))) for e in s["sites"]}
    res = NetSim(export_model(m, precision="float", mask=mask, seed=seed), precision="float").run(x, T)
    sites_n = res.site_counts()
    assert set(sites_m) == set(sites_n) and sum(sites_n.values()) > 5000
    worst = max(abs(sites_m[k] - sites_n[k]) / max(sites_n[k], 1) for k in sites_n)
    assert worst <= 0.005, worst
    assert torch.equal(r.predictions(), res.pred)
    assert (r.logits.double() - res.logits.double()).abs().max() <= 1e-3 * max(1.0, float(res.logits.abs().max()))


def test_lava_equals_the_torch_executor():
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava import runner
    m = official_digits(seed=3, spiky=True)
    x = _digits(3)
    T = 8
    g = export_model(m, precision="fixed", mask={"Q": 0.75, "K": 0.75, "A": 0.75}, seed=5)
    ref = NetSim(g, precision="fixed").run(x, T)
    res = runner.run(g, x.numpy(), T, precision="fixed")
    for name, c in ref.counts.items():
        for k in ("spikes", "delivered", "synops", "neuron_updates", "current_overflows", "voltage_overflows"):
            assert int(c.get(k, 0)) == int(res.counts.get(name, {}).get(k, 0)), (name, k)
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())     # the LN readout too: exact
    np.testing.assert_array_equal(res.pred, ref.pred.numpy())
    assert sum(ref.site_counts().values()) > 1000
    fl = NetSim(g, precision="float").run(x, T)
    res_f = runner.run(g, x.numpy(), T, precision="float")
    np.testing.assert_array_equal(res_f.pred, fl.pred.numpy())
    np.testing.assert_allclose(res_f.logits, fl.logits.numpy(), rtol=1e-6, atol=1e-6)


def test_fixed_point_follows_the_float_network():
    m = official_digits(seed=4, spiky=True)
    x = _digits(4)
    g = export_model(m, precision="fixed")
    fx, fl = NetSim(g, precision="fixed").run(x, 16), NetSim(g, precision="float").run(x, 16)
    a, b = fx.site_counts(), fl.site_counts()
    assert sum(abs(a[k] - b[k]) for k in a) <= 0.05 * sum(b.values())
    assert fx.readout.dtype == torch.int64 and g.layers[-1].fix["norm_frac_bits"] == ops.NORM_FRAC_BITS
    assert torch.equal(fx.pred, fl.pred)


def test_norm_readout_input_is_the_layer_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 4)) * 3 + 1
    got = ops.norm_readout_input(x, 1e-5)
    tok = torch.as_tensor(x).reshape(6, -1).T
    want = torch.nn.functional.layer_norm(tok, (6,), eps=1e-5).sum(0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    xi = np.round(x * 100).astype(np.int64)
    q = ops.norm_readout_input(xi, 1e-5, unit=0.01, frac_bits=12)
    n = torch.nn.functional.layer_norm(torch.as_tensor(xi * 0.01).reshape(6, -1).T, (6,), eps=1e-5)
    assert q.dtype == np.int64
    assert np.abs(q - (n * 4096).sum(0).numpy()).max() <= 12 * 0.5 + 1e-6      # 12 tokens, each rounded
    assert np.abs(q).max() <= 12 * ops.norm_bound(6, 12)


def test_stream_affine_fixed_is_floor_of_the_scaled_stream():
    x = np.array([-7, -1, 0, 5, 1 << 22], dtype=np.int64).reshape(1, 5, 1) * np.ones((2, 1, 3), dtype=np.int64)
    mant, off = np.array([3, -5]), np.array([10, -2])
    got = ops.stream_affine_fixed(x, mant, 2, off)
    want = np.floor(x * mant.reshape(2, 1, 1) / 4).astype(np.int64) + off.reshape(2, 1, 1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ops.stream_affine_fixed(torch.as_tensor(x), mant, 2, off).numpy(), want)


# ----------------------------------------------------------------------------------------
# the format: versions and refusals

def test_extension_version_1_stays_1_and_2_marks_the_official_topology(tmp_path):
    plain = build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0).eval()
    write_network(tmp_path / "plain.net", export_model(plain, precision="fixed"))
    write_network(tmp_path / "off.net", export_model(official_digits(), precision="fixed"))
    with h5py.File(tmp_path / "plain.net", "r") as f:
        assert int(f["mst"].attrs["version"]) == 1
    with h5py.File(tmp_path / "off.net", "r") as f:
        assert int(f["mst"].attrs["version"]) == 2
    assert read_network(tmp_path / "plain.net").mst_version == 1
    assert read_network(tmp_path / "off.net").mst_version == 2
    # the shipped files (version 1) are read as before
    from pathlib import Path
    shipped = Path(__file__).resolve().parent.parent / "export" / "digits.net"
    if shipped.is_file():
        assert read_network(shipped).mst_version == 1


def _edit(src, dst, fn):
    import shutil
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


def _layer(f, typ, pred=lambda g: True):
    for k in sorted(f["layer"], key=int):
        g = f["layer"][k]
        if g["type"][0].decode() == typ and pred(g):
            return g
    raise KeyError(typ)


def _replace(g, key, value):
    del g[key]
    g.create_dataset(key, data=value)


@pytest.mark.parametrize("edit,message", [
    (lambda f: f["mst"].attrs.__setitem__("version", 1), "extension version 2, but /mst has version 1"),
    (lambda f: f["mst"].attrs.__setitem__("version", 5), "newer mst_lava"),
    (lambda f: _replace(_layer(f, "mst_residual", lambda g: "scale" in g["mst/float"])["mst/float"], "gain",
                        np.array([2.0, 1.0])), "gain[0] is 2.0"),
    (lambda f: _replace(_layer(f, "mst_residual", lambda g: "scale" in g["mst/float"])["mst/fixed"], "scale_mant",
                        np.full(16, 1 << 15)), "scale_mant"),
    (lambda f: _replace(_layer(f, "mst_residual", lambda g: "scale" in g["mst/float"])["mst/float"], "offset",
                        np.zeros(3)), "offset has shape"),
    (lambda f: _replace(_layer(f, "mst_readout")["mst"], "token_norm", "batch"), "token_norm"),
    (lambda f: _replace(_layer(f, "mst_readout")["mst/float"], "norm_eps", -1.0), "norm_eps"),
    (lambda f: _layer(f, "mst_readout")["mst/fixed"].__delitem__("norm_frac_bits"), "norm_frac_bits"),
], ids=["v2-field-in-v1", "v5", "gain0", "scale-mant", "offset-shape", "norm-kind", "eps", "frac-bits"])
def test_reader_refuses_bad_version_2_fields(tmp_path, edit, message):
    src = tmp_path / "off.net"
    write_network(src, export_model(official_digits(), precision="fixed"))
    bad = _edit(src, tmp_path / "bad.net", edit)
    with pytest.raises(MSTError) as e:
        read_network(bad)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_stream_scale_that_grows_the_payload_lowers_the_residual_gain_bits():
    m = official_digits()
    with torch.no_grad():
        for blk in m.blocks():
            blk.norm2.weight.fill_(40.0)           # BN2 scales the stream x40 per block: the bound multiplies
    g = export_model(m, precision="fixed")
    res = [L for L in g.layers if L.type == "mst_residual"]
    spike_gain = max(int(abs(v)) for L in res for j, v in enumerate(L.fix["gain"])
                     if g.layers[L.inputs[j]].output == "spikes" and L.mst["stage"] == 0)
    assert spike_gain < 2 ** ops.RESIDUAL_EXPORT_GAIN_BITS - 1       # fewer bits than usual ...
    assert spike_gain >= 2 ** ops.RESIDUAL_MIN_GAIN_BITS - 1         # ... but not fewer than the minimum
    with torch.no_grad():
        for blk in m.blocks():
            blk.norm2.weight.fill_(3000.0)
    with pytest.raises(MSTError, match="24-bit graded spikes"):
        export_model(m, precision="fixed")
    export_model(m, precision="float")                               # float has no payload limit


# ----------------------------------------------------------------------------------------
# end to end from a checkpoint in the official format

OFFICIAL = dict(img=32, patch=4, in_chans=3, C=8, depths=(2, 2), heads=(1, 2), window=4, classes=10,
                mlp_norm=True, dataset="Cifar10", masking=0.75)


def _cifar_folder(root):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (3, 3072), dtype=np.uint8), b"labels": [0, 1, 2]}, f)
    return root


def test_official_checkpoint_through_the_whole_toolchain(save_official, tmp_path, capsys):  # noqa: F811 (a fixture)
    from mst_lava.cli import export_main, main
    sd = official_state_dict(OFFICIAL, seed=5)
    with torch.no_grad():
        for k in sd:
            if k.endswith(".up"):
                sd[k] = sd[k] * 0.1               # thresholds that let every site spike at T = 8
    pth = save_official(OFFICIAL, sd)
    data = _cifar_folder(tmp_path / "cifar")
    ours = tmp_path / "ours.pt"
    assert main(["import-official", str(pth), "-o", str(ours), "--dataset", "cifar10"]) == 0
    cfg = torch.load(ours, weights_only=True)["config"]
    assert cfg["mlp_norm"] and cfg["mlp_skip_norm"] and cfg["final_layernorm"]
    capsys.readouterr()

    rep = tmp_path / "snn"
    assert main(["snn-eval", str(ours), "--data", str(data), "--T", "2,4", "--seeds", "1", "--n", "3",
                 "--report", str(rep), "--no-plots"]) == 0
    assert (rep / "report.json").is_file()

    net = tmp_path / "official.net"
    assert export_main([str(ours), "-o", str(net), "--precision", "fixed"]) == 0
    g = read_network(net)
    assert g.mst_version == 2 and g.attrs["mask"] == {"Q": 0.75, "K": 0.75, "A": 0.75}
    assert g.attrs["dataset"] == "cifar10-official"            # run and verify use the official preprocessing
    capsys.readouterr()

    lava_rep = tmp_path / "lava"
    assert main(["run", str(net), "--data", str(data), "--n", "3", "--T", "8", "--backend", "lava-cpu",
                 "--report", str(lava_rep), "--no-progress"]) == 0
    torch_rep = tmp_path / "torch"
    assert main(["run", str(net), "--data", str(data), "--n", "3", "--T", "8", "--backend", "torch",
                 "--report", str(torch_rep), "--no-progress"]) == 0
    lr, tr = (json.loads((d / "report.json").read_text()) for d in (lava_rep, torch_rep))
    assert lr["predictions"] == tr["predictions"]
    assert lr["per_inference"]["totals"] == tr["per_inference"]["totals"]
    assert lr["per_inference"]["totals"]["spikes_delivered"] > 0
    capsys.readouterr()

    rc = main(["verify", str(ours), str(net), "--data", str(data), "--n", "2", "--T", "8", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS" in out, out


def test_lava_runs_the_official_topology_without_torch(tmp_path):
    """The Lava side of version 2 (stream affine, LayerNorm readout) needs numpy only: the builder and
    runner execute an official-topology file in a subprocess that refuses torch, with the scores NetSim
    computes here."""
    from test_format_core import _run_without_torch
    m = official_digits(seed=3, spiky=True)
    x = _digits(2)
    write_network(tmp_path / "o.net", export_model(m, precision="fixed"))
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import numpy as np\n"
            "import mst_lava.lava\n"
            "from mst_lava.lava import runner\n"
            "from mst_lava.export import read_network\n"
            "res = runner.run(read_network('o.net'), np.load('x.npy'), 6, precision='fixed')\n"
            "np.save('scores.npy', res.scores)\n"
            "print('DONE')\n")
    r, report = _run_without_torch(code, tmp_path)
    assert "DONE" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert report == "TORCH-ATTEMPTS [] TORCH-LOADED False", report
    ref = NetSim(read_network(tmp_path / "o.net"), precision="fixed").run(x, 6)
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), ref.readout.sum(0).numpy())


# ----------------------------------------------------------------------------------------
# the official preprocessing (datasets cifar10-official, imagenet-official)

def test_official_cifar_preprocessing_resizes_uint8_images_and_uses_their_constants(tmp_path):
    from mst_lava.data import get_dataset
    from mst_lava.data.files import cifar
    root = _cifar_folder(tmp_path)
    raw = cifar(root, "test").images                                      # (N, 3, 32, 32) uint8
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
    std = torch.tensor((0.2023, 0.1994, 0.2010)).view(3, 1, 1)
    x32 = get_dataset("cifar10-official", root, "test", 32)[1][0]
    torch.testing.assert_close(x32, (torch.as_tensor(raw[1]).float() / 255 - mean) / std, rtol=0, atol=1e-6)
    ours = get_dataset("cifar10", root, "test", 32)[1][0]
    assert (ours - x32).abs().max() > 0.01                               # another standard deviation
    x64 = get_dataset("cifar10-official", root, "test", 64)[1][0]
    assert x64.shape == (3, 64, 64)
    u8 = (x64 * std + mean) * 255                                        # PIL resized the uint8 image:
    assert (u8 - u8.round()).abs().max() < 1e-3                          # the values are uint8 again
    f64 = get_dataset("cifar10", root, "test", 64)[1][0] * torch.tensor((0.2470, 0.2435, 0.2616)).view(3, 1, 1)
    f64 = (f64 + mean) * 255                                             # ours interpolates floats: not uint8
    assert (f64 - f64.round()).abs().max() > 0.05
    with pytest.raises(MSTError, match="3-channel"):
        get_dataset("cifar10-official", root, "test", 32, in_chans=1)


def test_official_imagenet_preprocessing_is_bicubic_resize_and_center_crop(tmp_path):
    from PIL import Image

    from mst_lava.data import get_dataset
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)              # H 30, W 40
    for split in ("train", "val"):
        (tmp_path / split / "cls0").mkdir(parents=True)
        Image.fromarray(img).save(tmp_path / split / "cls0" / "a.png")
    x = get_dataset("imagenet-official", tmp_path, "test", 32)[0][0]
    # by hand: shorter side to int(256/224 * 32) = 36 (bicubic), centre 32x32 crop, ImageNet mean/std
    big = np.asarray(Image.fromarray(img).resize((48, 36), Image.BICUBIC), dtype=np.float32) / 255
    want = (torch.as_tensor(big[2:34, 8:40]).permute(2, 0, 1) - torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)) \
        / torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-6)
    assert (get_dataset("imagenet", tmp_path, "test", 32)[0][0] - x).abs().max() > 0.01     # ours: bilinear
