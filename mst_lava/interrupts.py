"""Ctrl-C and SIGTERM stop every command promptly: exit status 130 / 143, nothing half-written.

``mst`` and ``mst-export`` run their command inside :func:`handled`: SIGINT raises
``KeyboardInterrupt`` (also when the command was started with SIGINT ignored, as a shell
script's ``cmd &`` does) and SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``. So
on either signal the ``finally`` blocks run (temp files of atomic writes are removed, Lava is
stopped) and the CLI exits with ``128 + signal number`` after one line on stderr.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """A terminating signal (SIGTERM) as an exception, so that cleanup code runs."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"signal {int(signum)}")
        self.signum = int(signum)


# the signal received inside ``handled()``; kept so that an interrupt Python had to swallow (a
# handler's exception raised inside a weakref callback or ``__del__`` is only printed) still stops
# the command at the next :func:`check`
_pending: int | None = None


def _exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _handler(signum, frame):
    global _pending
    _pending = int(signum)
    raise _exception(signum)


def check() -> None:
    """Raise the interrupt received inside :func:`handled` if it was swallowed on its way
    (call it before committing work, e.g. before an atomic rename)."""
    if _pending is not None:
        raise _exception(_pending)


def signal_of(e: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT unless it is a :class:`Terminated`)."""
    return int(getattr(e, "signum", signal.SIGINT))


def exit_status(e: BaseException) -> int:
    """The shell's exit status for a command stopped by ``e``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signal_of(e)


def message(e: BaseException) -> str:
    sig = signal_of(e)
    return "interrupted" if sig == signal.SIGINT else f"interrupted by {signal.Signals(sig).name}"


@contextmanager
def handled():
    """SIGINT → KeyboardInterrupt, SIGTERM → :class:`Terminated` inside the block (main thread
    only; the previous handlers are restored after it). A signal whose exception Python
    swallowed is raised again when the block ends."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    outer, hook = _pending, sys.unraisablehook
    _pending = None
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, _handler)

        def quiet(u):        # an interrupt Python could not propagate is not printed: check() raises it
            if not (isinstance(u.exc_value, KeyboardInterrupt) and _pending is not None):
                hook(u)
        sys.unraisablehook = quiet
        yield
        check()              # a signal whose exception was swallowed still ends the command
    finally:
        for sig, h in old.items():
            if h is not None:
                signal.signal(sig, h)
        sys.unraisablehook = hook
        _pending = outer
