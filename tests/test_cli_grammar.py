"""One CLI grammar (issue 13, item 5): `--dataset NAME` and `--data DIR` mean the same in every command, and one
`--mask` is one RSM configuration everywhere (a command that uses one refuses a second `--mask`); every option
has help; the run/verify split keeps each backend's imports to itself."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mst_lava import argtypes as at
from mst_lava.cli import build_parser, export_main, main
from mst_lava.errors import MSTError
from mst_lava.export.cli import build_parser as export_parser

ROOT = Path(__file__).resolve().parents[1]
DIGITS_NET = ROOT / "export" / "digits.net"
DIGITS_PT = ROOT / "export" / "digits.pt"
DATA_COMMANDS = ("train", "snn-eval", "rsm-search", "run", "verify")
POSITIONALS = {"train": [], "snn-eval": ["c.pt"], "rsm-search": ["c.pt"], "run": ["n.net"], "verify": ["c.pt", "n.net"]}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return {**sub.choices, "mst-export": export_parser()}


def _parse(command: str, *argv: str):
    if command == "mst-export":
        return export_parser().parse_args(["c.pt", "-o", "o.net", *argv])
    return build_parser(command).parse_args([command, *POSITIONALS.get(command, []), *argv])


def _one_line_error(capsys, entry, argv) -> str:
    capsys.readouterr()
    assert entry([str(a) for a in argv]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_every_option_of_every_command_has_help():
    missing = [(name, a.option_strings or a.dest) for name, sp in _subparsers().items() for a in sp._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_dataset_is_a_name_and_data_a_folder_in_every_command(command, tmp_path):
    opts = {a.dest: a for a in _subparsers()[command]._actions}
    assert opts["dataset"].metavar == "NAME" and opts["data"].metavar == "DIR"
    assert "folder" in opts["data"].help and "dataset name" in opts["dataset"].help
    args = _parse(command, "--dataset", "fmnist", "--data", str(tmp_path))
    if command in ("run", "verify"):
        at.resolve_dataset_options(args, command, warn=pytest.fail)
    assert (args.dataset, args.data) == ("fmnist", str(tmp_path))


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_unknown_dataset_name_is_refused_while_parsing(command, capsys):
    line = _one_line_error(capsys, main, [command, *POSITIONALS[command], "--dataset", "nosuch"])
    assert "unknown dataset 'nosuch'" in line and "fmnist" in line


@pytest.mark.parametrize("command", ("train", "snn-eval", "rsm-search"))
def test_data_must_be_a_folder_and_a_name_there_says_use_dataset(command, capsys, tmp_path):
    line = _one_line_error(capsys, main, [command, *POSITIONALS[command], "--data", "fmnist"])
    assert "--data" in line and "use --dataset fmnist" in line
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert "is a file" in _one_line_error(capsys, main, [command, *POSITIONALS[command], "--data", f])


def test_run_and_verify_take_the_old_spellings_for_one_release(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    warned = []
    # --data NAME (a known name, not a folder here) is --dataset NAME, with a deprecation message
    args = _parse("run", "--data", "digits")
    at.resolve_dataset_options(args, "run", warn=warned.append)
    assert (args.dataset, args.data) == ("digits", None)
    assert len(warned) == 1 and "deprecated" in warned[0] and "--dataset digits" in warned[0]
    # --data-root DIR is --data DIR, with a deprecation message
    warned.clear()
    args = _parse("verify", "--data", "fmnist", "--data-root", str(tmp_path))
    at.resolve_dataset_options(args, "verify", warn=warned.append)
    assert (args.dataset, args.data) == ("fmnist", str(tmp_path)) and len(warned) == 2
    # a folder that happens to carry a dataset's name is a folder: no guess, no message
    (tmp_path / "digits").mkdir()
    args = _parse("run", "--data", "digits")
    at.resolve_dataset_options(args, "run", warn=pytest.fail)
    assert (args.dataset, args.data) == (None, "digits")


@pytest.mark.parametrize("argv,msg", [
    (["--data", "nosuch"], "'nosuch' is not there"),
    (["--dataset", "fmnist", "--data", "digits"], "--dataset fmnist already names the dataset"),
    (["--data", "{tmp}", "--data-root", "{tmp}"], "give it once"),
])
def test_run_data_options_that_cannot_be_read_are_errors(argv, msg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _parse("run", *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    with pytest.raises(MSTError, match=msg):
        at.resolve_dataset_options(args, "run", warn=lambda m: None)


@pytest.mark.skipif(not DIGITS_NET.exists(), reason="the shipped export/digits.net is absent")
def test_run_with_the_old_data_name_still_runs_and_says_so(tmp_path, capsys):
    argv = ["run", str(DIGITS_NET), "--n", "2", "--T", "2", "--backend", "torch", "--threads", "1", "--no-progress",
            "--report", str(tmp_path / "old")]
    assert main(argv[:2] + ["--data", "digits"] + argv[2:]) == 0
    err = capsys.readouterr().err
    assert "mst run: warning: --data NAME is deprecated" in err and "use --dataset digits" in err
    assert main(argv[:2] + ["--dataset", "digits"] + argv[2:-1] + [str(tmp_path / "new")]) == 0
    assert "deprecated" not in capsys.readouterr().err
    old, new = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("old", "new"))
    assert old["dataset"] == new["dataset"] == "digits" and old["predictions"] == new["predictions"]


# ----------------------------------------------------------------------------------------
# --mask: one occurrence is one configuration, in every command

MASK_COMMANDS = ("train", "snn-eval", "mst-export")


@pytest.mark.parametrize("command", MASK_COMMANDS)
def test_mask_help_states_the_one_rule(command):
    action = next(a for a in _subparsers()[command]._actions if a.dest == "mask")
    assert " ".join(at.MASK_RULE.split()) in " ".join(action.help.split())
    assert ("several configurations" in action.help) == (command == "snn-eval")


@pytest.mark.parametrize("command", MASK_COMMANDS)
def test_spaces_and_commas_are_the_same_configuration(command):
    from mst_lava.model.rsm import parse_mask_spec
    a = _parse(command, "--mask", "Q=0.75", "K=0.75", "A@1=0.5").mask
    b = _parse(command, "--mask", "Q=0.75,K=0.75,A@1=0.5").mask
    if command == "snn-eval":
        assert len(a) == len(b) == 1
        a, b = a[0], b[0]
    assert parse_mask_spec(a) == parse_mask_spec(b) == {"Q": 0.75, "K": 0.75, "A@1": 0.5}


@pytest.mark.parametrize("command", ("train", "mst-export"))
def test_a_second_mask_is_refused_where_one_configuration_is_used(command, capsys):
    entry, argv = (export_main, ["c.pt", "-o", "o.net"]) if command == "mst-export" else (main, ["train"])
    line = _one_line_error(capsys, entry, argv + ["--mask", "Q=0.75", "--mask", "K=0.75"])
    assert "--mask" in line and "given twice" in line and "--mask Q=0.75 K=0.75 A=0.75" in line


def test_each_mask_of_snn_eval_is_one_configuration():
    args = _parse("snn-eval", "--mask", "Q=0.5", "K=0.5", "--mask", "ckpt", "--mask", "A=0.25")
    assert args.mask == [["Q=0.5", "K=0.5"], ["ckpt"], ["A=0.25"]]
    assert _parse("snn-eval").mask is None


@pytest.mark.skipif(not DIGITS_PT.exists(), reason="the shipped export/digits.pt is absent")
@pytest.mark.parametrize("command", MASK_COMMANDS)
@pytest.mark.parametrize("words,msg", [(["Q=0.5", "Q=0.7"], "--mask gives Q twice"), (["Q=0.5,q=0.7"], "gives Q twice"),
                                       (["Q=1.5"], "outside [0, 1)"), (["bogus=0.5"], "bogus"), (["Q"], "SITE=RATIO")])
def test_bad_mask_words_are_one_line_errors(command, words, msg, capsys, tmp_path):
    argv = {"train": ["train", "--out", tmp_path / "m.pt"],
            "snn-eval": ["snn-eval", DIGITS_PT, "--report", tmp_path / "r"],
            "mst-export": [DIGITS_PT, "-o", tmp_path / "o.net"]}[command]
    line = _one_line_error(capsys, export_main if command == "mst-export" else main, argv + ["--mask", *words])
    assert msg in line
    assert not list(tmp_path.iterdir())


def test_parse_mask_words():
    assert at.parse_mask_words(["Q=0.5,K@1=0.25", "AV=0"]) == {"Q": 0.5, "K@1": 0.25, "AV": 0.0}
    assert at.parse_mask_words([]) == {}
    with pytest.raises(MSTError, match=r"--mask gives K@1 twice \(K@1=0.25 and k@1=0.5\)"):
        at.parse_mask_words(["K@1=0.25", "k@1=0.5"])


def test_ckpt_is_a_word_of_snn_eval_only(capsys):
    assert "ckpt" in _one_line_error(capsys, main, ["train", "--mask", "ckpt"])


# ----------------------------------------------------------------------------------------
# the report module, shared by run and snn-eval

def test_report_numbers_and_json():
    from mst_lava.report import fmt_num, json_default
    assert [fmt_num(v) for v in (None, 0, 12.345, 1234, 2.5e6, -3e9)] == ["—", "0", "12.3", "1.23 k", "2.5 M", "-3 G"]
    obj = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("x/y.net")}
    assert json.loads(json.dumps(obj, default=json_default)) == {"i": 3, "f": 0.5, "a": [0, 1, 2], "p": "x/y.net"}
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        json.dumps({"o": object()}, default=json_default)


def test_run_modules_keep_to_their_side():
    """Importing the run command, its inputs and the Lava backend loads no torch; the torch backend no Lava."""
    code = ("import sys\n"
            "import mst_lava.run.commands, mst_lava.run.inputs, mst_lava.run.lava_backend, mst_lava.run.verify\n"
            "import mst_lava.report\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "import mst_lava.run.torch_backend\n"
            "assert not [m for m in sys.modules if m == 'lava' or m.startswith('lava.')], 'lava'\n"
            "print('OK')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
