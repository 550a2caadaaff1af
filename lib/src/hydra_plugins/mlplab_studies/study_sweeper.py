"""Hydra's Optuna sweeper, with a study stored in a database that continues when the same
sweep runs again (``hparams_search=optuna hydra.sweeper.storage=sqlite:///study.db``).

Hydra's sweeper loads an existing study but then repeats its trials (the sampler's seed is
fixed) and numbers the new jobs from 0 again (hydra #3328). Here, when the study already
holds trials:

- the sampler is built again with ``seed + <trials in the study>``: new trials, and the same
  ones again for the same history (reproducible);
- jobs are numbered after the study's trials (job ``n`` is trial ``n``), so no job dir of
  an earlier run is overwritten even in the same sweep dir;
- after the sweep, ``study.csv`` in the sweep dir lists every trial of the study, and the
  log says how many there are. Trials left RUNNING by a sweep that was killed stay so in the
  storage (Optuna 2.10 has no heartbeat here); they are listed, and TPE ignores them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

from mlplab.rundir import atomic_path

log = logging.getLogger(__name__)
STUDY_FILE = "study.csv"


class StudySweeper(OptunaSweeper):
    """:class:`OptunaSweeper` whose stored studies continue (see the module docstring)."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        impl = self.sweeper
        database = str(impl.storage or "").removeprefix("sqlite:///")
        if database != str(impl.storage or "") and database not in ("", ":memory:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file
        earlier = _trials(impl.storage, impl.study_name)
        _refuse_taken_job_dirs(Path(config.hydra.sweep.dir), len(earlier))
        if not earlier:
            return
        impl.job_idx = len(earlier)  # after OptunaSweeperImpl.setup, which sets it to 0
        sampler = config.hydra.sweeper.sampler
        seed = sampler.get("seed")
        if seed is not None:
            impl.sampler = instantiate(sampler, seed=int(seed) + len(earlier))
        running = sum(1 for t in earlier if t.state.name == "RUNNING")
        left = f", {running} left running by a stopped sweep" if running else ""
        log.info(
            "study %s continues after its %d trials%s: sampler seed %s + %d, jobs numbered from %d",
            impl.study_name,
            len(earlier),
            left,
            seed,
            len(earlier),
            len(earlier),
        )

    def sweep(self, arguments: list[str]) -> None:
        try:
            return super().sweep(arguments)
        finally:
            self._write_study()

    def _write_study(self) -> None:
        impl = self.sweeper
        if impl.storage is None:
            return
        import optuna

        study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
        frame = study.trials_dataframe()
        path = Path(impl.sweep_dir) / STUDY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        states = frame["state"].value_counts().to_dict() if len(frame) else {}
        log.info(
            "study %s: %d trials in all (%s): %s",
            impl.study_name,
            len(frame),
            ", ".join(f"{n} {s.lower()}" for s, n in states.items()),
            path,
        )


def _refuse_taken_job_dirs(sweep_dir: Path, first_job: int) -> None:
    """A sweep dir may hold the study's earlier jobs (numbered below its trial count), never
    a job dir the new jobs would write into: that is another sweep's (one writer a dir)."""
    from mlplab.rundir import RunDirTaken

    taken = sorted(
        int(p.parent.name)
        for p in sweep_dir.glob("*/.hydra")
        if p.parent.name.isdigit() and int(p.parent.name) >= first_job
    )
    if taken:
        raise RunDirTaken(
            f"{sweep_dir} holds job dirs {', '.join(map(str, taken[:5]))} of another sweep, "
            f"where this study's next jobs (from {first_job}) would go: choose a new "
            "hydra.sweep.dir (or the study storage those jobs belong to)"
        )


def _trials(storage: Any, study_name: str | None) -> list[Any]:
    """The trials already in the stored study; none without storage or before it exists."""
    if storage is None or study_name is None:
        return []
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:  # optuna 2.10: no study of that name yet
        return []
