"""A real SLURM cluster: submitit sweeps, DDP across SLURM tasks, requeued jobs that resume.

The cluster is the machine's own single-node SLURM (slurmctld, slurmd, munge): one that
already answers ``sinfo``, or one started by ``$MLPLAB_SLURM_SETUP`` (default: the
``shared/slurm/start-local-slurm.sh`` beside the clone; it needs root). Without either the
tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, comparable, run_python, wait_for

pytestmark = pytest.mark.slow  # each test queues real SLURM jobs: 10 s to a minute

SETUP = Path(
    os.environ.get("MLPLAB_SLURM_SETUP", REPO.parent / "shared/slurm/start-local-slurm.sh")
)
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.mem_gb=2"]
# Small batches give long epochs (219 steps on the bundled digits), and after the signal
# lands (once epoch 1 is saved) 5 epochs are left: room for SLURM's signal path on any machine.
LONG_EPOCHS = [
    "data.batch_size=16",
    "trainer.max_epochs=6",
    "trainer.enable_progress_bar=false",
]


def _answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    if _answers():
        return
    if not SETUP.is_file():
        pytest.skip(f"no SLURM cluster answers sinfo and no setup script at {SETUP}")
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM cluster needs root")
    done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not _answers():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the local SLURM cluster did not start: {last}")


def sweep(*overrides: str, sweep_dir: Path) -> subprocess.CompletedProcess:
    return run_python(
        "train.py", "-m", *SLURM, *overrides, f"hydra.sweep.dir={sweep_dir}", timeout=1200
    )


def submitit_folder(sweep_dir: Path, job: str) -> Path:
    """submitit's folder of a sweep job: ``<array id>_<job>``, or ``<id>`` for a lone job."""
    folders = [p for p in (sweep_dir / ".submitit").iterdir() if list(p.glob("*_log.out"))]
    named = [p for p in folders if p.name.endswith(f"_{job}")]
    (folder,) = named or folders
    return folder


def job_log(sweep_dir: Path, job: str, task: int = 0) -> str:
    """What a SLURM job's task printed (submitit's per-task log), all restarts included."""
    folder = submitit_folder(sweep_dir, job)
    out = folder / f"{folder.name}_{task}_log.out"
    return out.read_text() + out.with_suffix(".err").read_text()


def local_run(*overrides: str, run_dir: Path) -> dict:
    done = run_python("train.py", *overrides, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_sweep_runs_its_jobs_through_sbatch_records_the_failing_one_and_reports_states(
    tmp_path,
):
    done = sweep(
        "hydra.launcher.cpus_per_task=1",
        "optimizer.lr=0.01,0.05,1e6",  # 1e6: the loss becomes NaN in epoch 1
        "trainer.max_epochs=2",
        sweep_dir=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # one job failed: the sweep did not succeed
    assert "error: 1 of 3 jobs did not succeed (failed)" in done.stderr
    output = done.stdout + done.stderr
    assert "Bypassing sacct error" not in output and "accounting storage" not in output
    states = re.findall(r"SLURM job (\d+_\d+): ([A-Z]+)", output)
    assert {job for job, _ in states} == {f"{states[0][0].split('_')[0]}_{i}" for i in range(3)}
    assert len(states) == len(set(states)), "a job state was reported more than once"

    summary = (tmp_path / "summary.md").read_text()
    assert "3 jobs: 2 ok, 1 failed, 0 incomplete." in summary
    failure = json.loads((tmp_path / "2" / "failure.json").read_text())
    assert failure["error"].startswith("DivergenceError: training loss became nan")
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "metrics.json").read_text())["test/acc"] > 0.1
        assert len(list((tmp_path / job / "wandb").glob("offline-run-*"))) == 1
        assert "Starting with JobEnvironment(job_id=" in job_log(tmp_path, job)


def test_ddp_across_two_slurm_tasks_matches_the_same_ddp_run_outside_slurm(tmp_path):
    run = ["trainer=ddp_cpu", "trainer.max_epochs=2", "logger=csv"]
    done = sweep(
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        *run,
        sweep_dir=tmp_path / "slurm",
    )
    assert done.returncode == 0, done.stderr
    job = tmp_path / "slurm" / "0"
    log = (job / "train.log").read_text()
    # srun started both processes; Lightning found SLURM's ranks and spawned nothing more
    members = re.findall(r"Initializing distributed: GLOBAL_RANK: (\d), MEMBER: (\d)/(\d)", log)
    assert sorted(members) == [("0", "1", "2"), ("1", "2", "2")]
    for task in (0, 1):
        assert "Starting with JobEnvironment" in job_log(tmp_path / "slurm", "0", task)
    slurm_metrics = json.loads((job / "metrics.json").read_text())

    local = local_run(*run, run_dir=tmp_path / "local")
    assert comparable(slurm_metrics) == comparable(local)


def start_sweep(sweep_dir: Path) -> subprocess.Popen:
    """A one-job SLURM sweep with long epochs, running in the background."""
    command = ["train.py", "-m", *SLURM, "hydra.launcher.cpus_per_task=2", *LONG_EPOCHS]
    return subprocess.Popen(
        [sys.executable, *command, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "interrupt",
    [
        # What SLURM sends `signal_delay_s` before the time limit of a submitit job
        pytest.param(["scancel", "--signal=USR2"], id="time-limit-signal"),
        pytest.param(["scontrol", "requeue"], id="scontrol-requeue"),
    ],
)
def test_a_requeued_job_resumes_from_its_own_checkpoint_with_identical_metrics(interrupt, tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(sweep_dir)
    wait_for(sweep_dir / "0" / "checkpoints" / "last.ckpt", process)  # epoch 1 is done
    subprocess.run([*interrupt, submitit_folder(sweep_dir, "0").name], check=True)
    _, err = process.communicate(timeout=1200)
    assert process.returncode == 0, err

    log = job_log(sweep_dir, "0")
    assert re.search(r"checkpoint saved, .*(submitit requeues|SLURM requeued) (SLURM )?job", log)
    assert "SLURM requeued this job (restart 1): continuing it" in log
    assert re.search(r"resuming \S+/sweep/0 from \S+/sweep/0/checkpoints/interrupted.ckpt", log)
    job = sweep_dir / "0"
    assert "1 jobs: 1 ok, 0 failed, 0 incomplete." in (sweep_dir / "summary.md").read_text()
    run_ids = {p.name.rsplit("-", 1)[1] for p in (job / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1, "the restarted job continues the same W&B run"

    reference = local_run(*LONG_EPOCHS, run_dir=tmp_path / "uninterrupted")
    assert comparable(json.loads((job / "metrics.json").read_text())) == comparable(reference)


def test_a_cancelled_job_leaves_a_checkpoint_and_its_log_names_the_resume_command(tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(sweep_dir)
    wait_for(sweep_dir / "0" / "checkpoints" / "last.ckpt", process)
    subprocess.run(["scancel", submitit_folder(sweep_dir, "0").name], check=True)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 1, err  # the sweep goes on, summarizes, and says so

    checkpoint = sweep_dir / "0" / "checkpoints" / "interrupted.ckpt"
    assert checkpoint.is_file()
    assert f"resume with: python train.py ckpt_path={checkpoint}" in job_log(sweep_dir, "0")
    assert "| interrupted |" in (sweep_dir / "summary.md").read_text()
