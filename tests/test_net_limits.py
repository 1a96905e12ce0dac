"""read_network validates .net files by value: Loihi's bit widths, integer/float types, finite
floats, ranges, layer positions and declared dataset sizes. Each case edits a small exported
file (made once per module in tmp) and expects one MSTError naming the layer and the field."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from model_fixtures import small_model  # noqa: E402

from mst_lava.errors import MSTError
from mst_lava.export import export_model, read_network, write_network

# small_model(0), fixed: 1 embed, 3 block0.sc1 (bias_exp >= 1), 4 block0.attn.q,
# 7 block0.attn.a, 8 block0.attn.av, 10 block0.res1, 20 block1.attn.av (has a mask), 41 readout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    model = small_model(0)
    out = {}
    for prec in ("fixed", "float"):
        g = export_model(model, precision=prec)
        write_network(d / f"{prec}.net", g)
        out[prec] = d / f"{prec}.net"
    g = read_network(out["fixed"])
    assert g.layers[3].fix["bias_exp"] >= 1
    assert "mask" in g.layers[20].fix and g.layers[41].type == "mst_readout"
    return out


def _set(f, key, value, **kw):
    if key in f:
        del f[key]
    f.create_dataset(key, data=value, **kw)


def _item(f, key, index, value):
    a = f[key][()]
    a[index] = value
    _set(f, key, a)


FIXED_CASES = [
    # types: strings or floats where integers belong
    ("vthmant_string", lambda f: _set(f, "layer/4/neuron/vThMant", "lots"),
     r"layer/4 \(block0.attn.q\)/neuron: vThMant is the string 'lots'; an integer"),
    ("vthmant_float", lambda f: _set(f, "layer/4/neuron/vThMant", 1000.0),
     r"layer/4 \(block0.attn.q\)/neuron: vThMant is the float 1000.0"),
    ("weight_exp_string", lambda f: _set(f, "layer/4/mst/fixed/weight_exp", "5"),
     r"layer/4 \(block0.attn.q\)/mst/fixed: weight_exp is the string '5'"),
    ("site_id_float", lambda f: _set(f, "layer/4/mst/site_id", 1.0),
     r"layer/4 \(block0.attn.q\)/mst: site_id is the float 1.0"),
    ("window_string", lambda f: _set(f, "layer/7/mst/window", "4"),
     r"layer/7 \(block0.attn.a\)/mst: window is the string '4'"),
    ("grid_three", lambda f: _set(f, "layer/7/mst/grid", np.array([8, 8, 8])),
     r"layer/7 \(block0.attn.a\)/mst: grid has 3 entries"),
    ("inputs_float", lambda f: _set(f, "layer/5/mst/inputs", np.array([2.7])),
     r"layer/5 \(block0.attn.k\)/mst: inputs is a float array"),
    ("output_layer_float", lambda f: f.attrs.__setitem__("output_layer", 41.5),
     r"/: attribute output_layer is the float 41.5"),
    ("output_layer_conv", lambda f: f.attrs.__setitem__("output_layer", 39),
     r"output_layer 39 is a conv layer; it must be the mst_readout"),
    ("rsm_seed_string", lambda f: f.attrs.__setitem__("rsm_seed", "seven"),
     r"attribute rsm_seed is the string 'seven'"),
    ("rsm_seed_negative", lambda f: f.attrs.__setitem__("rsm_seed", -3),
     r"attribute rsm_seed -3 is outside"),
    ("shape_float", lambda f: _set(f, "layer/4/shape", np.array([16.0, 8.0, 8.0])),
     r"layer/4 \(block0.attn.q\): shape is a float array"),
    # NaN / inf floats
    ("threshold_nan", lambda f: _set(f, "layer/4/neuron/threshold", np.nan),
     r"layer/4 \(block0.attn.q\)/neuron: threshold is nan; a finite number"),
    ("float_bias_inf", lambda f: _item(f, "layer/4/mst/float/bias", 0, np.inf),
     r"layer/4 \(block0.attn.q\)/mst/float: bias holds NaN or infinite values"),
    ("rsm_ratio_nan", lambda f: _set(f, "layer/4/mst/rsm_ratio", np.nan),
     r"layer/4 \(block0.attn.q\)/mst: rsm_ratio is nan"),
    ("theta_v_inf", lambda f: _set(f, "layer/8/mst/float/theta_v", np.inf),
     r"layer/8 \(block0.attn.av\)/mst/float: theta_v is inf"),
    # issue 31: informative fields are checked too
    ("membrane_unit_nan", lambda f: _set(f, "layer/4/mst/fixed/membrane_unit", np.nan),
     r"layer/4 \(block0.attn.q\)/mst/fixed: membrane_unit is nan; a finite number"),
    ("input_unit_nan", lambda f: _set(f, "layer/4/mst/fixed/input_unit", np.nan),
     r"layer/4 \(block0.attn.q\)/mst/fixed: input_unit is nan; a finite number"),
    ("max_current_inf", lambda f: _set(f, "layer/4/mst/fixed/max_current", np.inf),
     r"layer/4 \(block0.attn.q\)/mst/fixed: max_current is inf; a finite number"),
    ("membrane_unit_negative", lambda f: _set(f, "layer/7/mst/fixed/membrane_unit", -1.0),
     r"layer/7 \(block0.attn.a\)/mst/fixed: membrane_unit -1.0 must be > 0"),
    ("mask_unknown_site", lambda f: f.attrs.__setitem__("mask", '{"bogus": 0.5}'),
     r"/: attribute mask names site 'bogus', which no layer of the file is"),
    ("mask_unknown_block", lambda f: f.attrs.__setitem__("mask", '{"Q@7": 0.5}'),
     r"/: attribute mask names site 'Q@7'"),
    ("mask_without_ratios", lambda f: f.attrs.__setitem__("mask", '{"Q": 0.75}'),
     r"/: attribute mask gives Q=0.75, but the file's layers carry no RSM ratios"),
    ("site_missing", lambda f: f.__delitem__("layer/4/mst/site"),
     r"layer/4 \(block0.attn.q\)/mst: site is missing or empty; every neuron layer \(conv\)"),
    ("site_missing_qk", lambda f: f.__delitem__("layer/7/mst/site"),
     r"layer/7 \(block0.attn.a\)/mst: site is missing or empty; every neuron layer \(mst_qk\)"),
    ("source_sha256_garbage", lambda f: f.attrs.__setitem__("source_sha256", "abc"),
     r"/: attribute source_sha256 is the string 'abc'; 64 lowercase hex digits"),
    # Loihi bit widths
    ("vthmant_17bit", lambda f: _set(f, "layer/4/neuron/vThMant", np.int64(2 ** 17)),
     r"layer/4 \(block0.attn.q\)/neuron: vThMant 131072 is outside \[1, 131071\] \(Loihi's threshold mantissa"),
    ("vthmant_2_62", lambda f: _set(f, "layer/4/neuron/vThMant", np.int64(2 ** 62)),
     r"vThMant 4611686018427387904 is outside \[1, 131071\]"),
    ("vinit_mismatch", lambda f: _set(f, "layer/4/neuron/vInit", np.int64(5)),
     r"layer/4 \(block0.attn.q\)/neuron: vInit 5 must be \(vThMant << 6\) // 2"),
    ("weight_exp_high", lambda f: _set(f, "layer/4/mst/fixed/weight_exp", np.int64(8)),
     r"layer/4 \(block0.attn.q\)/mst/fixed: weight_exp 8 is outside \[-8, 7\]"),
    ("weight_exp_62", lambda f: _set(f, "layer/4/mst/fixed/weight_exp", np.int64(62)),
     r"weight_exp 62 is outside \[-8, 7\]"),
    ("weight_exp_low", lambda f: _set(f, "layer/4/mst/fixed/weight_exp", np.int64(-9)),
     r"weight_exp -9 is outside \[-8, 7\]"),
    ("bias_exp_high", lambda f: _set(f, "layer/4/mst/fixed/bias_exp", np.int64(8)),
     r"layer/4 \(block0.attn.q\)/mst/fixed: bias_exp 8 is outside \[0, 7\]"),
    ("bias_mantissa", lambda f: _item(f, "layer/4/bias", 0, 4096 << _bias_exp(f, 4)),
     r"layer/4 \(block0.attn.q\): bias holds \d+, outside \[-\d+, \d+\] \(a 13-bit bias mantissa << bias_exp"),
    ("bias_2_63", lambda f: _item(f, "layer/3/bias", 0, 2 ** 63 - 1),
     r"layer/3 \(block0.sc1\): bias holds 9223372036854775807, outside"),
    ("bias_not_multiple", lambda f: _item(f, "layer/3/bias", 0, (1 << _bias_exp(f, 3)) + 1),
     r"layer/3 \(block0.sc1\): bias\[0\] = \d+ is not a multiple of 2\*\*bias_exp = \d+"),
    ("weight_8bit", lambda f: _item(f, "layer/4/weight", (0, 0, 0, 0), 128),
     r"layer/4 \(block0.attn.q\): weight holds 128, outside \[-127, 127\]"),
    ("weight_float", lambda f: _set(f, "layer/4/weight", f["layer/4/weight"][()].astype(np.float32) + 0.5),
     r"layer/4 \(block0.attn.q\): weight is a float array .* integers belong here"),
    ("residual_gain_2_62", lambda f: _item(f, "layer/10/mst/fixed/gain", 1, 2 ** 62),
     r"layer/10 \(block0.res1\)/mst/fixed: gain holds 4611686018427387904, outside \[-32767, 32767\]"),
    ("a_mult_2_62", lambda f: _set(f, "layer/8/mst/fixed/a_mult", np.int64(2 ** 62)),
     r"layer/8 \(block0.attn.av\)/mst/fixed: a_mult 4611686018427387904 is outside"),
    ("scale_shift_negative", lambda f: _set(f, "layer/7/mst/fixed/scale_shift", np.int64(-100)),
     r"layer/7 \(block0.attn.a\)/mst/fixed: scale_shift -100 is outside \[-16, 48\]"),
    ("v_shift_huge", lambda f: _set(f, "layer/8/mst/fixed/v_shift", np.int64(200)),
     r"layer/8 \(block0.attn.av\)/mst/fixed: v_shift 200 is outside"),
    ("readout_weight_exp", lambda f: _set(f, "layer/41/mst/fixed/weight_exp", np.int64(62)),
     r"layer/41 \(readout\)/mst/fixed: weight_exp 62 is outside \[0, 16\]"),
    ("readout_bias", lambda f: _item(f, "layer/41/bias", 0, 2 ** 63 - 1),
     r"layer/41 \(readout\): bias holds 9223372036854775807, outside"),
    # shapes and presence
    ("softmax_bias_shape", lambda f: _set(f, "layer/8/mst/float/bias", np.zeros((2, 16, 15))),
     r"layer/8 \(block0.attn.av\)/mst/float: bias has shape \(2, 16, 15\), expected \(2, 16, 16\)"),
    ("softmax_fixed_mask_shape", lambda f: _set(f, "layer/20/mst/fixed/mask", np.zeros((3, 16, 16), np.int64)),
     r"layer/20 \(block1.attn.av\)/mst/fixed: mask has shape"),
    ("missing_bias", lambda f: f.__delitem__("layer/4/bias"),
     r"layer/4 \(block0.attn.q\): \(conv\) has no 'bias'"),
    ("missing_bias_exp", lambda f: f.__delitem__("layer/4/mst/fixed/bias_exp"),
     r"layer/4 \(block0.attn.q\)/mst/fixed: conv fixed-point parameters lacks 'bias_exp'"),
    ("dilation", lambda f: _set(f, "layer/4/dilation", np.array([2, 2])),
     r"layer/4 \(block0.attn.q\): dilation 2,2"),
    ("depth", lambda f: _set(f, "layer/4/mst/depth", np.int64(9)),
     r"layer/4 \(block0.attn.q\)/mst: depth 9 is not the longest path"),
    ("duplicate_name", lambda f: _set(f, "layer/5/mst/name", "block0.attn.q"),
     r"layer/5 \(block0.attn.q\): mst/name 'block0.attn.q' is used by an earlier layer"),
    # exp table
    ("exp_table_empty", lambda f: _set(f["mst"], "exp_table", np.zeros(0, np.int64)) or _exp_attrs(f),
     r"mst/exp_table: has shape \(0,\)"),
    ("exp_table_float", lambda f: _set(f["mst"], "exp_table", f["mst/exp_table"][()].astype(np.float64))
     or _exp_attrs(f), r"mst/exp_table: has element type float64"),
    ("exp_table_zero", lambda f: _set(f["mst"], "exp_table", np.zeros_like(f["mst/exp_table"][()])) or _exp_attrs(f),
     r"mst/exp_table: entry 0 is 0, expected 32768"),
    ("exp_table_bits_string", lambda f: f["mst/exp_table"].attrs.__setitem__("frac_bits", "8"),
     r"mst/exp_table: attribute frac_bits is the string '8'"),
    # layer types at impossible positions
    ("dense_for_conv", lambda f: _set(f, "layer/4/type", np.array([b"dense"], dtype="S10")),
     r"layer/4 \(block0.attn.q\): unknown layer type 'dense'.*plain netx files only"),
    ("flatten_in_the_middle", lambda f: _set(f, "layer/12/type", np.array([b"flatten"], dtype="S10")),
     r"layer/12 \(block0.mlp1\): unknown layer type 'flatten'"),
    ("input_not_first", lambda f: _set(f, "layer/4/type", np.array([b"input"], dtype="S10")),
     r"layer/4 \(block0.attn.q\): an input layer can only be layer 0"),
    ("qk_from_residual", lambda f: _item(f, "layer/7/mst/inputs", 0, 2),
     r"layer/7 \(block0.attn.a\): \(mst_qk\) input layer 2 is a mst_residual"),
    ("readout_from_conv", lambda f: _item(f, "layer/41/mst/inputs", 0, 39),
     r"layer/41 \(readout\): \(mst_readout\) takes its input from a mst_residual layer"),
    ("old_version", lambda f: f.attrs.__setitem__("format_version", 1),
     r"format_version is 1.*predate Loihi's bit widths"),
    # declared sizes that cannot fit in memory: refused before reading
    ("huge_weight", lambda f: _set_huge(f, "layer/4/weight", (200_000, 200_000), "f4"),
     r"layer/4/weight: declares 40,000,000,000 elements .* refusing to read it"),
    ("huge_exp_table", lambda f: _set_huge(f["mst"], "exp_table", (2 ** 31,), "i8") or _exp_attrs(f),
     r"mst/exp_table: has shape \(2147483648,\)"),
    ("huge_shape", lambda f: _set(f, "layer/4/shape", np.array([10 ** 6, 10 ** 6, 10 ** 6])),
     r"layer/4 \(block0.attn.q\): shape \(1000000, 1000000, 1000000\) is 1.*cannot fit in memory"),
]


def _bias_exp(f, i):
    return int(f[f"layer/{i}/mst/fixed/bias_exp"][()])


def _exp_attrs(f):
    for k, v in (("frac_bits", 8), ("out_bits", 15), ("prob_bits", 15)):
        f["mst/exp_table"].attrs[k] = v


def _set_huge(g, key, shape, dtype):
    if key in g:
        del g[key]
    g.create_dataset(key, shape=shape, dtype=dtype, chunks=(1,) * (len(shape) - 1) + (1024,))


def _edited(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def test_unedited_files_are_valid(files):
    for p in files.values():
        read_network(p)


@pytest.mark.parametrize("name,edit,message", FIXED_CASES, ids=[c[0] for c in FIXED_CASES])
def test_fixed_file_limits(files, tmp_path, name, edit, message):
    bad = _edited(files["fixed"], tmp_path / f"{name}.net", edit)
    with pytest.raises(MSTError, match=message):
        read_network(bad)


FLOAT_CASES = [
    ("bias_nan", lambda f: _item(f, "layer/4/bias", 1, np.nan),
     r"layer/4 \(block0.attn.q\): bias holds NaN or infinite values"),
    ("weight_inf", lambda f: _item(f, "layer/4/weight", (0, 0, 0, 0), -np.inf),
     r"layer/4 \(block0.attn.q\): weight holds NaN or infinite values"),
    ("gain_nan", lambda f: _item(f, "layer/10/mst/float/gain", 0, np.nan),
     r"layer/10 \(block0.res1\)/mst/float: gain holds NaN"),
    ("scale_string", lambda f: _set(f, "layer/7/mst/float/scale", "big"),
     r"layer/7 \(block0.attn.a\)/mst/float: scale is the string 'big'"),
]


@pytest.mark.parametrize("name,edit,message", FLOAT_CASES, ids=[c[0] for c in FLOAT_CASES])
def test_float_file_values(files, tmp_path, name, edit, message):
    bad = _edited(files["float"], tmp_path / f"{name}.net", edit)
    with pytest.raises(MSTError, match=message):
        read_network(bad)


def test_every_exported_layer_fits_loihi(files):
    """What the exporter writes is within Loihi's widths (the reader checks it too)."""
    g = read_network(files["fixed"])
    for L in g.layers:
        if L.type == "conv":
            assert -8 <= int(L.fix["weight_exp"]) <= 7 and 0 <= int(L.fix["bias_exp"]) <= 7
            assert np.abs(L.params["weight"]).max() <= 127
            be = int(L.fix["bias_exp"])
            assert np.all(np.asarray(L.params["bias"]) % (1 << be) == 0)
            assert np.abs(np.asarray(L.params["bias"]) >> be).max() <= 4095
        if L.neuron is not None:
            assert 1 <= int(L.neuron["vThMant"]) < 2 ** 17


@pytest.mark.parametrize("backend", ["torch", "lava-cpu"])
def test_both_backends_refuse_the_same_file_with_the_same_line(files, tmp_path, capsys, backend):
    from mst_lava.cli import main
    bad = _edited(files["fixed"], tmp_path / "bad.net", lambda f: _set(f, "layer/4/mst/fixed/weight_exp", np.int64(9)))
    rc = main(["run", str(bad), "--dataset", "digits", "--n", "2", "--T", "2", "--backend", backend, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert "layer/4 (block0.attn.q)/mst/fixed: weight_exp 9 is outside [-8, 7]" in err[0]


def test_mask_attribute_must_be_the_layers_ratios(tmp_path):
    """The root mask is what reports print as the run's mask: it must be what the layers apply."""
    g = export_model(small_model(0), precision="fixed", mask=["Q=0.75", "K@1=0.5"])
    write_network(tmp_path / "m.net", g)
    back = read_network(tmp_path / "m.net")
    assert back.attrs["mask"] == {"Q": 0.75, "K@1": 0.5}
    bad = _edited(tmp_path / "m.net", tmp_path / "bad.net", lambda f: f.attrs.__setitem__("mask", '{"Q": 0.5}'))
    with pytest.raises(MSTError, match=r"attribute mask gives Q@0 the ratio 0.5, but layer block0.attn.q \(Q@0\) "
                                       r"carries mst/rsm_ratio 0.75"):
        read_network(bad)
    bad = _edited(tmp_path / "m.net", tmp_path / "bad2.net", lambda f: f.attrs.__setitem__("mask", '{"Q": 0.75}'))
    with pytest.raises(MSTError, match=r"gives K@1 the ratio 0, but layer .* carries mst/rsm_ratio 0.5"):
        read_network(bad)
