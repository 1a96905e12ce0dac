"""The event-driven patch merging (format extension version 3, docs/netx-mst-format.md §5b).

`mst-export --merge-input events` writes each patch merging as a conv on the spike trains the stage's residual
stream sums (one composed weight set per train) instead of a conv on the graded stream. Checked here:

* float: the same network up to float rounding (the graded file's logits, predictions and spikes; the ANN form);
* fixed: `mst run --backend lava-cpu` equals `--backend torch --precision fixed` (predictions, integer scores,
  every count) and `mst verify` passes;
* counts: the merge does no analog MACs, and its synaptic ops equal a recount from the recorded spike trains
  that does not use `netx_ops.conv_fanout`;
* the reader: versions (an old reader's refusal, a version-3 layer in a version-2 file) and crafted bad files;
* the official topology (`mlp_skip_norm`: a BatchNorm on the stream): the stream's affine is composed into the
  weights and the bias (not refused), exact in float, Lava = NetSim in fixed point.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from model_fixtures import small_model
from test_net_limits import _edited

from mst_lava.errors import MSTError
from mst_lava.export import NetSim, export_model, read_network, write_network

T = 16


def _digits(n: int = 8) -> torch.Tensor:
    from mst_lava.data import get_dataset
    ds = get_dataset("digits", None, "test", 8, in_chans=1)
    return torch.stack([torch.as_tensor(ds[i][0]) for i in range(n)]).float()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """small_model(0) (stage 0: embed + 2 blocks → merge1) as a checkpoint and as graded/events files, with RSM
    on two of the merge's sources (embed, Proj)."""
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.cli import export_main
    d = tmp_path_factory.mktemp("event_merge")
    save_checkpoint(d / "m.pt", small_model(0), dataset="digits")
    for prec in ("float", "fixed"):
        for mi in ("graded", "events"):
            rc = export_main([str(d / "m.pt"), "-o", str(d / f"{prec}_{mi}.net"), "--precision", prec,
                              "--merge-input", mi, "--mask", "embed=0.25", "Proj=0.5"])
            assert rc == 0
    return d


def test_versions_and_structure(files):
    """events files are extension version 3 with a multi-input merge; graded files stay version 1 (unchanged)."""
    for prec in ("float", "fixed"):
        with h5py.File(files / f"{prec}_graded.net", "r") as f:
            assert int(f["mst"].attrs["version"]) == 1
        with h5py.File(files / f"{prec}_events.net", "r") as f:
            assert int(f["mst"].attrs["version"]) == 3
    ge, gg = read_network(files / "fixed_events.net"), read_network(files / "fixed_graded.net")
    m = ge.layers[ge.index("merge1")]
    names = [ge.layers[k].name for k in m.inputs]
    assert names == ["embed", "block0.attn.proj", "block0.mlp2", "block1.attn.proj", "block1.mlp2"]
    assert gg.layers[gg.layers[gg.index("merge1")].inputs[0]].name == "block1.res2"
    assert "block1.res2" not in [L.name for L in ge.layers]           # fed only the merge: dropped
    C = ge.layers[m.inputs[0]].shape[0]
    assert m.params["weight"].shape == (2 * C, 5 * C, 2, 2)
    e = np.asarray(m.fix["weight_exp"])
    assert e.shape == (5,) and np.all((-8 <= e) & (e <= 7)) and np.abs(m.params["weight"]).max() <= 127
    # each source keeps (nearly) its own 8 bits: its largest mantissa is at least 64
    for k in range(5):
        assert np.abs(m.params["weight"][:, k * C:(k + 1) * C]).max() >= 64


def test_inspect_counts_the_synapses_of_every_source(files):
    """`mst inspect`: the event-driven merge stores one weight set per source (S times the graded merge's)."""
    from mst_lava.inspect_net import inspect_graph
    rows = {}
    for mi in ("graded", "events"):
        rep = inspect_graph(read_network(files / f"fixed_{mi}.net"))
        rows[mi] = next(r for r in rep["layers"] if r["name"] == "merge1")
    g, e = rows["graded"], rows["events"]
    assert e["synapses"] == 5 * g["synapses"] and e["fan_in"] == 5 * g["fan_in"] and e["fan_out"] == g["fan_out"]
    assert len(e["weight_exps"]) == 5 and e["weight_exp"] == max(e["weight_exps"])


def test_float_events_equal_graded_up_to_rounding(files):
    gg, ge = read_network(files / "float_graded.net"), read_network(files / "float_events.net")
    x = _digits(8)
    ann_g, ann_e = NetSim(gg).run_ann(x), NetSim(ge).run_ann(x)
    torch.testing.assert_close(ann_e, ann_g, rtol=1e-9, atol=1e-12)
    a, b = NetSim(gg).run(x, T), NetSim(ge).run(x, T)
    assert torch.equal(a.pred, b.pred)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-6, atol=1e-6)
    assert a.site_counts() == b.site_counts() and sum(a.site_counts().values()) > 1000
    assert a.counts["merge1"]["analog_macs"] > 0 and b.counts["merge1"]["analog_macs"] == 0


def _recount_merge(graph, res) -> int:
    """Synaptic ops of the 2×2 stride-2 merge from the delivered spikes of its sources, without conv_fanout:
    input (c, y, x) is covered by one output position, through tap (y mod 2, x mod 2); one op per non-zero
    weight to an output channel there."""
    m = graph.layers[graph.index("merge1")]
    W = np.asarray(m.params["weight"])
    total = 0
    for j, k in enumerate(m.inputs):
        src = graph.layers[k]
        C, H, Wd = src.shape
        Wk = W[:, j * C:(j + 1) * C]
        s = res.spikes[src.name].numpy()                     # (T, B, C, H, W) delivered spikes
        for c in range(C):
            for y in range(H):
                for xx in range(Wd):
                    n = int(s[:, :, c, y, xx].sum())
                    if n:
                        total += n * int(np.count_nonzero(Wk[:, c, y % 2, xx % 2]))
    return total


@pytest.mark.parametrize("prec", ["float", "fixed"])
def test_merge_counts_are_event_driven(files, prec):
    g = read_network(files / f"{prec}_events.net")
    res = NetSim(g).run(_digits(4), T, record=True)
    c = res.counts["merge1"]
    assert c["analog_macs"] == 0
    assert c["synops"] == _recount_merge(g, res) > 0


def test_lava_equals_torch_and_verify_passes(files, capsys):
    """`mst run` on Lava and on the torch executor of the fixed events file: identical predictions, scores and
    every count (the merge's synops too); `mst verify` passes."""
    from mst_lava.cli import main
    net = files / "fixed_events.net"
    reps = {}
    for backend, extra in (("lava-cpu", []), ("torch", ["--batch-size", "2"])):
        rep = files / f"rep_{backend}"
        rc = main(["run", str(net), "--dataset", "digits", "--n", "3", "--T", str(T), "--precision", "fixed",
                   "--backend", backend, "--report", str(rep), "--no-progress"] + extra)
        assert rc == 0, capsys.readouterr()
        reps[backend] = json.loads((rep / "report.json").read_text())
    lava, tor = reps["lava-cpu"], reps["torch"]
    assert tor["predictions"] == lava["predictions"] and tor["scores"] == lava["scores"]
    assert tor["counts_per_layer_total"] == lava["counts_per_layer_total"]
    assert tor["per_inference"] == lava["per_inference"]
    assert lava["counts_per_layer_total"]["embed"]["dropped"] > 0           # RSM acts on a source of the merge
    merge = lava["counts_per_layer_total"]["merge1"]
    assert merge["analog_macs"] == 0 and merge["synops"] > 0
    rc = main(["verify", str(files / "m.pt"), str(net), "--precision", "fixed", "--n", "2", "--T", "8",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS" in out and "merge@1" in out, out


def test_one_process_per_layer_runs_the_merge_as_a_source_synapse(files):
    """granularity "layer": the merge is its own Lava process (SourceSynapse, one input port per source), exact."""
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava import process as P
    from mst_lava.lava import runner
    from mst_lava.lava.builder import build_network
    g = read_network(files / "fixed_events.net")
    x = _digits(2)
    net = build_network(g, x.numpy(), 4, granularity="layer")
    merges = [p for p in net.procs if isinstance(p, P.SourceSynapse)]
    assert len(merges) == 1 and merges[0].proc_params["n_in"] == 5
    res = runner.run_network(net, progress=False)
    ref = NetSim(g).run(x, 4)
    for k in ("spikes", "synops", "analog_macs", "neuron_updates"):
        assert res.counts["merge1"][k] == ref.counts["merge1"][k], k
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())


def test_export_help_and_bad_choice():
    from mst_lava.export.cli import build_parser
    text = " ".join(build_parser().format_help().split())
    assert "--merge-input {graded,events}" in text and "extension version 3" in text and "Default: graded" in text
    with pytest.raises(MSTError, match="merge input must be one of graded, events"):
        export_model(small_model(0), merge_input="spikes")


# ----------------------------------------------------------------------------------------
# the reader

def _merge(f):
    for k in sorted(f["layer"], key=int):
        g = f["layer"][k]
        if g["mst/name"][()] in (b"merge1", "merge1"):
            return g
    raise KeyError("merge1")


def _set(g, key, value):
    if key in g:
        del g[key]
    g.create_dataset(key, data=value)


def _inputs(f, fn):
    g = _merge(f)
    _set(g, "mst/inputs", fn(g["mst/inputs"][()]))


CASES = [
    ("v2", lambda f: f["mst"].attrs.__setitem__("version", 2),
     r"merge1\): is a conv with 5 spike inputs .* extension version 3, but /mst has version 2"),
    ("v5", lambda f: f["mst"].attrs.__setitem__("version", 5), r"extension version 5; .* update mst_lava"),
    ("exp_scalar", lambda f: _set(_merge(f), "mst/fixed/weight_exp", np.int64(0)),
     r"merge1\)/mst/fixed: weight_exp has shape \(\), expected \(5,\)"),
    ("exp_range", lambda f: _set(_merge(f), "mst/fixed/weight_exp", np.array([0, 0, 8, 0, 0])),
     r"merge1\)/mst/fixed: weight_exp holds 8, outside \[-8, 7\]"),
    ("exp_float", lambda f: _set(_merge(f), "mst/fixed/weight_exp", np.zeros(5)),
     r"merge1\)/mst/fixed: weight_exp is a float array"),
    ("graded_input", lambda f: _inputs(f, lambda a: np.concatenate([a[:-1], [a[-1] - 3]])),
     r"merge1\): \(conv\) has 5 inputs, and input layer \d+ \(mst_residual, graded\) is not a spiking grid layer"),
    ("twice", lambda f: _inputs(f, lambda a: np.concatenate([a[:-1], a[:1]])), r"lists an input layer twice"),
    ("channels", lambda f: _inputs(f, lambda a: a[:-1]), r"conv weight takes 80x1 input channels but its input "
                                                         r"has 64"),
    ("groups", lambda f: _set(_merge(f), "groups", np.int64(2)), r"merge1\): groups is 2; a conv with several"),
    ("mantissa", lambda f: _set(_merge(f), "weight", np.full(_merge(f)["weight"].shape, 128, dtype=np.int16)),
     r"merge1\): weight holds 128, outside \[-127, 127\]"),
]


@pytest.mark.parametrize("name,edit,message", CASES, ids=[c[0] for c in CASES])
def test_reader_refuses_bad_event_merges(files, tmp_path, name, edit, message):
    bad = _edited(files / "fixed_events.net", tmp_path / f"{name}.net", edit)
    with pytest.raises(MSTError, match=message) as e:
        read_network(bad)
    assert "\n" not in str(e.value)


def test_a_reader_of_versions_1_and_2_refuses_an_events_file(files, monkeypatch):
    """What a release before extension version 3 says (its reader knew versions 1 and 2 only)."""
    from mst_lava.export import hdf5_read
    monkeypatch.setattr(hdf5_read, "MST_VERSIONS", (1, 2))
    monkeypatch.setattr(hdf5_read, "MST_VERSION", 2)
    with pytest.raises(MSTError, match=r"extension version 3; this mst_lava reads versions 1, 2 \(written by a "
                                       r"newer mst_lava: update mst_lava\)"):
        read_network(files / "fixed_events.net")
    read_network(files / "fixed_graded.net")


# ----------------------------------------------------------------------------------------
# the official topology: a BatchNorm on the stream (extension version 2) composed into the merge

def test_official_topology_stream_affine_is_composed(tmp_path):
    from test_official_export import official_digits

    import mst_lava.lava  # noqa: F401
    from mst_lava.lava import runner
    m = official_digits(seed=3, spiky=True)
    x = _digits(4)
    gg, ge = export_model(m, precision="float"), export_model(m, precision="float", merge_input="events")
    mi = ge.layers[ge.index("merge1")]
    assert len(mi.inputs) == 5
    # the stream affine is not a plain sum of spikes: the composed gains differ per channel, the bias moved
    W = np.asarray(mi.flt["weight"])
    C = ge.layers[mi.inputs[0]].shape[0]
    per_channel = np.abs(W[:, :C]).max(axis=(0, 2, 3)) / np.abs(gg.layers[gg.index("merge1")].flt["weight"]).max(
        axis=(0, 2, 3))
    assert per_channel.std() > 0
    assert not np.allclose(mi.flt["bias"], gg.layers[gg.index("merge1")].flt["bias"])
    torch.testing.assert_close(NetSim(ge).run_ann(x), NetSim(gg).run_ann(x), rtol=1e-9, atol=1e-12)
    a, b = NetSim(gg).run(x, 8), NetSim(ge).run(x, 8)
    assert torch.equal(a.pred, b.pred) and a.site_counts() == b.site_counts()
    # fixed point: version 3 (with version-2 fields), Lava = NetSim exactly
    gf = export_model(m, precision="fixed", merge_input="events")
    write_network(tmp_path / "off_events.net", gf)
    gf = read_network(tmp_path / "off_events.net")
    assert gf.mst_version == 3
    ref = NetSim(gf, precision="fixed").run(x[:2], 8)
    res = runner.run(gf, x[:2].numpy(), 8, precision="fixed")
    for name, c in ref.counts.items():
        for k in ("spikes", "delivered", "synops", "neuron_updates", "analog_macs", "current_overflows",
                  "voltage_overflows"):
            assert int(c.get(k, 0)) == int(res.counts.get(name, {}).get(k, 0)), (name, k)
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())
    assert ref.counts["merge1"]["analog_macs"] == 0 and ref.counts["merge1"]["synops"] > 0
