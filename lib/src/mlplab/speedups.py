"""Speed-ups that live outside the classes a user edits, each with its measured reason."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this module is imported by train.py before the config is checked
    import lightning as L

# The callback hooks Lightning calls on every batch (training: 6 of them per step).
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_unused_batch_hooks(callbacks: Iterable[L.Callback]) -> None:
    """Let Lightning skip the per-batch hooks a callback does not implement.

    Lightning calls every hook on every callback, implemented or not, each inside a profiler
    context named after the callback's ``state_key`` (a ``repr`` of its arguments for
    ``ModelCheckpoint`` and ``EarlyStopping``). With mlplab's 13 default callbacks that is
    78 calls a training step, of which 60 are the base class's no-ops: ~0.1 ms a step, ~4%
    of the lesson MLP's epoch on a 2-core CPU. Lightning skips a hook attribute that is not
    callable, so the unimplemented ones are set to None on the instance; implemented hooks
    and every other hook (epoch, fit, checkpoint) are called as before.
    """
    import lightning as L

    for callback in callbacks:
        for name in BATCH_HOOKS:
            if getattr(type(callback), name) is getattr(L.Callback, name):
                setattr(callback, name, None)


# A process that runs commands and goes on after them (mlplab.testing.run_command, a notebook)
# sets this to False: its commands then return as functions do.
exit_after_command = True


def exit_without_teardown(main: Callable[[], object]) -> None:
    """Run a script's ``main`` and, when it succeeds, end the process without the
    interpreter's teardown.

    After the last line of a run, CPython frees every module and object one by one: with
    torch, Lightning, W&B and matplotlib loaded that takes 0.6-0.8 s on a 2-core CPU, 10% of
    the default run's wall time, for nothing (the OS frees the memory at once). So on
    success the ``atexit`` handlers run (W&B's, logging's flush and close, ...), stdout and
    stderr are flushed, and the process exits with status 0. The usual way is kept for a
    failure (an exception, a non-zero ``SystemExit``: its traceback and status) and while
    another non-daemon thread runs (joblib's workers' managers, say), which the interpreter
    would join, in its own order, before the handlers.
    """
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if not exit_after_command or any(not thread.daemon for thread in others):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)
