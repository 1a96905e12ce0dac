"""Ctrl-C and SIGTERM stop a command at once (130 / 143, one line, no temp file); a full disk
during an HDF5 export is one line, not h5py tracebacks and a SIGSEGV (issue 14, item 4)."""
from __future__ import annotations

import glob
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mst_lava import interrupts
from mst_lava.checkpoint import atomic_write

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MST_EXPORT = [PY, "-c", "import sys; from mst_lava.cli import export_main; sys.exit(export_main())"]


class _SwallowedInterrupt:
    """The signal handler runs while Python executes a ``__del__`` (or a weakref callback, as in
    h5py): its exception can only be printed, the code around goes on."""

    def __init__(self, sig: int):
        self.sig = sig

    def __del__(self):
        interrupts._handler(self.sig, None)


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("sig,exc", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, interrupts.Terminated)])
def test_handled_turns_signals_into_interrupts_and_restores_handlers(sig, exc):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(exc) as e:
        with interrupts.handled():
            os.kill(os.getpid(), sig)
            for _ in range(1000):
                time.sleep(0.001)
    assert interrupts.exit_status(e.value) == 128 + sig
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_swallowed_interrupt_still_ends_the_block(capsys):
    ran_on = False
    with pytest.raises(interrupts.Terminated):
        with interrupts.handled():
            _SwallowedInterrupt(signal.SIGTERM)        # raised in __del__: Python only reports it
            ran_on = True
    assert ran_on
    assert "Exception ignored" not in capsys.readouterr().err   # not printed: it is raised instead


def test_atomic_write_commits_nothing_after_a_swallowed_interrupt(tmp_path):
    out = tmp_path / "out.txt"

    def write(tmp):
        Path(tmp).write_text("half")
        _SwallowedInterrupt(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with interrupts.handled():
            atomic_write(out, write)
    assert _files(tmp_path) == []


def _graph():
    import torch

    from mst_lava.export import export_model
    from mst_lava.model import build_model
    torch.manual_seed(0)
    return export_model(build_model("digits").eval(), precision="fixed", mask=["Q=0.5"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "swallowed"])
def test_signal_in_the_middle_of_the_hdf5_write(tmp_path, monkeypatch, sig, swallowed):
    from mst_lava.export import hdf5_write as hdf5io
    graph, calls = _graph(), []
    put = hdf5io._put

    def put_and_signal(group, key, value):
        calls.append(key)
        if len(calls) == 40:
            if swallowed:
                _SwallowedInterrupt(sig)
            else:
                os.kill(os.getpid(), sig)
        put(group, key, value)
    monkeypatch.setattr(hdf5io, "_put", put_and_signal)
    with pytest.raises(KeyboardInterrupt) as e:
        with interrupts.handled():
            hdf5io.write_network(tmp_path / "net.net", graph)
    assert interrupts.signal_of(e.value) == sig
    if not swallowed:                                # stopped there; a swallowed one before any byte is written
        assert 40 <= len(calls) < 100
    assert _files(tmp_path) == []                    # no output, no temp file


def test_mst_export_sigterm_mid_write_is_143_and_one_line(tmp_path, monkeypatch, capsys):
    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.cli import export_main
    from mst_lava.export import hdf5_write as hdf5io
    from mst_lava.model import build_model
    save_checkpoint(tmp_path / "m.pt", build_model("digits").eval(), dataset="digits")
    put, calls = hdf5io._put, []

    def put_and_signal(group, key, value):
        calls.append(key)
        if len(calls) == 25:
            os.kill(os.getpid(), signal.SIGTERM)
        put(group, key, value)
    monkeypatch.setattr(hdf5io, "_put", put_and_signal)
    rc = export_main([str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.net"), "--precision", "fixed"])
    err = capsys.readouterr().err
    assert rc == 143
    assert err.strip().splitlines() == ["mst-export: interrupted by SIGTERM"], err
    assert _files(tmp_path) == ["m.pt"]


def _limit_file_size(nbytes: int):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return pre


@pytest.mark.parametrize("extra", [[], ["--mask", "Q=0.5"], ["--precision", "fixed"]],
                         ids=["float", "masked", "fixed"])
def test_full_disk_during_export_is_one_line(tmp_path, extra):
    """Writes past the file-size limit fail (EFBIG) as on a full disk (ENOSPC; checked by hand on a
    1 MB tmpfs, where the old writer printed 2,178 lines of h5py tracebacks and died of SIGSEGV)."""
    out = tmp_path / "out" / "digits.net"
    out.parent.mkdir()
    r = subprocess.run([*MST_EXPORT, str(ROOT / "export" / "digits.pt"), "-o", str(out), *extra], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(64 * 1024),
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "too large" in lines[0].lower(), r.stderr[-3000:]
    assert _files(out.parent) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_mst_export_of_a_large_network_stops_at_once(tmp_path, sig):
    """A CIFAR-size MST (a 280 MB .net in fixed point): the signal once the temp file exists."""
    import torch

    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.model import build_model
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c.pt", build_model("cifar").eval(), dataset="cifar10")
    out = tmp_path / "c.net"
    p = subprocess.Popen([*MST_EXPORT, str(tmp_path / "c.pt"), "-o", str(out), "--precision", "fixed"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not glob.glob(str(tmp_path / ".c.net.*.tmp")) and p.poll() is None:
            time.sleep(0.01)
        assert p.poll() is None, p.communicate()
        p.send_signal(sig)
        t0 = time.monotonic()
        _, err = p.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 128 + sig, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert took < 30
    assert _files(tmp_path) == ["c.pt"]
