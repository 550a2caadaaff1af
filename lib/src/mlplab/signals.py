"""Ctrl-C and SIGTERM: one record of the stop a signal asked for (:func:`stop_requested`),
which a sweep asks between its jobs and a training at its batch boundaries
(:class:`mlplab.checkpoints.StopSignals`); a command with nothing to save stops in one line
(:func:`stopped_by_signals`), and a write that must not be cut waits for its end."""

from __future__ import annotations

import contextlib
import os
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


# The signal that asked this command to stop, once one did. Its one owner: the phases that can
# stop cleanly ask it (a sweep before its next job, a job before it starts, a training at its
# next batch boundary: mlplab.checkpoints.StopSignals), instead of an exception that lands
# wherever the main thread happens to be.
STOP_REQUESTED: list[int] = []


def stop_requested() -> int | None:
    """The signal that asked this command to stop (SIGINT, SIGTERM), or None."""
    return STOP_REQUESTED[0] if STOP_REQUESTED else None


def request_stop(signum: int) -> bool:
    """Note that ``signum`` asked this command to stop; False when one had already."""
    if STOP_REQUESTED:
        return False
    STOP_REQUESTED.append(signum)
    return True


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"


def raise_if_stop_requested(what: str, then: str = "") -> None:
    """:class:`RunInterrupted` (exit 130, 143: ``"<what> stopped by Ctrl-C<then>"``) once a
    stop was requested."""
    signum = stop_requested()
    if signum is not None:
        raise RunInterrupted(f"{what} stopped by {signal_name(signum)}{then}", 128 + signum)


def _ours_to_handle() -> list[int] | None:
    """The stop signals a block may handle: None when it may not (not the main thread, or a
    handler of someone else's is installed: a parallel sweep's, a training's); else those
    with their default handling. One the process was started ignoring stays ignored
    (``nohup``, a shell's background job ignores Ctrl-C): the other one is still handled."""
    current = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    defaults = (signal.SIG_DFL, signal.default_int_handler)
    if threading.current_thread() is not threading.main_thread() or any(
        h not in (*defaults, signal.SIG_IGN) for h in current.values()
    ):
        return None
    return [s for s, h in current.items() if h in defaults]


@contextlib.contextmanager
def stop_requests(what: str) -> Iterator[None]:
    """Ctrl-C and SIGTERM during the block request a stop (:func:`stop_requested`), raising
    nothing: ``what`` (a sequential sweep) asks at its next safe point, and a job's
    training, whose own handler replaces this one while it fits, stops at its next batch
    boundary. A second signal changes nothing."""
    handled = _ours_to_handle()
    if not handled:
        yield
        return

    def note(signum: int, _: Any) -> None:
        if request_stop(signum):  # os.write: a handler may interrupt a print of the main code
            os.write(2, f"{signal_name(signum)}: stopping {what} at its next step\n".encode())

    previous = {s: signal.signal(s, note) for s in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def stopped_by_signals(what: str, then: str = "") -> Iterator[None]:
    """Ctrl-C and SIGTERM during the block as :class:`RunInterrupted` (exit 130, 143:
    ``"<what> stopped by Ctrl-C<then>"``), raised where the main thread is (a command with
    nothing to save: its unfinished file is dropped, :mod:`mlplab.rundir`), unless a handler
    of someone else's is installed already. After the first, the process is ending: a second
    one is ignored."""
    handled = _ours_to_handle()
    if not handled:
        yield
        return
    arrived: list[int] = []

    def stop(signum: int, _: Any) -> None:
        for each in handled:
            signal.signal(each, signal.SIG_IGN)  # a second signal: already stopping
        arrived.append(signum)
        request_stop(signum)
        raise RunInterrupted(f"{what} stopped by {signal_name(signum)}{then}", 128 + signum)

    previous = {s: signal.signal(s, stop) for s in handled}
    try:
        yield
    finally:
        if not arrived:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
