"""A Lava run that always stops: no Lava child, no shared memory and no crash left behind.

Lava's CPU runtime forks one OS process per leaf process, one per runtime service and a
shared-memory manager; the channels between them are POSIX shared-memory segments
(``/dev/shm/psm_*``) that the parent maps too (its ports to the runtime service read them).
``Runtime.stop()`` tears all this down by a message handshake, which hangs if a child died,
the parent was interrupted in the middle of a channel operation, or the machine is so busy
that the handshake outlasts any patience. :class:`LavaSession` makes stopping unconditional
and safe under any timing:

1. **Children.** While the session forks Lava's children, a fork hook runs in each child: it
   ignores SIGINT (a terminal Ctrl-C, delivered to the whole foreground process group,
   interrupts only the parent), restores SIGTERM's default action, and asks the kernel to
   SIGKILL the child when the parent dies (``prctl(PR_SET_PDEATHSIG)``), so even a SIGKILL of
   the parent leaves no Lava worker behind. The parent itself keeps its handlers during
   start-up: Ctrl-C or SIGTERM while Lava compiles or forks stops the command at once.
2. **Graceful stop, bounded.** :meth:`LavaSession.stop` runs Lava's own ``stop()`` in a helper
   thread and waits at most ``stop_timeout`` seconds. After an interrupt, or for a runtime
   that never ran, it goes straight to step 3.
3. **Hard stop, never a crash.** Otherwise the runtime is disarmed (its methods refuse; Lava's
   own late ``stop`` can no longer free anything), every child that appeared since the
   session started is terminated, then killed, the shared-memory names are unlinked (nothing
   is left in ``/dev/shm``) and the manager process is gone; the helper thread, if still
   waiting for an answer, is handed tokens so that it ends. The parent's *mappings* of the
   segments are kept until the process exits (a few KB per channel): Lava's ports read the
   shared memory without any guard, and unmapping it while a thread could still read it is
   what made the whole process die with SIGSEGV.
4. **Leftovers of killed runs.** The names of a session's segments are recorded in a small
   registry file (under the temp folder) while it runs; the next session removes the
   segments of registries whose process is gone (``cleanup_stale_shm``). The same registry
   records multiprocessing's temp folder (``/tmp/pymp-*``, with the shared-memory manager's
   listener socket): a session that created it removes it when it stops, and the next session
   removes the folder of a killed run once its process is gone and no live socket is bound in it.

Every wait is bounded; signals that arrive during :meth:`stop` are delivered after it.
Use it as a context manager (``with LavaSession(proc, cfg) as s: s.run(steps)``), or call
:meth:`stop` in a ``finally``.
"""
from __future__ import annotations

import ctypes
import itertools
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before any lava import)
from mst_lava.interrupts import check as check_interrupt

SHM_DIR = Path("/dev/shm")
_PR_SET_PDEATHSIG = 1

# set (parent pid, pdeathsig?) while a session forks Lava's children; read by the fork hook
_FORK_GUARD: tuple[int, bool] | None = None
# the registry file the current start-up records segment names in
_REGISTRY: Path | None = None
_REGISTRY_LOCK = threading.Lock()
# shared-memory handles of hard-stopped sessions: never unmapped (a thread may still read them)
_PINNED: list = []


def _quiet_channel_acks_after_hard_stop() -> None:
    """After a hard stop, Lava's channel ack threads (``pypychannel._ack_callback``) can still wake
    and release a send semaphore that ``_unblock`` already freed: ``ValueError: Semaphore released
    too many times`` in a dying daemon thread, printed as a traceback. Only that exception, from that
    file, is dropped; every other thread exception reaches the previous hook."""
    if getattr(threading.excepthook, "_mst_quiet", False):
        return
    previous = threading.excepthook

    def hook(args):
        tb, in_channel = args.exc_traceback, False
        while tb is not None:
            in_channel = in_channel or tb.tb_frame.f_code.co_filename.endswith("pypychannel.py")
            tb = tb.tb_next
        if in_channel and args.exc_type is ValueError and "released too many times" in str(args.exc_value):
            return
        previous(args)

    hook._mst_quiet = True
    threading.excepthook = hook
_SESSION_IDS = itertools.count()

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):      # pragma: no cover - not Linux
    _prctl = None


# ----------------------------------------------------------------------------------------
# forked children

def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)


def _after_fork_in_child() -> None:
    """Runs in every child forked while a session starts Lava (see the module docstring)."""
    global _FORK_GUARD, _REGISTRY
    guard = _FORK_GUARD
    if guard is None:
        return
    _FORK_GUARD = None
    _REGISTRY = None
    parent, pdeathsig = guard
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):      # pragma: no cover
        pass
    if pdeathsig and _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    else:
        # the parent-death signal follows the forking *thread*: started from another thread, poll
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:         # the parent died before the death signal was armed
        os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def _forking_children():
    global _FORK_GUARD
    _FORK_GUARD = (os.getpid(), threading.current_thread() is threading.main_thread())
    try:
        yield
    finally:
        _FORK_GUARD = None


# ----------------------------------------------------------------------------------------
# processes

def _alive_children() -> set:
    out = set()
    for p in mp.active_children():
        try:
            if p.is_alive():
                out.add(p)
        except ValueError:             # closed meanwhile by another thread (Lava's own join)
            pass
    return out


def _pid(p) -> int | None:
    try:
        return p.pid
    except ValueError:
        return None


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid → (ppid, state) of every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces/parentheses: split after the last ')'
        rest = stat[stat.rfind(")") + 2:].split()
        out[int(entry)] = (int(rest[1]), rest[0])
    return out


def descendant_pids(pid: int | None = None) -> list[int]:
    """PIDs of all live descendants of ``pid`` (default: this process), read from /proc."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for p, (ppid, state) in _proc_table().items():
        if state != "Z":
            children.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    return None if rest[0] in ("Z", "X") else rest[19]


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _forked_children() -> set[int]:
    """Live direct children that are forks of this process (same command line): Lava's workers
    and managers, also one that multiprocessing had not registered yet when an interrupt hit."""
    me, cmd = os.getpid(), _cmdline(os.getpid())
    return {p for p, (ppid, state) in _proc_table().items()
            if ppid == me and state != "Z" and _cmdline(p) == cmd}


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


# ----------------------------------------------------------------------------------------
# shared memory registry

def _registry_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"mst_lava-shm-{uid}"


def _record_segment(name: str) -> None:
    reg = _REGISTRY
    if reg is None:
        return
    try:
        with _REGISTRY_LOCK, open(reg, "a") as f:
            f.write(name + "\n")
    except OSError:
        pass


def _patch_lava() -> None:
    """While a session starts Lava: record every shared-memory segment it creates, and before
    each segment and each fork raise an interrupt that Python swallowed (a signal that arrives
    during a fork is often handled inside an at-fork hook, where its exception is only printed):
    Ctrl-C or SIGTERM during start-up stops it there, not after the last of 100 forks."""
    from lava.magma.runtime.message_infrastructure import multiprocessing as mpi
    from lava.magma.runtime.message_infrastructure import shared_memory_manager as m

    from mst_lava.interrupts import check
    cls = m.SharedMemoryManager
    if not getattr(cls.create_shared_memory, "_mst_patched", False):
        create = cls.create_shared_memory

        def create_shared_memory(self, size: int):
            check()
            handle = create(self, size)
            _record_segment(handle.name)
            return handle
        create_shared_memory._mst_patched = True
        cls.create_shared_memory = create_shared_memory
    infra = mpi.MultiProcessing
    if not getattr(infra.build_actor, "_mst_patched", False):
        build = infra.build_actor

        def build_actor(self, *args, **kwargs):
            check()
            return build(self, *args, **kwargs)
        build_actor._mst_patched = True
        infra.build_actor = build_actor


def _unlink_segment(name: str) -> bool:
    name = name.strip().lstrip("/")
    if not name or "/" in name or not name.startswith("psm_"):
        return False
    try:
        (SHM_DIR / name).unlink()
        return True
    except OSError:
        return False


PYMP_SUFFIX = ".pymp"        # next to a session's registry: the path of its multiprocessing temp folder


def _mp_tempdir() -> str | None:
    """This process's multiprocessing temp folder (``multiprocessing.util.get_temp_dir``), None if not made."""
    return mp.process.current_process()._config.get("tempdir")


def _bound_unix_socket_paths() -> list[str] | None:
    """Paths of the Unix sockets bound by live processes (``/proc/net/unix``), None if unknown."""
    try:
        with open("/proc/net/unix") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    return [ln.split(None, 7)[7] for ln in lines if len(ln.split(None, 7)) == 8]


def _remove_stale_pymp(path: str) -> bool:
    """Remove the multiprocessing temp folder ``path`` of a session whose process is gone, conservatively:
    an absolute ``pymp-*`` folder (not a link) of this user in which no live process has a socket bound."""
    import shutil
    import stat as st_
    p = Path(path.strip())
    if not p.is_absolute() or not p.name.startswith("pymp-") or "\n" in str(p):
        return False
    try:
        s = os.lstat(p)
    except OSError:
        return False
    if not st_.S_ISDIR(s.st_mode) or (hasattr(os, "getuid") and s.st_uid != os.getuid()):
        return False
    bound = _bound_unix_socket_paths()
    if bound is None or any(b == str(p) or b.startswith(str(p) + "/") for b in bound):
        return False                      # unknown, or a live process still listens there: keep it
    shutil.rmtree(p, ignore_errors=True)
    return not p.exists()


def cleanup_stale_shm() -> int:
    """Unlink the shared memory recorded by sessions whose process is gone (killed runs), and remove
    their multiprocessing temp folders (:func:`_remove_stale_pymp`).

    Unlinking only removes the name: a process that still maps a segment keeps it. Returns the
    number of segments removed."""
    d = _registry_dir()
    try:
        files = list(d.glob("*.txt")) + list(d.glob("*" + PYMP_SUFFIX))
    except OSError:
        return 0
    removed = 0
    for f in files:
        parts = f.stem.split("-")
        try:
            pid, start = int(parts[0]), parts[1]
        except (IndexError, ValueError):
            continue
        if _start_time(pid) == start:
            continue                              # that session's process is still running
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == PYMP_SUFFIX:
            for line in text.splitlines():
                _remove_stale_pymp(line)
        else:
            removed += sum(_unlink_segment(n) for n in text.split())
        try:
            f.unlink()
        except OSError:
            pass
    return removed


# ----------------------------------------------------------------------------------------
# signals during stop

@contextmanager
def _signals_deferred():
    """SIGINT/SIGTERM that arrive inside the block are re-delivered after it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, lambda s, f: got.append(s))
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        for sig in dict.fromkeys(got):
            signal.raise_signal(sig)


def _stopped_runtime(*args, **kwargs):
    raise RuntimeError("this Lava runtime was stopped by LavaSession.stop")


# ----------------------------------------------------------------------------------------

class LavaSession:
    """Compiles ``proc``'s network with ``run_cfg`` on first :meth:`run` and guarantees teardown.

    ``stop_timeout``: seconds Lava's own stop handshake may take before the session stops
    everything itself (default: 10 s plus 0.1 s per Lava process)."""

    def __init__(self, proc, run_cfg, stop_timeout: float | None = None):
        self.proc = proc
        self.run_cfg = run_cfg
        self.stop_timeout = None if stop_timeout is None else float(stop_timeout)
        self._before: set = set()
        self._before_pids: set = set()
        self._registry: Path | None = None
        self._own_tempdir = False
        self._started = False
        self._stopped = False
        self.steps_run = 0
        self.compile_s = 0.0
        self.run_s = 0.0
        self.stop_s = 0.0
        self.stop_mode = ""            # "", "graceful" or "hard" after stop()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Compile and start the runtime (children forked as described in the module docstring)."""
        global _REGISTRY
        if self._started:
            return
        if self._stopped:
            raise RuntimeError("this Lava session has been stopped")
        from lava.magma.core.run_conditions import RunSteps  # noqa: F401  (import before forking)
        _patch_lava()
        cleanup_stale_shm()
        self._before = _alive_children()
        self._before_pids = _forked_children()
        self._registry = self._new_registry()
        # multiprocessing's temp folder (Lava's shared-memory manager binds its listener socket there): made
        # now, before any fork, and recorded, so that the next session removes it if this run is killed
        self._own_tempdir = _mp_tempdir() is None
        from multiprocessing.util import get_temp_dir
        try:
            tempdir = get_temp_dir()
        except OSError:
            tempdir = None
        if tempdir and self._registry is not None:
            try:
                self._registry.with_suffix(PYMP_SUFFIX).write_text(tempdir + "\n")
            except OSError:
                pass
        self._started = True
        t0 = time.perf_counter()
        _REGISTRY = self._registry
        try:
            with _forking_children():
                self.proc.create_runtime(run_cfg=self.run_cfg)
        finally:
            _REGISTRY = None
        self._guard_smm_shutdown()
        self.compile_s = time.perf_counter() - t0
        check_interrupt()

    def _guard_smm_shutdown(self) -> None:
        """Lava's SharedMemoryManager.shutdown (called at the end of ``Runtime.stop``) and the hard
        stop's take-over exclude each other; once taken over, Lava's call does nothing."""
        smm = getattr(getattr(self._runtime(), "_messaging_infrastructure", None), "smm", None)
        if smm is None:
            return
        lock, original = threading.Lock(), smm.shutdown

        def shutdown():
            with lock:
                if not getattr(smm, "_mst_taken_over", False):
                    original()
        smm._mst_lock = lock
        smm.shutdown = shutdown

    def run(self, steps: int) -> None:
        """Run ``steps`` more time steps (blocking)."""
        from lava.magma.core.run_conditions import RunSteps
        if self._stopped:
            raise RuntimeError("this Lava session has been stopped")
        self.start()
        check_interrupt()
        t0 = time.perf_counter()
        self.proc.run(condition=RunSteps(num_steps=int(steps), blocking=True))
        self.run_s += time.perf_counter() - t0
        self.steps_run += int(steps)

    def stop(self, graceful: bool | None = None) -> None:
        """Stop Lava; kill whatever did not stop in time. Idempotent, bounded, never raises.

        ``graceful``: try Lava's own stop handshake first (default: yes, unless a
        KeyboardInterrupt is being handled, when the session stops everything at once)."""
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        if graceful is None:
            exc = sys.exc_info()[0]
            graceful = not (exc is not None and issubclass(exc, KeyboardInterrupt))
        t0 = time.perf_counter()
        with _signals_deferred():
            try:
                self._stop(graceful)
            except BaseException:  # noqa: BLE001 - stop never raises; the last resort below
                try:
                    self._kill_leftovers()
                except BaseException:  # noqa: BLE001
                    pass
            self._remove_own_tempdir()
        self.stop_s = time.perf_counter() - t0

    def _remove_own_tempdir(self) -> None:
        """Remove the multiprocessing temp folder this session made (its children are gone now) and make
        multiprocessing forget it (a later session makes a new one): first cancel the exit finalizer
        multiprocessing registered for it (a dict deletion, nothing an interrupt can leave half done), then
        remove the folder; an interrupt during the removal leaves at most a folder the next start removes."""
        if not self._own_tempdir:
            return
        self._own_tempdir = False
        tempdir = _mp_tempdir()
        if not tempdir:
            return
        try:
            import shutil
            from multiprocessing import util
            for fin in list(util._finalizer_registry.values()):
                if getattr(fin, "_callback", None) is util._remove_temp_dir and tempdir in (fin._args or ()):
                    fin.cancel()
            mp.process.current_process()._config["tempdir"] = None
            shutil.rmtree(tempdir, ignore_errors=True)
        except BaseException:  # noqa: BLE001 - stop never raises
            pass

    # -- internals --------------------------------------------------------------------------
    def _new_registry(self) -> Path | None:
        start = _start_time(os.getpid())
        d = _registry_dir()
        try:
            d.mkdir(mode=0o700, exist_ok=True)
            reg = d / f"{os.getpid()}-{start}-{next(_SESSION_IDS)}.txt"
            reg.write_text("")
            return reg
        except OSError:
            return None

    def _runtime(self):
        return getattr(self.proc, "_runtime", None) or getattr(self.proc, "runtime", None)

    def _stop(self, graceful: bool) -> None:
        runtime = self._runtime()
        infra = getattr(runtime, "_messaging_infrastructure", None)
        thread = None
        if graceful and runtime is not None and infra is not None and getattr(runtime, "_is_started", False):
            err: list = []

            def _lava_stop():
                try:
                    runtime.stop()
                except BaseException as e:  # noqa: BLE001 - recorded, never propagated
                    err.append(e)

            thread = threading.Thread(target=_lava_stop, name="lava-stop", daemon=True)
            thread.start()
            n = len(getattr(infra, "actors", ()) or ())
            timeout = self.stop_timeout if self.stop_timeout is not None else 10.0 + 0.1 * n
            thread.join(timeout)
            if not thread.is_alive() and not err and getattr(infra, "smm", None) is not None \
                    and getattr(infra.smm, "_manager", 1) is None:
                # Lava stopped everything itself: ports joined, children joined, segments unlinked
                self.stop_mode = "graceful"
                self._disarm(runtime)
                self._kill_leftovers()
                self._drop_registry()
                return
        self.stop_mode = "hard"
        self._hard_stop(runtime, infra, thread)

    def _disarm(self, runtime) -> None:
        """Make the runtime object inert: no method touches its channels any more."""
        if runtime is None:
            return
        try:
            runtime._is_started = False          # Runtime.__del__ would try to stop again
            for name in ("start", "run", "pause", "wait", "get_var", "set_var"):
                setattr(runtime, name, _stopped_runtime)
            runtime.stop = lambda *a, **k: None
        except AttributeError:
            pass

    def _hard_stop(self, runtime, infra, thread) -> None:
        self._disarm(runtime)
        smm = getattr(infra, "smm", None)
        handles, manager = [], None
        if smm is not None:
            # take over from Lava's SharedMemoryManager.shutdown: a late Runtime.stop in the helper
            # thread would unmap the segments while that thread may still read them
            lock = getattr(smm, "_mst_lock", None)
            locked = lock.acquire(timeout=5.0) if lock is not None else False
            try:
                smm._mst_taken_over = True
                handles = list(getattr(smm, "_shared_memory_handles", None) or [])
                manager = getattr(smm, "_manager", None)
                smm._manager = None
            finally:
                if locked:
                    lock.release()
        self._kill_leftovers()                   # no child writes or signals any more
        for h in handles:                        # the names go; the parent's mappings stay valid
            try:
                h.unlink()
            except BaseException:  # noqa: BLE001 - already gone
                pass
        if manager is not None:
            try:
                manager.shutdown()               # its process is dead: only the bookkeeping
            except BaseException:  # noqa: BLE001
                pass
        _quiet_channel_acks_after_hard_stop()
        if thread is not None and thread.is_alive():
            self._unblock(runtime, thread)
        # The parent's mappings are never unmapped here: a thread that was inside the runtime
        # (the helper thread, or any other) may still read a port buffer, and an unmapped buffer
        # is a SIGSEGV. They are a few KB per channel, released when the process exits.
        _PINNED.extend(handles)
        self._drop_registry()

    @staticmethod
    def _unblock(runtime, thread, wait: float = 2.0) -> None:
        """Let a helper thread stuck in the stop handshake run to its end (every child is dead):
        a token in each of the runtime's receive queues and a free slot in each send port."""
        deadline = time.monotonic() + wait
        while thread.is_alive() and time.monotonic() < deadline:
            for port in list(getattr(runtime, "service_to_runtime", ()) or ()):
                q = getattr(port, "_queue", None)
                try:
                    if q is not None and q.qsize() == 0:
                        q.put_nowait(0)
                except BaseException:  # noqa: BLE001 - full or closed
                    pass
            for port in list(getattr(runtime, "runtime_to_service", ()) or ()):
                sem = getattr(port, "_semaphore", None)
                try:
                    if sem is not None:
                        sem.release()
                except BaseException:  # noqa: BLE001 - already free
                    pass
            thread.join(0.1)

    def _drop_registry(self) -> None:
        if self._registry is not None:
            for f in (self._registry, self._registry.with_suffix(PYMP_SUFFIX)):
                try:
                    f.unlink()
                except OSError:
                    pass
            self._registry = None

    def _kill_leftovers(self) -> None:
        """Terminate, then kill, every child that appeared since the session started (bounded)."""
        left = list(_alive_children() - self._before)
        extra = _forked_children() - self._before_pids - {_pid(p) for p in left}
        for p in left:
            try:
                p.terminate()
            except BaseException:  # noqa: BLE001
                pass
        for pid in extra:
            _signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for p in left:
            try:
                p.join(max(0.0, deadline - time.monotonic()))
            except BaseException:  # noqa: BLE001
                pass
        for p in left:
            try:
                if p.is_alive():
                    p.kill()
                    p.join(1.0)
            except BaseException:  # noqa: BLE001
                pass
        for pid in extra:
            _signal_pid(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass

    def __enter__(self) -> "LavaSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(graceful=not (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)))

    def __del__(self):
        try:
            self.stop()
        except BaseException:  # noqa: BLE001
            pass
