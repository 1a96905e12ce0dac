"""A Lava run that always stops: no Lava child processes survive an exception or Ctrl-C.

Lava's CPU runtime forks one OS process per leaf process, one per runtime service, a
shared-memory manager and a watchdog manager. ``Process.stop()`` tears them down by a
message handshake, which hangs if a child died or the parent was interrupted in the
middle of a channel operation. :class:`LavaSession` makes stopping unconditional:

1. children are forked with SIGINT ignored (the disposition is inherited through
   ``fork``), so a Ctrl-C in the terminal, which the kernel delivers to the whole
   foreground process group, interrupts only the parent;
2. :meth:`LavaSession.stop` first tries Lava's own ``stop()`` in a helper thread with a
   time limit;
3. then every multiprocessing child that appeared since the session started and is
   still alive is terminated (SIGTERM, then SIGKILL), so nothing is left behind even when
   the handshake hung.

Use it as a context manager (``with LavaSession(proc, cfg) as s: s.run(steps)``), or
call :meth:`stop` in a ``finally``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before any lava import)


def _alive_children() -> set:
    return {p for p in mp.active_children() if p.is_alive()}


def descendant_pids(pid: int | None = None) -> list[int]:
    """PIDs of all live descendants of ``pid`` (default: this process), read from /proc."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
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
        state, ppid = rest[0], int(rest[1])
        if state == "Z":
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class LavaSession:
    """Compiles ``proc``'s network with ``run_cfg`` on first :meth:`run` and guarantees teardown."""

    def __init__(self, proc, run_cfg, stop_timeout: float = 10.0):
        self.proc = proc
        self.run_cfg = run_cfg
        self.stop_timeout = float(stop_timeout)
        self._before: set = set()
        self._started = False
        self._stopped = False
        self.steps_run = 0
        self.compile_s = 0.0
        self.run_s = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Compile and start the runtime (children forked with SIGINT ignored)."""
        if self._started:
            return
        from lava.magma.core.run_conditions import RunSteps  # noqa: F401  (import before forking)
        self._before = _alive_children()
        self._started = True
        t0 = time.perf_counter()
        in_main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            self.proc.create_runtime(run_cfg=self.run_cfg)
        finally:
            if in_main:
                signal.signal(signal.SIGINT, old)
        self.compile_s = time.perf_counter() - t0

    def run(self, steps: int) -> None:
        """Run ``steps`` more time steps (blocking)."""
        from lava.magma.core.run_conditions import RunSteps
        if self._stopped:
            raise RuntimeError("this Lava session has been stopped")
        self.start()
        t0 = time.perf_counter()
        self.proc.run(condition=RunSteps(num_steps=int(steps), blocking=True))
        self.run_s += time.perf_counter() - t0
        self.steps_run += int(steps)

    def stop(self) -> None:
        """Stop Lava; kill whatever did not stop in time. Idempotent, never raises."""
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        runtime = getattr(self.proc, "runtime", None) or getattr(self.proc, "_runtime", None)
        if runtime is not None:
            err: list = []

            def _stop():
                try:
                    runtime.stop()
                except BaseException as e:  # noqa: BLE001 - reported below, never propagated
                    err.append(e)

            t = threading.Thread(target=_stop, name="lava-stop", daemon=True)
            t.start()
            t.join(self.stop_timeout)
            if t.is_alive() or err:
                # the handshake hung or failed: release the shared memory if we still can
                infra = getattr(runtime, "_messaging_infrastructure", None)
                smm = getattr(infra, "smm", None)
                try:
                    if smm is not None:
                        smm.shutdown()
                except BaseException:  # noqa: BLE001
                    pass
            # Runtime.__del__ would try to stop again later
            try:
                runtime._is_started = False
            except AttributeError:
                pass
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        left = [p for p in _alive_children() - self._before]
        for p in left:
            try:
                p.terminate()
            except BaseException:  # noqa: BLE001
                pass
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

    def __enter__(self) -> "LavaSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()

    def __del__(self):
        try:
            self.stop()
        except BaseException:  # noqa: BLE001
            pass
