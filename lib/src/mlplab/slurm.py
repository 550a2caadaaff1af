"""Running under SLURM: requeued jobs that resume by themselves, and sweeps that report states.

What each signal does to a training job under SLURM (docs/sweeps.md, "SLURM"):

- the **requeue signal**: SIGUSR2, which hydra-submitit-launcher asks SLURM to send
  ``signal_delay_s`` before the time limit, or SIGUSR1 (Lightning's, for a plain ``sbatch
  --signal=USR1@90 --requeue``). Training stops after the current batch, ``interrupted.ckpt``
  is saved, and the job is requeued: by submitit's own handler (which resubmits the same Hydra
  job) or else by ``scontrol requeue``. The restarted job finds its own run dir's newest
  checkpoint and continues from it (:func:`mlplab.resume.continued_config`).
- **SIGTERM** (``scancel``, or preemption without requeue): training stops after the current
  batch, ``interrupted.ckpt`` is saved, and the job's log names the command that resumes it.
- ``scontrol requeue`` of a running job kills it (SIGTERM, then SIGKILL): the restarted job
  continues from the newest checkpoint that was complete.

Light to import (no torch): Hydra instantiates :class:`SlurmJobStates` at startup.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def slurm_job_id() -> str | None:
    """This process's SLURM job id (``<array job>_<task>`` for an array task), else None."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def restart_count() -> int:
    """How many times SLURM has requeued this job (0 outside SLURM or on the first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def slurm_command(*args: str, timeout: float = 30) -> subprocess.CompletedProcess | None:
    """Run a SLURM client command (``scontrol``, ``sacct``); None if it could not run."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


class RequeueOnSignal:
    """Under SLURM, turn the requeue signal into a clean stop, a checkpoint and a requeue.

    Used by :class:`~mlplab.checkpoints.RunStateInCheckpoint` while ``fit`` runs: the signal
    is re-sent to this process as SIGTERM, on which Lightning stops at the next batch
    boundary (never in the middle of an optimizer step) and ``interrupted.ckpt`` is saved.
    Then :meth:`requeue` hands over to the handler that was there before (submitit's, which
    resubmits the job and exits), or requeues the job itself with ``scontrol requeue``.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        # Several tasks (DDP across SLURM tasks) each get the signal, and a stop that each
        # rank decides on its own can leave the others waiting in a collective: there the
        # signal goes straight to submitit (or Lightning), which requeues at once, and the
        # job resumes from last.ckpt, the last finished epoch.
        tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
        if slurm_job_id() is None or tasks > 1 or self._previous:
            return
        try:
            for signum in REQUEUE_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # not the main thread: signals cannot be handled here
            self._previous.clear()

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.warning(
            f"{signal.Signals(signum).name}: stopping after this batch to save a checkpoint "
            "and requeue the job"
        )
        self.received = signum
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's graceful stop at a batch boundary

    def requeue(self, checkpoint: Path) -> str:
        """Requeue this job after its checkpoint was saved; returns what was done (one line).
        submitit's handler does not return: it resubmits the job and exits the process."""
        signum = self.received
        previous = self._previous.get(signum) if signum is not None else None
        self.uninstall()
        job = slurm_job_id()
        if signum is None:  # SIGTERM from SLURM itself: `scontrol requeue`, preemption
            return f"SLURM requeued job {job}: it continues from {checkpoint} when it restarts"
        if callable(previous):  # submitit's: the first task requeues and exits, others return
            log.warning(f"checkpoint saved, {checkpoint}: submitit requeues SLURM job {job}")
            previous(signum, None)
            return f"submitit requeues SLURM job {job}"
        if os.environ.get("SLURM_PROCID", "0") != "0":  # one requeue per job, not per task
            return f"SLURM job {job} is requeued by its first task"
        done = slurm_command("scontrol", "requeue", str(job))
        if done is None or done.returncode != 0:
            stderr = done.stderr if done is not None else ""
            reason = (stderr.strip().splitlines() or ["scontrol failed"])[-1]
            return f"could not requeue SLURM job {job} ({reason})"
        return f"SLURM job {job} requeued: it continues from {checkpoint} when it restarts"


class SlurmJobStates(HydraCallback):
    """A ``hydra/launcher=submitit_slurm`` sweep reports each job's state once, when it
    changes, and reads the states from ``squeue`` where SLURM keeps no accounting database
    (``sacct`` fails). Without this, submitit warns "Bypassing sacct error ... status may be
    inaccurate" three times at every poll."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if not launcher.endswith("submitit_launcher.SlurmLauncher"):
            return
        import submitit

        submitit.SlurmJob.watcher = _job_watcher()  # shared by all SlurmJobs; none exists yet


def _job_watcher() -> Any:
    from submitit.slurm.slurm import SlurmInfoWatcher

    class JobWatcher(SlurmInfoWatcher):
        """submitit's job watcher, with squeue standing in for a failing sacct, and the
        state changes logged."""

        def __init__(self, delay_s: int = 60) -> None:
            super().__init__(delay_s=delay_s)
            self.use_squeue = not _sacct_works()
            self.reported: dict[str, str] = {}
            if self.use_squeue:
                log.info("sacct has no accounting database here: job states come from squeue")

        def _make_command(self) -> list[str] | None:
            command = super()._make_command()
            if command is None or not self.use_squeue:
                return command
            # All of this user's jobs: `-j` fails outright once one id has left squeue.
            return ["squeue", "--me", "--noheader", "--states=all", "-o", "%i|%T|%N|%r"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            if self.use_squeue:
                text = string.decode() if isinstance(string, bytes) else string
                string = "JobID|State|NodeList|Reason\n" + text
            info = super().read_info(string)
            arrays = {job_id.split("_")[0] for job_id in info if "_" in job_id}
            if self.use_squeue:  # squeue forgets ended jobs (MinJobAge): an ended job is done
                for job_id in self._registered - self._finished - info.keys() - arrays:
                    info[job_id] = {"State": "ENDED"}
            for job_id in sorted((self._registered & info.keys()) - arrays):
                state = info[job_id].get("State", "UNKNOWN").split(" ")[0]
                reason = info[job_id].get("Reason")  # squeue's: why it waits (Resources, ...)
                if state == "PENDING" and reason not in (None, "", "None"):
                    state += f" ({reason})"
                if self.reported.get(job_id) != state:
                    self.reported[job_id] = state
                    node = info[job_id].get("NodeList")
                    log.info(f"SLURM job {job_id}: {state}" + (f" on {node}" if node else ""))
            return info

    return JobWatcher(delay_s=600)


def requeued_by_slurm() -> bool:
    """Whether SLURM is requeueing this job right now (``scontrol requeue``, preemption in
    requeue mode), so that its SIGTERM is no cancellation: SLURM counts the restart before
    it signals the job."""
    job = slurm_job_id()
    done = slurm_command("scontrol", "show", "job", "--oneliner", job, timeout=10) if job else None
    restarts = re.search(r"\bRestarts=(\d+)", done.stdout) if done is not None else None
    return restarts is not None and int(restarts.group(1)) > restart_count()


def _sacct_works() -> bool:
    done = slurm_command("sacct", "--noheader", "-j", "1")
    return done is not None and done.returncode == 0
