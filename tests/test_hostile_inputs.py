"""Hostile and careless input against the CLI, in-process: every case exits with status 2, prints one
line on stderr (no traceback) and leaves no file behind (issue 14).

Small crafted files in tmp_path; the shipped export/digits.pt is the valid base checkpoint. Nothing
here trains or simulates: every case is refused before the work starts.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mst_lava import argtypes
from mst_lava.checkpoint import atomic_write, check_output_file, remove_stale_temps
from mst_lava.cli import export_main, main
from mst_lava.errors import MSTError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "export" / "digits.pt"


@pytest.fixture(scope="module")
def base_ckpt() -> dict:
    return torch.load(DIGITS, map_location="cpu", weights_only=True)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(capsys, root: Path, argv, *needles, entry=main, before: set | None = None) -> str:
    """Run ``entry(argv)``; assert exit 2, exactly one stderr line holding ``needles``, no traceback,
    and no file added under ``root``. Returns the line."""
    before = _tree(root) if before is None else before
    capsys.readouterr()
    code = entry([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit {code} for {argv}: {err or out}"
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1, f"{argv}: stderr is not one line:\n{err}"
    for n in needles:
        assert n in lines[0], f"{argv}: {n!r} not in {lines[0]!r}"
    assert _tree(root) == before, f"{argv} left {sorted(_tree(root) - before)}"
    return lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """tmp_path as the working folder, so default outputs (snn_report/, rsm_search.json) would show up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------------------
# 1. checkpoints: configs, weights, file types — for every command that loads one

def _set(key, value):
    return lambda c: c["config"].__setitem__(key, value)


def _nan_weight(c):
    c["state_dict"]["head.weight"] = torch.full_like(c["state_dict"]["head.weight"], float("nan"))


def _inf_weight(c):
    c["state_dict"]["patch_embed.weight"] = c["state_dict"]["patch_embed.weight"].clone()
    c["state_dict"]["patch_embed.weight"][0, 0, 0, 0] = float("inf")


def _weight(key, value):
    return lambda c: c["state_dict"].__setitem__(key, torch.full_like(c["state_dict"][key], value))


def _as(key, fn):
    return lambda c: c["state_dict"].__setitem__(key, fn(c["state_dict"][key]))


def _negative_var(c):
    c["state_dict"]["stages.0.1.norm2.running_var"] = c["state_dict"]["stages.0.1.norm2.running_var"].clone()
    c["state_dict"]["stages.0.1.norm2.running_var"][3] = -0.25


CONFIG_CASES = {
    "depths_int": (_set("depths", 2), "depths"),
    "depths_str": (_set("depths", "22"), "depths"),
    "heads_zero": (_set("heads", [0, 4]), "heads"),
    "heads_not_dividing": (_set("heads", [3, 4]), "heads"),
    "embed_dim_negative": (_set("embed_dim", -32), "embed_dim"),
    "embed_dim_huge": (_set("embed_dim", 10 ** 12), "embed_dim"),
    "embed_dim_mismatch": (_set("embed_dim", 100_000), "patch_embed.weight"),
    "embed_dim_float": (_set("embed_dim", 32.0), "embed_dim"),
    "img_size_str": (_set("img_size", "8"), "img_size"),
    "window_bool": (_set("window", True), "window"),
    "mlp_ratio_nan": (_set("mlp_ratio", float("nan")), "mlp_ratio"),
    "num_classes_zero": (_set("num_classes", 0), "num_classes"),
    "unknown_key": (_set("evil", 1), "evil"),
    "img_size_missing": (lambda c: c["config"].pop("img_size"), "lacks 'img_size'"),
    "L_missing": (lambda c: c["config"].pop("L"), "lacks 'L'"),
    "window_missing": (lambda c: c["config"].pop("window"), "lacks 'window'"),
    "config_list": (lambda c: c.__setitem__("config", [1, 2]), "'config' must be a dict"),
    "config_missing": (lambda c: c.pop("config"), "'config'"),
    "arch_unknown": (lambda c: c.__setitem__("arch", "transformer9000"), "transformer9000"),
    "state_dict_list": (lambda c: c.__setitem__("state_dict", [1]), "state_dict"),
    "weight_not_tensor": (lambda c: c["state_dict"].__setitem__("head.bias", [0.0] * 10), "head.bias"),
    "weight_missing": (lambda c: c["state_dict"].pop("head.bias"), "head.bias"),
    "nan_weight": (_nan_weight, "NaN"),
    "inf_weight": (_inf_weight, "patch_embed.weight"),
    "stored_mask_block": (lambda c: c.__setitem__("mask", {"Q@99": 0.5}), "Q@99"),
    "stored_mask_ratio": (lambda c: c.__setitem__("mask", {"Q": "lots"}), "not a number"),
    "train_state_bad": (lambda c: c.__setitem__("train_state", {"epoch": "x"}), "train_state"),
    "lam_zero": (_weight("stages.0.0.attn.q_act.lam", 0.0), "stages.0.0.attn.q_act.lam"),
    "lam_negative": (_weight("embed_act.lam", -2.0), "embed_act.lam"),
    "lam_denormal": (_weight("stages.1.0.sc1.lam", 1e-40), "stages.1.0.sc1.lam"),
    "running_var_negative": (_negative_var, "stages.0.1.norm2.running_var"),
    "weight_fp8": (_as("head.weight", lambda w: w.to(torch.float8_e4m3fn)), "head.weight"),
    "weight_sparse": (_as("head.weight", lambda w: w.to_sparse()), "head.weight"),
    "weight_meta": (_as("head.weight", lambda w: torch.empty_like(w, device="meta")), "head.weight"),
    "weight_int64": (_as("head.weight", lambda w: w.long()), "head.weight"),
    "weight_uint8": (_as("patch_embed.weight", lambda w: w.to(torch.uint8)), "patch_embed.weight"),
    "weight_bool": (_as("head.bias", lambda w: w.bool()), "head.bias"),
    "weight_complex": (_as("head.weight", lambda w: w.to(torch.complex64)), "head.weight"),
    "lam_int64": (_as("embed_act.lam", lambda w: torch.tensor(3)), "embed_act.lam"),
    "train_state_meta": (lambda c: c.__setitem__("train_state", {"epoch": 0, "optimizer": {
        "state": {0: {"exp_avg": torch.empty(3, device="meta")}}}}), "exp_avg"),
    "unknown_entry_with_tensors": (lambda c: c.__setitem__("payload", {"x": [torch.zeros(1000)]}), "'payload'"),
}


def _crafted(base: dict, tmp: Path, name: str) -> Path:
    c = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    c["config"] = dict(base["config"])
    CONFIG_CASES[name][0](c)
    p = tmp / f"{name}.pt"
    torch.save(c, p)
    return p


def _commands(ckpt: Path, tmp: Path):
    """(label, entry, argv) of every command that loads a checkpoint."""
    return [
        ("snn-eval", main, ["snn-eval", ckpt, "--report", tmp / "rep"]),
        ("mst-export", export_main, [ckpt, "-o", tmp / "o.net"]),
        ("verify", main, ["verify", ckpt, tmp / "missing.net"]),
        ("rsm-search", main, ["rsm-search", ckpt, "--out", tmp / "s.json"]),
        ("train --init", main, ["train", "--init", ckpt, "--out", tmp / "ft.pt", "--epochs", "1"]),
        ("train --resume", main, ["train", "--resume", "--out", ckpt, "--epochs", "1"]),
    ]


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_checkpoint_every_command(case, base_ckpt, work, capsys):
    ckpt = _crafted(base_ckpt, work, case)
    for label, entry, argv in _commands(ckpt, work):
        line = refused(capsys, work, argv, CONFIG_CASES[case][1], entry=entry)
        assert str(ckpt) in line or case in ("config_missing",), f"{label}: {line}"


def _write_hdf5(p: Path):
    import h5py
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "mst_lava.netx"


FILE_CASES = {
    "text": (lambda p: p.write_text("epochs: 30\nlr: 0.002\n"), "text file"),
    "hdf5_net": (_write_hdf5, "HDF5"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "raw_pickle": (lambda p: p.write_bytes(pickle.dumps({"format": "mst_lava.checkpoint"})), "not unpickled"),
    "binary_junk": (lambda p: p.write_bytes(bytes(range(256)) * 4), "not a checkpoint"),
    "truncated": (lambda p: p.write_bytes(DIGITS.read_bytes()[:50_000]), "truncated or corrupt"),
    "foreign_torch": (lambda p: torch.save({"a": torch.zeros(2)}, p), "not an mst_lava checkpoint"),
    "directory": (lambda p: p.mkdir(), "directory"),
    "missing": (lambda p: None, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_not_a_checkpoint(case, work, capsys):
    p = work / f"{case}.pt"
    FILE_CASES[case][0](p)
    for label, entry, argv in _commands(p, work):
        line = refused(capsys, work, argv, FILE_CASES[case][1], entry=entry)
        assert "malicious" not in line and "weights_only" not in line, f"{label}: {line}"


def _flip_bit_in_tensor(p: Path) -> str:
    """Flip one bit inside the largest tensor's bytes of a torch zip file; returns the member's name."""
    import zipfile
    with zipfile.ZipFile(p) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(p.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    p.write_bytes(bytes(raw))
    return info.filename


def _zip_bomb(p: Path) -> str:
    """A valid checkpoint plus one deflated member of 64 MiB of zeros (64 KiB on disk)."""
    import zipfile
    p.write_bytes(DIGITS.read_bytes())
    with zipfile.ZipFile(p, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("digits/data/999", bytes(64 << 20))
    return "digits/data/999"


ARCHIVE_CASES = {
    "crc_bit_flip": (lambda p: (p.write_bytes(DIGITS.read_bytes()), _flip_bit_in_tensor(p))[1], "CRC"),
    "zip_bomb": (_zip_bomb, "uncompressed"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_damaged_or_hostile_archive(case, work, capsys, monkeypatch):
    """Checked on the zip archive before torch.load: the members' CRC-32 and declared sizes."""
    import mst_lava.resources
    p = work / f"{case}.pt"
    member = ARCHIVE_CASES[case][0](p)
    assert p.stat().st_size < 2 * DIGITS.stat().st_size
    if case == "zip_bomb":      # 64 MiB stands for gigabytes: the memory budget is cut to 32 MiB
        monkeypatch.setattr(mst_lava.resources, "available_memory", lambda: 32 << 20)
    for _label, entry, argv in _commands(p, work):
        refused(capsys, work, argv, str(p), member, ARCHIVE_CASES[case][1], entry=entry)


def test_malicious_pickle_message_does_not_invite_the_unsafe_path(work, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))
    p = work / "evil.pt"
    torch.save({"format": "mst_lava.checkpoint", "x": Evil()}, p)
    line = refused(capsys, work, ["snn-eval", p], "refused")
    assert "weights_only" not in line and not (work / "PWNED").exists()


def test_model_too_large_for_memory_is_refused_before_building(work, capsys, monkeypatch):
    import mst_lava.resources
    monkeypatch.setattr(mst_lava.resources, "available_memory", lambda: 100_000)
    refused(capsys, work, ["snn-eval", DIGITS, "--report", work / "r"], "memory", "available")


# ----------------------------------------------------------------------------------------
# 3. arguments

BAD_ARGS = [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-3"], "--epochs"),
    (["train", "--epochs", "ten"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "-1e-3"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--label-smoothing", "1"], "--label-smoothing"),
    (["train", "--label-smoothing", "-0.1"], "--label-smoothing"),
    (["train", "--warmup-epochs", "-1"], "--warmup-epochs"),
    (["train", "--workers", "-1"], "--workers"),
    (["train", "--limit-train", "0"], "--limit-train"),
    (["train", "--frames", "0"], "--frames"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--seed", str(2 ** 31)], "--seed"),
    (["train", "--seed", str(2 ** 70)], "--seed"),
    (["train", "--device", "gpu"], "--device"),
    (["train", "--device", "cuda:x"], "--device"),
    (["train", "--mask", "Q@abc=0.5"], "Q@abc"),
    (["train", "--mask", "Q@-1=0.5"], "Q@-1"),
    (["train", "--mask", "Q@1@2=0.5"], "Q@1@2"),
    (["train", "--mask", "bogus=0.5"], "bogus"),
    (["train", "--mask", "Q=1.5"], "Q"),
    (["train", "--mask", "Q=nan"], "Q"),
    (["train", "--mask", "Q"], "SITE=RATIO"),
    (["train", "--resume", "--init", "{ckpt}", "--out", "x.pt"], "--resume"),
    (["snn-eval", "{ckpt}", "--T", "0"], "--T"),
    (["snn-eval", "{ckpt}", "--T", "8,x"], "--T"),
    (["snn-eval", "{ckpt}", "--T", ","], "--T"),
    (["snn-eval", "{ckpt}", "--seeds", "0"], "--seeds"),
    (["snn-eval", "{ckpt}", "--n", "0"], "--n"),
    (["snn-eval", "{ckpt}", "--batch-size", "0"], "--batch-size"),
    (["snn-eval", "{ckpt}", "--t-chunk", "0"], "--t-chunk"),
    (["snn-eval", "{ckpt}", "--threads", "0"], "--threads"),
    (["snn-eval", "{ckpt}", "--device", "tpu"], "--device"),
    (["snn-eval", "{ckpt}", "--mask", "Q@99=0.5"], "Q@99"),
    (["snn-eval", "{ckpt}", "--mask", "act=0.5"], "act"),
    (["snn-eval", "{ckpt}", "--pepper", "2"], "pepper"),
    (["snn-eval", "{ckpt}", "--pepper", ""], "--pepper"),
    (["snn-eval", "{ckpt}", "--pepper", " , "], "--pepper"),
    (["snn-eval", "{ckpt}", "--mask", ""], "--mask"),
    (["snn-eval", "{ckpt}", "--mask", "Q=0.5", "--mask", ","], "--mask"),
    (["train", "--mask", ""], "--mask"),
    (["run", "{net}", "--T", "0"], "--T"),
    (["run", "{net}", "--n", "-1"], "--n"),
    (["run", "{net}", "--offset", "-1"], "--offset"),
    (["run", "{net}", "--batch-size", "0"], "--batch-size"),
    (["run", "{net}", "--seed", "-5"], "--seed"),
    (["run", "{net}", "--seed", str(2 ** 40)], "--seed"),
    (["run", "{net}", "--device", "tpu", "--backend", "torch"], "--device"),
    (["run", "{net}", "--threads", "0"], "--threads"),
    (["verify", "{ckpt}", "{net}", "--T", "0"], "--T"),
    (["verify", "{ckpt}", "{net}", "--n", "0"], "--n"),
    (["verify", "{ckpt}", "{net}", "--seed", str(2 ** 40)], "--seed"),
    (["rsm-search", "{ckpt}", "--T", "0"], "--T"),
    (["rsm-search", "{ckpt}", "--seeds", "0"], "--seeds"),
    (["rsm-search", "{ckpt}", "--final-seeds", "0"], "--final-seeds"),
    (["rsm-search", "{ckpt}", "--search-n", "0"], "--search-n"),
    (["rsm-search", "{ckpt}", "--batch-size", "0"], "--batch-size"),
    (["rsm-search", "{ckpt}", "--levels", "0.5,x"], "--levels"),
    (["rsm-search", "{ckpt}", "--levels", "1.5"], "--levels"),
    (["rsm-search", "{ckpt}", "--levels", ","], "--levels"),
    (["rsm-search", "{ckpt}", "--budget", "nan"], "--budget"),
    (["rsm-search", "{ckpt}", "--device", "abc"], "--device"),
    (["rsm-search", "{ckpt}", "--sites", "Q,bogus"], "bogus"),
    (["rsm-search", "{ckpt}", "--sites", "act"], "act"),
    (["rsm-search", "{ckpt}", "--uniform", "Q@99=0.5"], "Q@99"),
    (["demo", "--T", "0"], "--T"),
    (["demo", "--n", "-1"], "--n"),
    # issue 31 item 12: huge sizes and counts, refused when parsed (they grew to 12 GB, overflowed, MemoryError)
    (["snn-eval", "{ckpt}", "--T", "999999999999"], "--T"),
    (["snn-eval", "{ckpt}", "--T", "8,100001"], "--T"),
    (["snn-eval", "{ckpt}", "--seeds", "10001"], "--seeds"),
    (["snn-eval", "{ckpt}", "--n", str(10 ** 7 + 1)], "--n"),
    (["snn-eval", "{ckpt}", "--batch-size", str(10 ** 6 + 1)], "--batch-size"),
    (["snn-eval", "{ckpt}", "--t-chunk", "999999999999"], "--t-chunk"),
    (["snn-eval", "{ckpt}", "--threads", "999999999999"], "--threads"),
    (["train", "--threads", "999999999999"], "--threads"),
    (["train", "--threads", "4097"], "--threads"),
    (["train", "--epochs", "999999999999"], "--epochs"),
    (["train", "--batch-size", "999999999999"], "--batch-size"),
    (["train", "--workers", "999999999999"], "--workers"),
    (["train", "--frames", "999999999999"], "--frames"),
    (["train", "--limit-train", "999999999999"], "--limit-train"),
    (["train", "--warmup-epochs", "999999999999"], "--warmup-epochs"),
    (["train", "--eval-from", "999999999999"], "--eval-from"),
    (["train", "--qcfs-levels", "999999999999"], "--qcfs-levels"),
    (["rsm-search", "{ckpt}", "--threads", "999999999999"], "--threads"),
    (["rsm-search", "{ckpt}", "--T", "999999999999"], "--T"),
    (["rsm-search", "{ckpt}", "--seeds", "999999999999"], "--seeds"),
    (["rsm-search", "{ckpt}", "--final-seeds", "999999999999"], "--final-seeds"),
    (["rsm-search", "{ckpt}", "--search-n", "999999999999"], "--search-n"),
    (["rsm-search", "{ckpt}", "--n", "999999999999"], "--n"),
    (["rsm-search", "{ckpt}", "--batch-size", "999999999999"], "--batch-size"),
    (["run", "{net}", "--threads", "999999999999"], "--threads"),
    (["run", "{net}", "--T", "999999999999"], "--T"),
    (["run", "{net}", "--T", "100001"], "--T"),
    (["run", "{net}", "--n", "999999999999"], "--n"),
    (["run", "{net}", "--offset", "999999999999"], "--offset"),
    (["run", "{net}", "--batch-size", "999999999999"], "--batch-size"),
    (["run", "{net}", "--frames", "999999999999"], "--frames"),
    (["verify", "{ckpt}", "{net}", "--threads", "999999999999"], "--threads"),
    (["verify", "{ckpt}", "{net}", "--T", "999999999999"], "--T"),
    (["verify", "{ckpt}", "{net}", "--n", "999999999999"], "--n"),
    (["demo", "--T", "999999999999"], "--T"),
    (["demo", "--n", "999999999999"], "--n"),
]

BAD_EXPORT_ARGS = [
    (["{ckpt}", "-o", "o.net", "--seed", "-1"], "--seed"),
    (["{ckpt}", "-o", "o.net", "--seed", str(2 ** 40)], "--seed"),
    (["{ckpt}", "-o", "o.net", "--mask", "Q@abc=0.5"], "Q@abc"),
    (["{ckpt}", "-o", "o.net", "--mask", "Q@99=0.5"], "Q@99"),
    (["{ckpt}", "-o", "o.net", "--mask", "Q@-1=0.5"], "Q@-1"),
    (["{ckpt}", "-o", "o.net", "--mask", "act=0.5"], "act"),
    (["{ckpt}", "-o", ""], "-o"),
    (["{ckpt}", "-o", "o.net", "--precision", "double"], "--precision"),
    (["{ckpt}", "-o", "o.net", "--mask", ""], "--mask"),
    (["{ckpt}", "-o", "o.net", "--mask", "Q=0.5", " "], "--mask"),
    (["{ckpt}", "-o", "o.net", "--burst", "999999999999"], "--burst"),
    (["{ckpt}", "-o", "o.net", "--payload-bits", "999999999999"], "--payload-bits"),
]


def _fill(argv, work):
    return [a.format(ckpt=DIGITS, net=work / "given.net") for a in argv]


@pytest.mark.parametrize("argv,needle", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments(argv, needle, work, capsys):
    (work / "given.net").write_bytes(b"")       # never opened: every case is refused before
    refused(capsys, work, _fill(argv, work), needle)


@pytest.mark.parametrize("argv,needle", BAD_EXPORT_ARGS, ids=[" ".join(a) for a, _ in BAD_EXPORT_ARGS])
def test_bad_export_arguments(argv, needle, work, capsys):
    refused(capsys, work, _fill(argv, work), needle, entry=export_main)


def test_argument_types_accept_good_values():
    assert argtypes.positive_int("7") == 7 and argtypes.non_negative_int("0") == 0
    assert argtypes.seed(str(argtypes.SEED_MAX)) == argtypes.SEED_MAX
    assert argtypes.fraction("0.5") == 0.5 and argtypes.positive_float("1e-3") == 1e-3
    assert argtypes.fraction_list("0.75,0.25,0.25") == [0.25, 0.75]
    assert argtypes.device_name("cuda:1") == "cuda:1" and argtypes.device_or_auto("auto") == "auto"
    # the upper bounds of sizes and counts are accepted themselves
    assert argtypes.time_steps(str(argtypes.MAX_T)) == argtypes.MAX_T
    assert argtypes.thread_count(str(argtypes.MAX_THREADS)) == argtypes.MAX_THREADS
    assert argtypes.seed_count(str(argtypes.MAX_SEEDS)) == argtypes.MAX_SEEDS
    assert argtypes.sample_count(str(argtypes.MAX_SAMPLES)) == argtypes.MAX_SAMPLES
    assert argtypes.sample_count_or_all("0") == 0 and argtypes.batch_size(str(argtypes.MAX_BATCH)) == argtypes.MAX_BATCH
    assert argtypes.time_steps_text("8,16,100000") == "8,16,100000"


@pytest.fixture(scope="module")
def exported_net(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("net") / "digits.net"
    assert export_main([str(DIGITS), "-o", str(p)]) == 0
    return p


def test_huge_T_on_the_torch_backend_is_refused_before_allocating(exported_net, work, capsys):
    refused(capsys, work, ["run", exported_net, "--backend", "torch", "--T", "100000000", "--n", "2"],
            "--T 100000000", "memory")


def test_torch_backend_batches_shrink_to_fit(monkeypatch):
    from types import SimpleNamespace

    import mst_lava.resources
    from mst_lava.run.torch_backend import TORCH_BYTES_PER_NEURON_STEP, torch_batch_that_fits
    graph = SimpleNamespace(layers=[SimpleNamespace(shape=(32, 8, 8))])
    per_sample = TORCH_BYTES_PER_NEURON_STEP * 2048 * 1000
    monkeypatch.setattr(mst_lava.resources, "available_memory", lambda: int(per_sample * 10 / 0.7) + 1)
    assert torch_batch_that_fits(graph, 1000, 64, "cpu") == 10
    assert torch_batch_that_fits(graph, 1000, 4, "cpu") == 4
    with pytest.raises(MSTError, match="--T 20000"):
        torch_batch_that_fits(graph, 20_000, 1, "cpu")


# ----------------------------------------------------------------------------------------
# 4 and 5. output paths

def _out_cases(work: Path):
    """(name, path, needle as an output file, needle as a report folder): outputs that cannot be written."""
    (work / "a_dir").mkdir()
    (work / "a_file").write_text("x")
    os.mkfifo(work / "a_fifo")
    (work / "target.txt").write_text("keep me")
    os.symlink(work / "target.txt", work / "a_link")
    cases = [("directory", work / "a_dir", "directory", None),
             ("regular_file", work / "a_file", None, "not a folder"),
             ("under_a_file", work / "a_file" / "x" / "out", "a_file", "a_file"),
             ("fifo", work / "a_fifo", "regular file", "not a folder"),
             ("symlink", work / "a_link", "symbolic link", "not a folder"),
             ("dev_null", Path("/dev/null"), "regular file", "not a folder"),
             ("unwritable", Path("/proc/mst_hostile_test/out"), "/proc", "/proc")]
    if os.geteuid() != 0:      # root writes into read-only-mode folders: /proc stands for that case above
        ro = work / "read_only"
        ro.mkdir()
        ro.chmod(0o500)
        cases.append(("read_only", ro / "out", "read_only", "read_only"))
    return cases


def _out_commands(path: Path):
    return [("mst-export -o", export_main, [DIGITS, "-o", path]),
            ("train --out", main, ["train", "--out", path, "--epochs", "1"]),
            ("rsm-search --out", main, ["rsm-search", DIGITS, "--out", path])]


def _dir_commands(path: Path, work: Path):
    return [("snn-eval --report", main, ["snn-eval", DIGITS, "--report", path]),
            ("run --report", main, ["run", work / "never_read.net", "--report", path]),
            ("demo --report", main, ["demo", "--report", path])]


def test_output_files_and_report_folders_that_cannot_be_written(work, capsys):
    for _name, path, file_needle, dir_needle in _out_cases(work):
        if file_needle:
            for _label, entry, argv in _out_commands(path):
                refused(capsys, work, argv, file_needle, entry=entry)
        if dir_needle:
            for _label, entry, argv in _dir_commands(path, work):
                refused(capsys, work, argv, dir_needle, entry=entry)
    assert (work / "target.txt").read_text() == "keep me" and (work / "a_link").is_symlink()
    assert (work / "a_fifo").is_fifo() and Path("/dev/null").is_char_device()


def test_output_that_is_the_input(work, capsys):
    ckpt = work / "same.pt"
    ckpt.write_bytes(DIGITS.read_bytes())
    (work / "sub").mkdir()
    other_spelling = work / "sub" / ".." / "same.pt"
    for argv, entry in (([ckpt, "-o", ckpt], export_main), ([ckpt, "-o", other_spelling], export_main),
                        (["rsm-search", ckpt, "--out", ckpt], main),
                        (["train", "--init", ckpt, "--out", other_spelling], main)):
        refused(capsys, work, argv, "input", entry=entry)
    assert ckpt.read_bytes() == DIGITS.read_bytes()


def test_inspect_json_that_is_the_network(exported_net, work, capsys):
    net = work / "d.net"
    net.write_bytes(exported_net.read_bytes())
    (work / "sub").mkdir()
    os.symlink(net, work / "link.net")
    os.link(net, work / "hard.net")
    for out, needle in ((net, "input"), (work / "sub" / ".." / "d.net", "input"), (work / "link.net", "symbolic"),
                        (work / "hard.net", "input")):
        refused(capsys, work, ["inspect", net, "--json", out], needle)
    assert net.read_bytes() == exported_net.read_bytes()


def test_report_folder_holding_an_input(exported_net, work, capsys):
    """An input inside --report DIR under a name the command writes there: refused before any work,
    whatever the spelling (the file itself, a hard link, a symlink to it)."""
    rep = work / "rep"
    rep.mkdir()
    ckpt, net = work / "m.pt", work / "m.net"
    ckpt.write_bytes(DIGITS.read_bytes())
    net.write_bytes(exported_net.read_bytes())
    cases = []
    for name in ("report.json", "summary.md", "firing_rate.png", "progress.json"):
        cases.append((["snn-eval", rep / name, "--report", rep], rep / name, DIGITS))
    os.link(ckpt, rep / "energy_breakdown.png")
    cases.append((["snn-eval", ckpt, "--report", rep], ckpt, DIGITS))
    cases.append((["snn-eval", ckpt, "--report", work / "sub" / ".." / "rep"], ckpt, DIGITS))
    for backend in ("lava-cpu", "torch"):
        for name in ("report.json", "summary.md"):
            cases.append((["run", rep / name, "--report", rep, "--backend", backend], rep / name, exported_net))
        cases.append((["run", net, "--report", rep, "--backend", backend, "--n", "1"], net, None))
    (work / "sub").mkdir()
    for argv, given, original in cases:
        if original is not None:
            given.write_bytes(original.read_bytes())
        if argv[0] == "run" and given == net:
            os.unlink(rep / "energy_breakdown.png")
            os.link(net, rep / "energy_breakdown.png")
        refused(capsys, work, argv, "input", "rep")
        assert given.read_bytes() == (original or exported_net).read_bytes()
        if original is not None and given.parent == rep:
            given.unlink()
    os.unlink(rep / "energy_breakdown.png")
    os.symlink(ckpt, rep / "report.json")       # a symlink at an output name: refused as well, not written through
    refused(capsys, work, ["snn-eval", ckpt, "--report", rep], "symbolic link", "report.json")
    assert ckpt.read_bytes() == DIGITS.read_bytes()


def test_stale_temp_files_of_a_killed_run_are_removed(work, capsys):
    out = work / "o.net"
    dead = work / ".o.net.99999999.abcdefgh.tmp"             # pid beyond pid_max: its writer is gone
    live = work / f".o.net.{os.getppid()}.abcdefgh.tmp"      # a running writer's: kept
    old = work / ".o.net.abcdefgh.tmp"                       # pid-less (older versions), untouched for an hour
    fresh = work / ".o.net.ijklmnop.tmp"                     # pid-less and recent: kept
    other = work / ".x.net.99999999.abcdefgh.tmp"            # another output's: kept
    for p in (dead, live, old, fresh, other):
        p.write_bytes(b"half-written")
    os.utime(old, (os.path.getmtime(old) - 3600,) * 2)
    before = _tree(work) - {dead.name, old.name}
    # a run that is refused for another reason after the output check still cleans up
    refused(capsys, work, [DIGITS, "-o", out, "--mask", "Q@99=0.5"], "Q@99", entry=export_main, before=before)
    assert not dead.exists() and not old.exists() and live.exists() and fresh.exists() and other.exists()
    dead.write_bytes(b"again")
    atomic_write(out, lambda tmp: Path(tmp).write_text("ok"))
    assert out.read_text() == "ok" and not dead.exists()
    assert remove_stale_temps(out) == []


def test_failed_writes_leave_no_temp_file(work):
    import errno
    out = work / "o.json"

    def full_disk(tmp):
        Path(tmp).write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(MSTError, match=r"o\.json.*disk is full"):
        atomic_write(out, full_disk)

    def interrupted(tmp):
        Path(tmp).write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(out, interrupted)
    assert _tree(work) == set()
    assert check_output_file(out) == out and _tree(work) == set()   # the write probe leaves nothing


def test_full_disk_while_saving_a_checkpoint(base_ckpt, work, monkeypatch):
    """A checkpoint's bytes are written with plain file I/O: a full disk (here /dev/full, whose writes fail
    with ENOSPC) is reported as such, not as torch's zip-writer error; nothing is left behind."""
    import builtins

    import mst_lava.checkpoint
    from mst_lava.checkpoint import model_from_checkpoint, save_checkpoint
    model = model_from_checkpoint(base_ckpt)
    real_open = builtins.open
    monkeypatch.setattr(mst_lava.checkpoint, "open",
                        lambda f, mode="r", *a, **k: real_open("/dev/full", mode) if "w" in mode else
                        real_open(f, mode, *a, **k), raising=False)
    with pytest.raises(MSTError, match=r"m\.pt.*disk is full") as e:
        save_checkpoint(work / "m.pt", model, dataset="digits")
    assert "\n" not in str(e.value) and "inline_container" not in str(e.value)
    assert _tree(work) == set()
    monkeypatch.undo()
    save_checkpoint(work / "m.pt", model, dataset="digits")
    from mst_lava.checkpoint import read_checkpoint
    saved = read_checkpoint(work / "m.pt")["state_dict"]
    assert torch.equal(saved["head.weight"], base_ckpt["state_dict"]["head.weight"])


# ----------------------------------------------------------------------------------------
# 6. dataset files

def _idx(path: Path, magic: int, dims, payload: bytes, gz: bool = True):
    data = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload
    path.write_bytes(gzip.compress(data) if gz else data)


def _fmnist(root: Path, n_images=4, labels=(0, 1, 2, 3), label_bytes=None, image_magic=2051):
    root.mkdir(exist_ok=True)
    for pre in ("train", "t10k"):
        _idx(root / f"{pre}-images-idx3-ubyte.gz", image_magic, (n_images, 28, 28), bytes(n_images * 784))
        if label_bytes is not None:
            (root / f"{pre}-labels-idx1-ubyte.gz").write_bytes(label_bytes)
        else:
            _idx(root / f"{pre}-labels-idx1-ubyte.gz", 2049, (len(labels),), bytes(np.asarray(labels, np.uint8)))


IDX_CASES = {
    "zero_rows": (dict(n_images=0, labels=()), "zero images"),
    "count_mismatch": (dict(labels=(0, 1, 2)), "3 labels"),
    "label_200": (dict(labels=(0, 1, 200, 3)), "label 200"),
    "label_10": (dict(labels=(0, 10, 2, 3)), "label 10"),
    "labels_as_images": (dict(image_magic=2049), "images file"),
    "not_gzip": (dict(label_bytes=b"this is not gzip data"), "not a readable idx file"),
    "truncated_gzip": (dict(label_bytes=gzip.compress(struct.pack(">II", 2049, 4) + b"\x01" * 4)[:-12]),
                       "not a readable idx file"),
    "short_header": (dict(label_bytes=gzip.compress(b"\x00\x00\x08")), "too short"),
    "payload_mismatch": (dict(label_bytes=gzip.compress(struct.pack(">II", 2049, 4) + b"\x01" * 9)), "more than"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_bad_fmnist_files(case, work, capsys):
    data = work / "fm"
    kw, needle = IDX_CASES[case]
    _fmnist(data, **kw)
    file_named = "idx3" if case in ("zero_rows", "labels_as_images") else "idx1"
    for argv in (["snn-eval", DIGITS, "--dataset", "fmnist", "--data", data, "--report", work / "rep"],
                 ["train", "--dataset", "fmnist", "--preset", "digits", "--data", data, "--out", work / "m.pt",
                  "--epochs", "1"]):
        refused(capsys, work, argv, needle, file_named)


def test_fifo_inputs_are_refused_not_opened(exported_net, work, capsys):
    """Named pipes given as a checkpoint, a network or a dataset file: refused by their type before any
    open() (which would block until a writer comes)."""
    import signal
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("a FIFO input was opened and blocked"))
    signal.alarm(120)
    try:
        os.mkfifo(work / "ck.pt")
        for _label, entry, argv in _commands(work / "ck.pt", work):
            refused(capsys, work, argv, "ck.pt", "not a regular file", entry=entry)
        os.mkfifo(work / "n.net")
        for argv in (["run", work / "n.net", "--backend", "torch"], ["inspect", work / "n.net"],
                     ["verify", DIGITS, work / "n.net"]):
            refused(capsys, work, argv, "n.net", "not a regular file")
        data = work / "fm"
        _fmnist(data)
        (data / "t10k-labels-idx1-ubyte.gz").unlink()
        os.mkfifo(data / "t10k-labels-idx1-ubyte.gz")
        refused(capsys, work, ["snn-eval", DIGITS, "--dataset", "fmnist", "--data", data, "--report", work / "r"],
                "t10k-labels-idx1-ubyte.gz", "FIFO")
        sub = work / "cifar-10-batches-py"
        sub.mkdir()
        os.mkfifo(sub / "test_batch")
        refused(capsys, work, ["snn-eval", DIGITS, "--dataset", "cifar10", "--data", work, "--report", work / "r"],
                "test_batch", "FIFO")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_fifo_event_files_are_refused_not_opened(work):
    from mst_lava.data import event_io
    os.mkfifo(work / "e.aedat")
    for read in (event_io.read_aedat_header, event_io.read_aedat2, event_io.read_aedat31, event_io.read_aedat4,
                 event_io.read_prophesee_dat, event_io.read_asl_mat):
        with pytest.raises(MSTError, match="FIFO"):
            read(work / "e.aedat")


def test_good_fmnist_files_still_read(work):
    from mst_lava.data.static import fmnist
    _fmnist(work / "fm", labels=(9, 0, 3, 1))
    ds = fmnist(work / "fm", "test", 28, 1, False)
    assert len(ds) == 4 and ds[0][1] == 9


def test_cifar_labels_out_of_range(work, capsys):
    sub = work / "cifar-10-batches-py"
    sub.mkdir()
    batch = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 12]}
    (sub / "test_batch").write_bytes(pickle.dumps(batch))
    refused(capsys, work, ["snn-eval", DIGITS, "--dataset", "cifar10", "--data", work, "--report", work / "r"],
            "label 12", "test_batch")
    (sub / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}))
    refused(capsys, work, ["snn-eval", DIGITS, "--dataset", "cifar10", "--data", work, "--report", work / "r"],
            "2 labels")


def test_shipped_checkpoints_and_optional_config_fields_still_load(base_ckpt, work):
    """Every shipped checkpoint passes every check; lam_init and preset (no effect on the computation of a
    trained model) may be absent."""
    from mst_lava.checkpoint import read_checkpoint
    for p in sorted((ROOT / "export").glob("*.pt")):
        read_checkpoint(p)
    c = dict(base_ckpt, config={k: v for k, v in base_ckpt["config"].items() if k not in ("lam_init", "preset")})
    torch.save(c, work / "lean.pt")
    read_checkpoint(work / "lean.pt")


@pytest.mark.parametrize("field", ["img_size", "width", "hidden", "L"])
def test_baseline_config_missing_a_field(field, work, capsys):
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.model.baselines import build_baseline
    p = work / "r.pt"
    save_checkpoint(p, build_baseline("vgg16", "digits"), arch="vgg16", dataset="digits")
    c = torch.load(p, weights_only=True)
    del c["config"][field]
    torch.save(c, p)
    refused(capsys, work, ["snn-eval", p, "--report", work / "rep"], str(p), f"lacks {field!r}")


@pytest.mark.parametrize("field,value", [("width", "16"), ("width", 10 ** 9), ("hidden", -1), ("img_size", 8.5),
                                         ("arch", "vgg99"), ("L", 0)])
def test_bad_baseline_config(field, value, work, capsys):
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.model.baselines import build_baseline
    p = work / "r.pt"
    save_checkpoint(p, build_baseline("resnet18", "digits"), arch="resnet18", dataset="digits")
    c = torch.load(p, weights_only=True)
    c["config"][field] = value
    torch.save(c, p)
    refused(capsys, work, ["snn-eval", p, "--report", work / "rep"], str(p), field if field != "arch" else "vgg99")


# ----------------------------------------------------------------------------------------
# issue 31: nothing lost, nothing silently wrong

def _net_copy(src: Path, dst: Path, edit) -> Path:
    import h5py
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _external_link_to(target: Path):
    import h5py

    def edit(f):
        del f["layer/1/bias"]
        f["layer/1/bias"] = h5py.ExternalLink(str(target), "/bias")
    return edit


def _soft_link(f):
    import h5py
    del f["layer/1/bias"]
    f["layer/1/bias"] = h5py.SoftLink("/layer/2/bias")


def _external_storage(target: Path):
    def edit(f):
        target.write_bytes(bytes(64))
        del f["layer/1/bias"]
        f.create_dataset("layer/1/bias", shape=(8,), dtype="f8", external=[(str(target), 0, 64)])
    return edit


LINK_CASES = [  # (name, edit of a copy of the exported file given the work folder, needles)
    ("external_link_to_fifo", lambda w: _external_link_to(w / "pipe"), ("layer/1/bias", "external link")),
    ("external_link_to_missing_file", lambda w: _external_link_to(w / "nothing.h5"),
     ("layer/1/bias", "external link")),
    ("soft_link", lambda w: _soft_link, ("layer/1/bias", "soft link to /layer/2/bias")),
    ("external_storage", lambda w: _external_storage(w / "raw.bin"), ("layer/1/bias", "other files")),
]


@pytest.mark.parametrize("name,edit,needles", LINK_CASES, ids=[c[0] for c in LINK_CASES])
def test_links_that_leave_the_file_are_refused(name, edit, needles, exported_net, work, capsys):
    """An external link to a named pipe blocked inspect, run and verify for ever: every link but a hard one
    (and data kept in other files) is refused before any dataset is read, naming the link."""
    import signal
    os.mkfifo(work / "pipe")
    net = _net_copy(exported_net, work / "linked.net", edit(work))
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("a link out of the file was followed"))
    signal.alarm(120)
    try:
        for argv in (["inspect", net], ["run", net, "--backend", "torch", "--n", "1"],
                     ["run", net, "--n", "1"], ["verify", DIGITS, net, "--n", "1"]):
            refused(capsys, work, argv, "linked.net", *needles)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _cifar100(root: Path, labels=(0, 1, 2)):
    sub = root / "cifar-100-python"
    sub.mkdir(parents=True)
    (sub / "test").write_bytes(pickle.dumps({b"data": np.zeros((len(labels), 3072), np.uint8),
                                             b"fine_labels": list(labels)}))


DATASET_MISMATCH_CASES = [  # (argv after the network, needles): datasets that do not fit digits (1x8x8, 10 classes)
    (["--dataset", "fmnist", "--data", "{fm}"], ("dataset fmnist has 28x28 images with 1 channel", "8x8", "--resize")),
    (["--dataset", "cifar10", "--data", "{work}"], ("dataset cifar10 has 32x32 images with 3 channels", "--resize")),
    (["--dataset", "imagenet", "--data", "{work}"], ("dataset imagenet has 224x224", "--resize")),
    (["--dataset", "cifar100", "--data", "{work}", "--resize"], ("dataset cifar100 has 100 classes", "has 10")),
]


@pytest.mark.parametrize("args,needles", DATASET_MISMATCH_CASES, ids=[c[0][1] + (" --resize" if "--resize" in c[0]
                                                                                     else "") for c in
                                                                       DATASET_MISMATCH_CASES])
def test_dataset_that_does_not_fit_the_network(args, needles, exported_net, work, capsys):
    """`mst run digits.net --dataset fmnist` shrank 28x28 images to 8x8 and reported 0 % (verify: PASS): a
    dataset other than the file's whose images or classes differ from the network's is refused, on both
    backends and in verify; --resize allows the resize, never other classes."""
    _fmnist(work / "fm")
    _cifar100(work)
    args = [a.format(fm=work / "fm", work=work) for a in args]
    for argv in (["run", exported_net, "--backend", "torch"], ["run", exported_net],
                 ["verify", DIGITS, exported_net]):
        refused(capsys, work, argv + args + ["--n", "1"], *needles)


def test_resize_runs_a_dataset_of_another_size(exported_net, work, capsys):
    _fmnist(work / "fm")
    rc = main(["run", str(exported_net), "--backend", "torch", "--dataset", "fmnist", "--data", str(work / "fm"),
               "--resize", "--n", "2", "--T", "2", "--no-progress"])
    assert rc == 0 and "accuracy" in capsys.readouterr().out
    from mst_lava.run.commands import register  # noqa: F401  (the option is documented in --help)
    assert main(["run", "--help"]) == 0 and "--resize" in capsys.readouterr().out


def _set_attr(key, value):
    return lambda f: f.attrs.__setitem__(key, value)


IGNORED_FIELD_CASES = [  # (name, edit of the exported digits file, needles): fields that were read and ignored
    ("membrane_unit_nan", lambda f: f["layer/1/mst/fixed/membrane_unit"].write_direct(np.array(np.nan)),
     ("layer/1", "membrane_unit is nan")),
    ("max_current_nan", lambda f: f["layer/1/mst/fixed/max_current"].write_direct(np.array(np.nan)),
     ("layer/1", "max_current is nan")),
    ("mask_unknown_site", _set_attr("mask", '{"bogus": 0.5}'), ("attribute mask names site 'bogus'",)),
    ("mask_no_rsm_layers", _set_attr("mask", '{"Q": 0.75}'), ("no RSM ratios",)),
    ("site_deleted", lambda f: f.__delitem__("layer/1/mst/site"), ("layer/1", "site is missing")),
]


@pytest.mark.parametrize("name,edit,needles", IGNORED_FIELD_CASES, ids=[c[0] for c in IGNORED_FIELD_CASES])
def test_fields_read_and_ignored_are_refused(name, edit, needles, work, capsys):
    """NaN in an informative fixed-point unit, a mask that names no site of the file or that no layer applies
    (it was echoed as the run's mask), a neuron layer without its site (it dropped out of the energy report)."""
    from mst_lava.export import export_checkpoint
    src = work.parent / "fixed_src.net"
    if not src.exists():
        export_checkpoint(DIGITS, src, precision="fixed")
    net = _net_copy(src, work / "edited.net", edit)
    for argv in (["inspect", net], ["run", net, "--backend", "torch", "--n", "1"], ["run", net, "--n", "1"]):
        refused(capsys, work, argv, "edited.net", *needles)


def _full_disk_on_second_file(monkeypatch):
    """Report files are written through ``report.text_writer``: the second one hits a full disk mid-write."""
    import errno

    import mst_lava.report
    real, made = mst_lava.report.text_writer, []

    def text_writer(text):
        made.append(text)
        if len(made) != 2:
            return real(text)

        def write(tmp):
            Path(tmp).write_text(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write
    monkeypatch.setattr(mst_lava.report, "text_writer", text_writer)
    return made


def test_full_disk_while_writing_a_run_report_leaves_no_half_report(exported_net, work, capsys, monkeypatch):
    """`mst run --report`: report.json without summary.md was left behind; now all files or none."""
    made = _full_disk_on_second_file(monkeypatch)
    refused(capsys, work, ["run", exported_net, "--backend", "torch", "--n", "2", "--T", "2", "--no-progress",
                           "--report", work / "rep"], "summary.md", "disk is full")
    assert len(made) == 2 and not (work / "rep").exists()
    (work / "rep").mkdir()
    (work / "rep" / "report.json").write_text("the previous run's")      # an earlier report stays whole
    made.clear()
    refused(capsys, work, ["run", exported_net, "--backend", "torch", "--n", "2", "--T", "2", "--no-progress",
                           "--report", work / "rep"], "summary.md", "disk is full")
    assert (work / "rep" / "report.json").read_text() == "the previous run's"
    monkeypatch.undo()
    assert main(["run", str(exported_net), "--backend", "torch", "--n", "2", "--T", "2", "--no-progress",
                 "--report", str(work / "rep")]) == 0
    assert {"report.json", "summary.md"} <= set(os.listdir(work / "rep"))


def test_full_disk_while_writing_an_snn_eval_report_leaves_no_half_report(work, capsys, monkeypatch):
    made = _full_disk_on_second_file(monkeypatch)
    rep = work / "rep"
    argv = ["snn-eval", str(DIGITS), "--n", "4", "--T", "2", "--seeds", "1", "--batch-size", "4", "--no-plots",
            "--report", str(rep)]
    capsys.readouterr()
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "snn-eval" not in ln]
    assert len(made) == 2 and len(err) == 1 and "summary.md" in err[0] and "disk is full" in err[0]
    # nothing of the report; the progress of the evaluation stays for --resume
    assert sorted(os.listdir(rep)) == ["progress.json"]
