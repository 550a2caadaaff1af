"""A run dir has one writer, and a file a user reads appears whole or not at all.

- :func:`atomic_file` and :func:`atomic_path` write a file under a temporary name in its own
  folder, flush it to disk and rename it into place: a kill, a crash or a full disk leaves
  the earlier file (or none), never part of one.
- :func:`writing_run_dir` makes the calling process the one writer of a run dir: it holds an
  advisory lock (``flock``) on ``<run dir>/.lock`` while it writes, which the kernel
  releases however the process ends (SIGKILL included), so a killed run never blocks the
  command that resumes it. A new run refuses a dir holding another run's files.
- :class:`OneWriterPerRunDir`, a Hydra callback, claims the dir before Hydra writes its own
  files into it (``.hydra/``, the log), so a refused run changes nothing there; a sweep
  claims its sweep dir the same way.

Light to import: Hydra instantiates the callback before torch loads.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mlplab.errors import MlplabError

LOCK_FILE = ".lock"
# What a run leaves in its dir (train, eval, predict, export, a sweep's job or summary):
# a dir holding any of these belongs to that run.
RUN_FILES = (
    "metrics.json",
    "report.md",
    "checkpoints",
    "csv",
    "wandb",
    "tensorboard",
    "predictions.csv",
    "model",
    "failure.json",
)
HYDRA_FILES = (".hydra", "multirun.yaml")  # written by Hydra before a run's task starts


class RunDirTaken(MlplabError):
    """A run dir holds another run's files, or another process is writing it."""


# -- files that appear whole ----------------------------------------------------------------
def umask_mode(folder: bool = False) -> int:
    """The mode ``open`` or ``mkdir`` would give a new file (or folder) under this process's
    umask. A temporary file is created 0600 (a folder 0700); renamed into place with that
    mode, a finished run's files would be unreadable to the colleagues its umask allows."""
    try:  # Linux says it without changing it (changing it races with other threads)
        status = Path("/proc/self/status").read_text()
        umask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the file to (by any library); renamed to
    ``path`` when the block ends without error, deleted otherwise. The temporary name keeps
    no suffix of ``path``: writers that guess a format from it need it said (``format=``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(name)
    try:  # from the moment the file exists: a signal here must not leave it behind
        os.fchmod(fd, umask_mode())
        os.close(fd)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` whose contents appear at ``path`` whole, when the block ends."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as file:
        yield file


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_file(path, encoding="utf-8") as file:
        file.write(text)
    return Path(path)


def write_json(path: str | Path, value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2) + "\n")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut (where the file system allows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders: nothing more to do there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- one writer per run dir -----------------------------------------------------------------
_held: dict[Path, int] = {}  # run dir -> the open lock file this process holds
_made: set[Path] = set()  # the run dirs this process created (to lock them)


def is_other_rank() -> bool:
    """Whether this process is a DDP rank other than the first: it writes into the run dir
    that its rank 0 holds (Lightning starts it with the same ``hydra.run.dir``; SLURM starts
    a job's tasks in the same job dir)."""
    ranks = ("RANK", "LOCAL_RANK", "SLURM_PROCID")  # SLURM: the tasks of one srun/submitit job
    return any(os.environ.get(k, "0") not in ("", "0") for k in ranks)


def run_files(folder: str | Path, with_hydra: bool = True) -> list[str]:
    """The names of the run files in ``folder`` (Hydra's own too, unless ``with_hydra`` is
    false), an empty folder counting as absent."""
    folder = Path(folder)
    names = RUN_FILES + (HYDRA_FILES if with_hydra else ())
    found = [n for n in names if _present(folder / n)]
    if with_hydra:  # a sweep's jobs, each in a numbered dir with its .hydra
        jobs = [p.parent.name for p in folder.glob("*/.hydra")]
        if jobs:
            found.append(f"{len(jobs)} job dir{'s' * (len(jobs) != 1)}")
    return found


def _present(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def lock_run_dir(folder: str | Path) -> None:
    """Hold ``folder``'s lock for the rest of this process (again: nothing to do); refuse
    in one line if another process holds it."""
    folder = Path(folder).absolute()
    if folder in _held or is_other_rank():
        return
    try:
        if not folder.exists():
            _made.add(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise RunDirTaken(
                f"cannot write into {folder} ({exc.strerror}): a run writes its files into "
                "its run dir; choose a writable one (hydra.run.dir=...), or copy a run there "
                "and continue the copy (python train.py ckpt_path=<copy>)"
            ) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirTaken(
            f"{folder} is being written by another process ({holder}): a run dir has one "
            "writer; wait for that one to end (a killed one lets go at once), or choose "
            "another dir"
        ) from None
    _held[folder] = fd  # nothing is written into it: a refused command changes no file


def discard_unstarted_run(folder: str | Path, log_name: str) -> None:
    """Remove a run dir that this process claimed and a refusal ended before the run wrote
    anything (a bad value, a data set not found): Hydra's ``.hydra/`` (its three files), the
    lock and an empty ``log_name``, then the dir if this process made it. The same command,
    mended, then runs in the same dir. A dir holding anything else (a checkpoint, a line of
    log, a file of the user's) is left whole."""
    folder = Path(folder).absolute()
    if folder not in _held or not folder.is_dir():
        return
    hydra_files = {"config.yaml", "hydra.yaml", "overrides.yaml"}
    entries = list(folder.iterdir())
    for entry in entries:
        if entry.name == ".hydra":
            if not {f.name for f in entry.iterdir()} <= hydra_files:
                return
        elif entry.name == log_name:
            if entry.stat().st_size > 0:
                return
        elif entry.name != LOCK_FILE:
            return
    for entry in entries:  # the lock stays held until this process exits
        if entry.is_dir():
            for file in entry.iterdir():
                file.unlink()
            entry.rmdir()
        else:
            entry.unlink()
    if folder in _made:
        folder.rmdir()


def unlock_run_dir(folder: str | Path) -> None:
    """Let go of ``folder``'s lock (a worker process that runs one job after another)."""
    fd = _held.pop(Path(folder).absolute(), None)
    if fd is not None:
        os.close(fd)  # the lock goes with the last open descriptor


def unlock_all() -> None:
    """Let go of every run dir this process holds (a command's end, the process going on)."""
    for folder in list(_held):
        unlock_run_dir(folder)
    _made.clear()


def _read_holder(fd: int) -> str:
    """Who holds the lock on ``fd``'s file, from the kernel's table (Linux), else unsaid."""
    inode = os.fstat(fd).st_ino
    try:
        table = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "its pid unknown here"
    for line in table:
        fields = line.split()  # 1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
            return f"pid {fields[4]}"
    return "on another machine, or just ending"


def refuse_taken(folder: Path, found: list[str], command: str) -> None:
    """Raise :class:`RunDirTaken` if ``found`` names run files in ``folder``."""
    if not found:
        return
    if command == "train.py" and (folder / "checkpoints").is_dir():
        how = f"continue that run with: python train.py ckpt_path={folder}"
    elif command == "train.py -m":
        how = "continue one of its jobs with: python train.py ckpt_path=<its job dir>"
    else:
        how = "inspect or delete it"
    option = "hydra.sweep.dir" if command.endswith("-m") else "hydra.run.dir"
    raise RunDirTaken(
        f"{folder} holds another run ({', '.join(found)}): {command} starts in an empty dir "
        f"(leave {option} unset, or choose a new one); {how}"
    )


class OneWriterPerRunDir(Callback):
    """Hydra callback: claim the run dir (or sweep dir) before Hydra writes into it.

    Args:
        command: the entry point, for the messages (``train.py``, ``eval.py``, ...).
        continues: the config key that names a run to continue (``ckpt_path`` for
            ``train.py``): then the dir is that run's own, and only locked.
    """

    def __init__(self, command: str = "train.py", continues: str | None = None) -> None:
        self.command, self.continues = command, continues

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_other_rank():
            return
        folder = Path(str(config.hydra.run.dir))
        with _exit_on_refusal():
            if not self._continuing(config, folder):
                refuse_taken(folder, run_files(folder), self.command)
            lock_run_dir(folder)

    def _continuing(self, config: DictConfig, folder: Path) -> bool:
        """Whether this run continues the run in ``folder``: a checkpoint in it is resumed,
        or it is a SLURM job restarted after a requeue."""
        from mlplab.slurm import restart_count, slurm_job_id

        if slurm_job_id() is not None and restart_count() > 0:
            return True
        if not self.continues or not OmegaConf.select(config, self.continues):
            return False
        from mlplab.resume import find_checkpoint, run_dir_of

        try:
            checkpoint = find_checkpoint(str(OmegaConf.select(config, self.continues)))
        except MlplabError:
            return False  # the run reports it in one line
        run_dir = run_dir_of(checkpoint.absolute()) if checkpoint.is_file() else None
        return run_dir is not None and run_dir.resolve() == folder.resolve()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        if str(OmegaConf.select(config, "hydra.sweeper._target_")).endswith(".StudySweeper"):
            # An Optuna study's sweeps share its sweep dir, each job in its trial's folder:
            # its sweeper refuses job dirs that are not the study's.
            return
        with _exit_on_refusal():
            refuse_taken(folder, run_files(folder), f"{self.command} -m")
            lock_run_dir(folder)


@contextmanager
def _exit_on_refusal() -> Iterator[None]:
    """A refusal as one ``error:`` line and exit 2: Hydra turns a callback's exceptions into
    warnings and runs on, so the callback ends the command itself, before Hydra writes."""
    try:
        yield
    except (MlplabError, OSError) as exc:
        if isinstance(exc, OSError):
            where = exc.filename or "the run dir"
            message = f"cannot create {where}: {exc.strerror}; choose a writable run dir"
        else:
            message = str(exc)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def writing_run_dir(
    folder: str | Path, *, continuing: bool = False, command: str = "train.py"
) -> Iterator[None]:
    """Make this process the one writer of run dir ``folder`` for the block: lock it, and
    unless the run ``continuing`` is the one whose files are there, refuse a dir holding
    another run's files (one line naming them and how to continue that run). Hydra's own
    files are not looked at here: by the time a task runs, Hydra has written them for this
    run. The lock is let go after the block unless this process held it before (the run's
    own Hydra callback holds it for the whole process)."""
    folder = Path(folder)
    held = folder.absolute() in _held
    if not is_other_rank():
        if not continuing:
            refuse_taken(folder, run_files(folder, with_hydra=False), command)
        lock_run_dir(folder)
    try:
        yield
    finally:
        if not held:
            unlock_run_dir(folder)
