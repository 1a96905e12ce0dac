"""MST export: BN folding and weight layouts against the model, RSM index layouts, HDF5 round
trip, validation errors, and the mst-export command."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mst_lava import netx_ops as ops
from mst_lava.checkpoint import save_checkpoint
from mst_lava.errors import MSTError
from mst_lava.export import NetSim, bn_fold, export_model, merge_conv_weight, read_network, write_network
from mst_lava.export.cli import export_main
from mst_lava.model.mst import window_partition

torch.set_num_threads(1)


from model_fixtures import small_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return small_model()


def test_bn_folded_graph_equals_model_float_outputs(model):
    m = model.double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    g = export_model(m, precision="float")
    got = NetSim(g).run_ann(x)
    want = m(x)
    torch.testing.assert_close(got, want.detach(), rtol=1e-9, atol=1e-9)
    model.float()


def test_merge_conv_weight_layout_matches_patch_merging(model):
    mg = model.merges[0]
    C = mg.reduction.weight.shape[1] // 4
    x = torch.randn(2, 8, 8, C, dtype=torch.float64)
    mgd = mg.double()
    gathered = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    want = mgd.reduction(mgd.norm(gathered)).detach()                    # (B, H/2, W/2, 2C)
    g, h = bn_fold(mgd.norm)
    R = mgd.reduction.weight.detach().numpy()
    w = merge_conv_weight(R, g, C)
    got = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), torch.from_numpy(w), torch.from_numpy(R @ h), stride=2)
    torch.testing.assert_close(got.permute(0, 2, 3, 1), want, rtol=1e-10, atol=1e-10)
    mg.float()


@pytest.mark.parametrize("shift", [0, 2])
def test_rsm_index_layouts_match_the_model(shift):
    H = W = 8
    C, heads, w = 6, 2, 4
    d = C // heads
    code = torch.arange(H * W * C).view(1, H, W, C)                       # code of grid element (y, x, c)
    rolled = torch.roll(code, shifts=(-shift, -shift), dims=(1, 2)) if shift else code
    win = window_partition(rolled, w)                                     # (nW, N, C): the Proj layout
    heads_layout = win.view(win.shape[0], w * w, heads, d).permute(0, 2, 1, 3)   # (nW, h, N, d): Q K V AV
    for layout, tensor in (("window_tokens", win), ("window_heads", heads_layout)):
        where = torch.empty(H * W * C, dtype=torch.int64)
        where[tensor.reshape(-1)] = torch.arange(H * W * C)             # grid code -> C-order position
        idx = ops.rsm_index(layout, (C, H, W), window=w, shift=shift, heads=heads)
        expect = where.view(H, W, C).permute(2, 0, 1).numpy()
        np.testing.assert_array_equal(idx, expect)
    grid = ops.rsm_index("grid", (C, H, W))
    np.testing.assert_array_equal(grid, code[0].permute(2, 0, 1).numpy())


def test_windows_round_trip_and_match_model():
    x = torch.randn(2, 6, 8, 8)
    for s in (0, 2):
        wn = ops.to_windows(x, 4, s, 2)
        back = ops.from_windows(wn, 4, s, 8, 8)
        torch.testing.assert_close(back, x)
        ref = window_partition(torch.roll(x.permute(0, 2, 3, 1), (-s, -s), (1, 2)), 4)   # (B·nW, N, C)
        ref = ref.view(2, 4, 16, 2, 3).permute(0, 1, 3, 2, 4)
        torch.testing.assert_close(wn, ref)


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_hdf5_round_trip(tmp_path, model, precision):
    g = export_model(model, precision=precision, mask={"Q": 0.5, "A@1": 0.25}, seed=7)
    path = tmp_path / "m.net"
    write_network(path, g)
    back = read_network(path)
    assert back.kind == "mst" and back.precision == precision and back.seed == 7
    assert len(back) == len(g)
    for a, b in zip(g.layers, back.layers):
        assert (a.type, a.name, tuple(a.shape), list(a.inputs), a.output) == \
               (b.type, b.name, tuple(b.shape), list(b.inputs), b.output)
        assert a.site == b.site and a.block == b.block and a.rsm_ratio == b.rsm_ratio
        for k, v in a.params.items():
            np.testing.assert_array_equal(np.asarray(b.params[k]), np.asarray(v))
        for mine, theirs in ((a.flt, b.flt), (a.fix, b.fix)):
            assert set(mine) == set(theirs)
            for k, v in mine.items():
                np.testing.assert_array_equal(np.asarray(theirs[k]), np.asarray(v))
        if a.neuron:
            assert {k: (v.item() if hasattr(v, "item") else v) for k, v in a.neuron.items()} == b.neuron
    masked = {(lay.site, lay.block): lay.rsm_ratio for _, lay in back.sites() if lay.rsm_ratio}
    assert masked == {("Q", 0): 0.5, ("Q", 1): 0.5, ("Q", 2): 0.5, ("A", 1): 0.25}
    x = torch.randn(2, 1, 8, 8)
    r1, r2 = NetSim(g).run(x, T=6), NetSim(back).run(x, T=6)
    assert r1.counts == r2.counts
    torch.testing.assert_close(r1.logits, r2.logits)


@pytest.fixture(scope="module")
def net_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("net") / "ok.net"
    write_network(path, export_model(model, precision="fixed"))
    return path


def _copy_and_edit(src, dst, edit):
    import shutil
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def test_truncated_and_corrupt_files_give_clear_errors(tmp_path, net_file):
    data = net_file.read_bytes()
    trunc = tmp_path / "trunc.net"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(MSTError, match="truncated|corrupt"):
        read_network(trunc)
    garbage = tmp_path / "garbage.net"
    garbage.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(MSTError, match="not an HDF5 file"):
        read_network(garbage)
    with pytest.raises(MSTError, match="does not exist"):
        read_network(tmp_path / "missing.net")
    with pytest.raises(MSTError, match="directory"):
        read_network(tmp_path)


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.attrs.__setitem__("format_version", 99), "format_version is 99"),
    (lambda f: f.attrs.__setitem__("format", "something.else"), "format tag"),
    (lambda f: f.attrs.__setitem__("precision", "half"), "precision"),
    (lambda f: f["mst"].attrs.__setitem__("version", 5), "extension version 5"),
    (lambda f: f.__delitem__("layer/3/neuron/vThMant"), r"layer/3 \(block0.sc1\).*vThMant"),
    (lambda f: f.__delitem__("layer/4/mst/float/weight"), r"layer/4 \(block0.attn.q\).*'weight'"),
    (lambda f: f["layer/7/mst/inputs"].__setitem__(0, 9), r"input 9 is not an earlier layer"),
    (lambda f: f["layer/3/neuron/reset"].__class__ and (f.__delitem__("layer/3/neuron/reset"),
                                                       f["layer/3/neuron"].create_dataset("reset", data="zero")),
     "reset=subtract"),
    (lambda f: f.move("layer/5", "layer/50"), "without gaps"),
    (lambda f: f["layer/4/weight"].__setitem__((0, 0, 0, 0), 300), r"\[-127, 127\]"),
    (lambda f: f["layer/7/mst/rsm_ratio"].write_direct(np.array(1.5)), r"outside \[0, 1\)"),
    (lambda f: f.__delitem__("mst/exp_table"), "exp_table"),
])
def test_reader_says_exactly_what_is_wrong(tmp_path, net_file, edit, message):
    bad = _copy_and_edit(net_file, tmp_path / "bad.net", edit)
    with pytest.raises(MSTError, match=message):
        read_network(bad)


def test_mst_export_cli(tmp_path, model, capsys):
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, mask={"K": 0.5}, dataset="digits")
    out = tmp_path / "out" / "m.net"
    assert export_main([str(ckpt), "-o", str(out), "--precision", "fixed", "--mask", "Q=0.75", "--seed", "3"]) == 0
    g = read_network(out)
    assert g.precision == "fixed" and g.seed == 3
    ratios = {lay.site: lay.rsm_ratio for _, lay in g.sites() if lay.rsm_ratio}
    assert ratios == {"Q": 0.75}                                           # --mask replaces the checkpoint's
    assert export_main([str(ckpt), "-o", str(tmp_path / "d.net")]) == 0
    assert {lay.site for _, lay in read_network(tmp_path / "d.net").sites() if lay.rsm_ratio} == {"K"}
    capsys.readouterr()
    assert export_main([str(ckpt), "-o", str(tmp_path / "x.net"), "--mask", "Q=1.5"]) == 2
    assert "outside [0, 1)" in capsys.readouterr().err
    assert export_main([str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.net")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.net").exists()
    with pytest.raises(SystemExit) as e:
        export_main(["--help"])
    assert e.value.code == 0
    helptext = capsys.readouterr().out
    for opt in ("--precision", "--mask", "--seed", "-o"):
        assert opt in helptext
