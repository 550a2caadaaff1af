"""Ctrl-C and SIGTERM outside a training's fit (which stops at a batch boundary instead:
:class:`mlplab.checkpoints.StopSignals`): a command or a sweep stops in one line, and a write
that must not be cut waits for its end."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from mlplab.errors import RunInterrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends, then arrive as they would have: a study's
    storage is never left with half a write (or a journal lock held) by a signal. Python's
    own handlers, not a signal mask: the OS may hand a signal to any thread (a heartbeat's),
    and only a handler holds it for all of them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: arrived.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])


@contextlib.contextmanager
def stopped_by_signals(what: str, then: str = "") -> Iterator[None]:
    """Ctrl-C and SIGTERM during the block as :class:`RunInterrupted` (exit 130, 143:
    ``"<what> stopped by Ctrl-C<then>"``), raised where the main thread is, unless a handler
    of its own is installed already (a parallel sweep's; a job's training installs its own
    while it fits). After the first, the process is ending: a second one is ignored.

    A signal the process was started ignoring stays ignored (``nohup``, or a shell's
    background job, which ignores Ctrl-C): the other one is still handled."""
    current = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    defaults = (signal.SIG_DFL, signal.default_int_handler)
    if threading.current_thread() is not threading.main_thread() or any(
        h not in (*defaults, signal.SIG_IGN) for h in current.values()
    ):
        yield
        return
    handled = [s for s, h in current.items() if h in defaults]
    arrived: list[int] = []

    def stop(signum: int, _: Any) -> None:
        for each in handled:
            signal.signal(each, signal.SIG_IGN)  # a second signal: already stopping
        arrived.append(signum)
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        raise RunInterrupted(f"{what} stopped by {name}{then}", 128 + signum)

    previous = {s: signal.signal(s, stop) for s in handled}
    try:
        yield
    finally:
        if not arrived:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
