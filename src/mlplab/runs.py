"""Run dirs and the checkpoints in them: found, named and quoted (light: no torch import).

Used to resume (``ckpt_path=``), by Hydra to put a resumed run's own files into its own run
dir (the ``mlplab_run_dir`` and ``mlplab_hydra_subdir`` resolvers of ``conf/train.yaml``),
and for the resume command a run prints when it is interrupted.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from omegaconf import OmegaConf

from mlplab.errors import CheckpointError

RESUMABLE = ("last.ckpt", "interrupted.ckpt")  # written after every epoch / on a signal


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's checkpoint to continue from: the more recent of ``last.ckpt`` and
    ``interrupted.ckpt`` (both written atomically, so complete), or None."""
    found = [Path(run_dir) / "checkpoints" / name for name in RESUMABLE]
    found = [path for path in found if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns) if found else None


def find_checkpoint(ckpt_path: str | Path, in_run_dir: str | None = None) -> Path:
    """``ckpt_path`` as a checkpoint file: itself, the checkpoint ``in_run_dir`` of a run dir
    (by default its newest one to resume from), or for ``last`` the newest ``last.ckpt``
    under ``outputs/`` (the latest run)."""
    if str(ckpt_path) == "last":
        candidates = sorted(
            Path("outputs").glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
        )
        if not candidates:
            raise CheckpointError(
                "ckpt_path=last: no outputs/**/checkpoints/last.ckpt to resume from"
            )
        return candidates[-1].resolve()
    path = Path(ckpt_path).expanduser()
    if not path.is_dir():
        return path
    if in_run_dir is None:
        return newest_checkpoint(path) or path / "checkpoints" / RESUMABLE[0]
    return path / "checkpoints" / in_run_dir


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run dir holding ``checkpoint`` (``<run>/checkpoints/<name>.ckpt``), if it is one."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def resume_command(checkpoint: Path) -> str:
    """``python train.py ckpt_path=...``, quoted so that it works when pasted into a shell:
    Hydra's quotes around a path with spaces or other characters, the shell's around those."""
    path = str(checkpoint)
    if re.fullmatch(r"[\w./@+-]+", path, flags=re.ASCII):
        return f"python train.py ckpt_path={path}"
    hydra_value = '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "python train.py " + shlex.quote(f"ckpt_path={hydra_value}")


def _run_dir(ckpt_path: str | None, default: str) -> str:
    """hydra.run.dir: a resumed run's own dir (so Hydra's files and log go there), else
    ``default``."""
    if not ckpt_path:
        return default
    try:
        checkpoint = find_checkpoint(ckpt_path)
    except CheckpointError:
        return default  # train() reports it in one line
    run_dir = run_dir_of(checkpoint) if checkpoint.is_file() else None
    return str(run_dir) if run_dir is not None else default


def _hydra_subdir(ckpt_path: str | None, stamp: str) -> str:
    """hydra.output_subdir: ``.hydra``, or for a resumed run ``.hydra/resumed-<stamp>`` (the
    run's original Hydra files stay as they are)."""
    return f".hydra/resumed-{stamp}" if ckpt_path else ".hydra"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("mlplab_run_dir", _run_dir, replace=True)
    OmegaConf.register_new_resolver("mlplab_hydra_subdir", _hydra_subdir, replace=True)
