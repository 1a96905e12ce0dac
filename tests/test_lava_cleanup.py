"""Lava is always stopped: Ctrl-C or an exception mid-run leaves no Lava child processes behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "export" / "digits.pt"
PY = sys.executable


def _children(pid: int) -> list[int]:
    """Live descendants of ``pid`` (from /proc), the multiprocessing resource tracker excluded."""
    from mst_lava.lava.session import descendant_pids
    out = []
    for p in descendant_pids(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            out.append(p)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    import torch

    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.export import export_checkpoint
    from mst_lava.model import build_model
    d = tmp_path_factory.mktemp("lava_cleanup")
    torch.manual_seed(0)
    model = build_model("digits").eval()
    save_checkpoint(d / "tiny.pt", model, dataset="digits")
    export_checkpoint(d / "tiny.pt", d / "tiny.net", precision="fixed")
    return d / "tiny.net"


def _run_until_lava_is_up(tiny_net, **popen_kw):
    """Start `mst run` in a subprocess and wait until its Lava children are up and running.

    Returns the process and every child pid seen (encoder, segments, readout, runtime service,
    managers); the caller signals it and must reap it.
    """
    proc = subprocess.Popen([PY, "-m", "mst_lava.cli", "run", str(tiny_net), "--dataset", "digits", "--n", "300",
                             "--T", "256", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen_kw)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            kids = _children(proc.pid)
            seen |= set(kids)
            if len(kids) >= 8:
                time.sleep(1.5)                   # well inside the run
                seen |= set(_children(proc.pid))
                break
            time.sleep(0.2)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, seen


@pytest.mark.parametrize("target", ["parent", "group"])
def test_sigint_mid_run_leaves_no_lava_children(tiny_net, target):
    """`mst run` in a subprocess, SIGINT while Lava runs: exit 130, every Lava child gone.

    ``parent``: ``kill -INT`` of the mst process; ``group``: SIGINT to its whole process
    group, which is what Ctrl-C in a terminal does (the children receive it too).
    """
    proc, seen = _run_until_lava_is_up(tiny_net, start_new_session=True)
    try:
        assert proc.poll() is None, f"mst run ended early: {proc.communicate()}"
        assert len(seen) >= 8, f"Lava children never appeared: {seen}"
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "interrupted" in err
    time.sleep(0.5)
    left = [p for p in seen if _alive(p)]
    assert not left, f"Lava children survived Ctrl-C: {left}"


def test_sigterm_mid_run_leaves_no_lava_children(tiny_net):
    proc, seen = _run_until_lava_is_up(tiny_net)
    try:
        assert len(seen) >= 8
        proc.terminate()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)
    assert not [p for p in seen if _alive(p)]


def test_exception_in_a_process_model_stops_lava(tmp_path):
    """A ProcessModel that raises mid-run: the error reaches the caller and no child survives."""
    script = tmp_path / "boom.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        import mst_lava.lava
        from lava.magma.core.decorator import implements, requires, tag
        from lava.magma.core.model.py.model import PyLoihiProcessModel
        from lava.magma.core.model.py.ports import PyInPort
        from lava.magma.core.model.py.type import LavaPyType
        from lava.magma.core.process.ports.ports import InPort
        from lava.magma.core.process.process import AbstractProcess
        from lava.magma.core.resources import CPU
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
        from mst_lava.lava import models as M
        from mst_lava.lava import process as P
        from mst_lava.lava.session import LavaSession, descendant_pids

        class Boom(AbstractProcess):
            def __init__(self):
                super().__init__()
                self.a_in = InPort(shape=(4,))

        @implements(proc=Boom, protocol=LoihiProtocol)
        @requires(CPU)
        @tag("floating_pt")
        class PyBoom(PyLoihiProcessModel):
            a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
            def run_spk(self):
                self.a_in.recv()
                if self.time_step == 50:
                    raise ValueError("boom at step 50")

        enc = P.InputEncoder(data=np.ones((1, 4)), shape=(4,), T=1000)
        nrn = P.IFNeuron(shape=(4,), vth=1.0, T=1000)
        boom = Boom()
        enc.out.connect(nrn.a_in)
        nrn.s_out.connect(boom.a_in)
        cfg = Loihi2SimCfg(select_tag="floating_pt",
                           exception_proc_model_map={{enc: M.PyInputEncoderModelFloat,
                                                      nrn: M.PyIFNeuronModelFloat, boom: PyBoom}})
        sess = LavaSession(boom, cfg)
        try:
            sess.run(200)
            print("NO ERROR")
        except Exception as e:
            print("ERROR", type(e).__name__)
        finally:
            sess.stop()
        import multiprocessing as mp
        left = [p for p in mp.active_children() if p.is_alive()]
        print("LEFT", len(left))
    """))
    r = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=180)
    assert "ERROR" in r.stdout and "NO ERROR" not in r.stdout, r.stdout + r.stderr[-3000:]
    assert "LEFT 0" in r.stdout, r.stdout + r.stderr[-3000:]


def _pymp_dirs(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith("pymp-"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_no_multiprocessing_temp_folder(tiny_net, tmp_path, monkeypatch, sig):
    """multiprocessing's temp folder (/tmp/pymp-*, the shared-memory manager's listener socket) was left by a
    run interrupted after start-up. SIGTERM (and SIGINT): the run removes it as it stops; SIGKILL: the
    folder stays, recorded in the run's registry, and the next session's start-up removes it."""
    import tempfile

    from mst_lava.lava.session import cleanup_stale_shm
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc, seen = _run_until_lava_is_up(tiny_net, env=dict(os.environ, TMPDIR=str(tmp)))
    try:
        assert proc.poll() is None and len(seen) >= 8, f"Lava never came up: {proc.poll()}"
        assert len(_pymp_dirs(tmp)) == 1
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and _pymp_dirs(tmp) == []
        return
    left = _pymp_dirs(tmp)
    assert len(left) == 1 and any(left[0].name in f.read_text() for f in tmp.glob("mst_lava-shm-*/*.pymp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))        # what the next session in that TMPDIR does first
    cleanup_stale_shm()
    assert _pymp_dirs(tmp) == [] and list(tmp.glob("mst_lava-shm-*/*")) == []


def test_stale_multiprocessing_temp_folders_are_removed_conservatively(tmp_path, monkeypatch):
    """Only folders a gone session recorded, in which no live process has a socket bound, are removed."""
    import socket
    import tempfile

    from mst_lava.lava.session import _registry_dir, _start_time, cleanup_stale_shm
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    reg = _registry_dir()
    reg.mkdir(mode=0o700)
    dead, listening, live, not_pymp = (tmp_path / "pymp-dead", tmp_path / "pymp-listening", tmp_path / "pymp-live",
                                       tmp_path / "other")
    for d in (dead, listening, live, not_pymp):
        d.mkdir()
        (d / "listener-x").write_text("")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(listening / "listener-live"))
        sock.listen(1)
        (reg / "99999999-1-0.pymp").write_text(f"{dead}\n{listening}\n{not_pymp}\n")      # its process is gone
        (reg / f"{os.getpid()}-{_start_time(os.getpid())}-0.pymp").write_text(f"{live}\n")  # running
        cleanup_stale_shm()
        assert not dead.exists() and listening.exists() and live.exists() and not_pymp.exists()
        assert [p.name for p in reg.iterdir()] == [f"{os.getpid()}-{_start_time(os.getpid())}-0.pymp"]
    finally:
        sock.close()
