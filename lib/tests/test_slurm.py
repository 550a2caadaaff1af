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
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import optuna
import pytest
from optuna.trial import TrialState

from mlplab.slurm import slurm_command
from mlplab.studies import open_storage
from mlplab.testing import PROJECT, comparable, run_python

pytestmark = pytest.mark.slow  # each test queues real SLURM jobs: 10 s to a minute

SETUP = Path(
    os.environ.get("MLPLAB_SLURM_SETUP", PROJECT.parent / "shared/slurm/start-local-slurm.sh")
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
    done = slurm_command("sinfo", "-h", timeout=10)
    return done is not None and done.returncode == 0


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


def slurm(*args: str) -> str:
    """What a SLURM command printed (or why it failed), for checks and failure messages."""
    done = slurm_command(*args)
    if done is None:
        return f"{args[0]} did not run or did not answer in 30 s"
    return done.stdout.strip() or done.stderr.strip()


class Node(NamedTuple):
    name: str
    state: str  # sinfo's short form: idle, mix, alloc, drain, down, idle* (not responding)...
    cpus: int
    idle_cpus: int
    memory_mb: int
    reason: str


def nodes() -> list[Node]:
    """The cluster's nodes, as sinfo sees them now."""
    found = []
    for line in slurm("sinfo", "-h", "-N", "-o", "%N|%t|%C|%m|%E").splitlines():
        try:
            name, state, cpus, memory, reason = line.split("|", 4)
            _, idle, _, total = (int(count) for count in cpus.split("/"))  # alloc/idle/other/total
            found.append(Node(name, state, total, idle, int(memory), reason))
        except ValueError:  # not a node's line: sinfo's error, say
            continue
    return found


def unusable_nodes() -> str | None:
    """Why no node of the cluster takes new jobs (drained, down, not responding), or None."""
    found = nodes()
    if any(node.state in ("idle", "mix", "alloc", "comp") for node in found):
        return None
    return "; ".join(f"node {n.name} is {n.state} ({n.reason})" for n in found) or "no node"


def node_cpus() -> tuple[int, int]:
    """The CPUs of the cluster's largest node (the most one job can be given), and the most
    that one node has free now."""
    found = nodes()
    return max((n.cpus for n in found), default=0), max((n.idle_cpus for n in found), default=0)


def cluster_report() -> str:
    """The queue, the nodes and the daemons' last log lines: what a stuck job needs explained."""
    config = slurm("scontrol", "show", "config")
    logs = re.findall(r"^Slurm(?:ctld|d)LogFile\s*=\s*(\S+)", config, re.MULTILINE)
    tails = [
        f"--- {log}\n" + "\n".join(Path(log).read_text().splitlines()[-15:])
        for log in logs
        if Path(log).is_file()
    ]
    return "\n".join(
        [
            "--- squeue\n" + slurm("squeue", "--states=all", "-o", "%i %j %T %r %N"),
            "--- sinfo\n" + slurm("sinfo", "-N", "-o", "%N %t %c %m %E"),
            *tails,
        ]
    )


# A job pending for one of these never starts on its own.
NEVER_STARTS = (
    "ReqNodeNotAvail",
    "PartitionDown",
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionInactive",
    "NodeDown",
    "BadConstraints",
    "JobHeld",
    "launch failed",
)


class Queue:
    """One test's SLURM jobs, all under one job name: started, watched for a cluster that
    cannot run them (then the test fails at once, saying why), and, with their sweeps,
    stopped at the end, so that a job left behind never holds the node for the next test."""

    def __init__(self, tmp_path: Path) -> None:
        self.name = f"mlplab-test-{uuid.uuid4().hex[:8]}"
        self.tmp_path = tmp_path
        self.waiting_since: float | None = None
        self.processes: list[subprocess.Popen] = []

    def start(self, *overrides: str, sweep_dir: Path, cpus: int = 1) -> subprocess.Popen:
        """``train.py -m`` on SLURM in the background, once a node has ``cpus`` free for its
        job (a test skips on a cluster too small, or kept busy by others' jobs for minutes);
        its output goes to files beside it."""
        if (largest := node_cpus()[0]) < cpus:
            pytest.skip(f"needs a node of {cpus} CPUs; this cluster's largest has {largest}")
        deadline = time.monotonic() + 300
        while node_cpus()[1] < cpus:
            if time.monotonic() > deadline:
                pytest.skip(f"no node had {cpus} free CPUs for 300 s\n{cluster_report()}")
            time.sleep(1)
        command = [
            sys.executable,
            "train.py",
            "-m",
            *SLURM,
            f"hydra.launcher.name={self.name}",
            *overrides,
            f"hydra.sweep.dir={sweep_dir}",
        ]
        stem = f"{self.name}-{len(self.processes)}"  # each sweep's output apart
        self.out, self.err = self.tmp_path / f"{stem}.out", self.tmp_path / f"{stem}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.processes.append(
                subprocess.Popen(command, cwd=PROJECT, stdout=out, stderr=err, text=True)
            )
        return self.processes[-1]

    def wait(
        self,
        process: subprocess.Popen,
        until: Callable[[], bool] | None = None,
        timeout: float = 1200,
        watch: bool = True,
    ) -> subprocess.CompletedProcess:
        """Wait for ``until()`` while ``process`` runs, or for ``process`` to end; ``watch``
        fails the test at once on a job that cannot start (:meth:`blocked`)."""
        deadline = time.monotonic() + timeout
        next_check = 0.0
        while not (until() if until else process.poll() is not None):
            assert until is None or process.poll() is None, f"the sweep ended: {self.output()}"
            if watch and time.monotonic() > next_check:
                next_check = time.monotonic() + 2
                if problem := self.blocked():
                    pytest.fail(f"{problem}\n{cluster_report()}")
            if time.monotonic() > deadline:
                pytest.fail(f"still waiting after {timeout:.0f} s\n{cluster_report()}")
            time.sleep(0.05)
        return subprocess.CompletedProcess(process.args, process.poll(), *self.outputs())

    def blocked(self) -> str | None:
        """Why this test's jobs cannot start, or None while they can (or do)."""
        if problem := unusable_nodes():
            return f"the cluster takes no jobs: {problem}"
        queued = slurm("squeue", "-h", "-n", self.name, "-t", "PENDING", "-o", "%i|%r")
        pending = [line.split("|", 1) for line in queued.splitlines() if "|" in line]
        for job, reason in pending:
            if reason.startswith(NEVER_STARTS):
                return f"SLURM job {job} cannot start: {reason}"
        running = slurm("squeue", "-h", "-t", "RUNNING,COMPLETING,CONFIGURING", "-o", "%j")
        others = [name for name in running.splitlines() if name != self.name]
        if not pending or self.name in running.splitlines():  # this test's jobs go on
            self.waiting_since = None
            return None
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        waited = time.monotonic() - self.waiting_since
        if not others and waited > 120:  # SLURM's schedulers pass in < 60 s
            return f"SLURM jobs {pending} wait on a cluster that runs nothing"
        if others and waited > 300:
            pytest.skip(f"others' jobs held the cluster for 300 s\n{cluster_report()}")
        return None

    def outputs(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()

    def output(self) -> str:
        return "\n".join(self.outputs())

    def cancel(self) -> None:
        """Stop this test's sweeps, cancel whatever of its jobs is still queued, and wait
        until it is gone."""
        for process in self.processes:
            process.kill()
            process.wait()
        subprocess.run(["scancel", "-n", self.name], capture_output=True, timeout=30)
        deadline = time.monotonic() + 120
        while slurm("squeue", "-h", "-n", self.name, "-o", "%i") and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.fixture
def queue(tmp_path: Path):
    if problem := unusable_nodes():
        pytest.skip(f"the local SLURM cluster takes no jobs: {problem}")
    jobs = Queue(tmp_path)
    yield jobs
    jobs.cancel()


def sweep(
    queue: Queue, *overrides: str, sweep_dir: Path, cpus: int = 1
) -> subprocess.CompletedProcess:
    return queue.wait(queue.start(*overrides, sweep_dir=sweep_dir, cpus=cpus))


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
    queue, tmp_path
):
    done = sweep(
        queue,
        "hydra.launcher.cpus_per_task=1",
        "optimizer.lr=0.01,0.05,1e6",  # 1e6: the loss becomes NaN in epoch 1
        "trainer.max_epochs=2",
        sweep_dir=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # one job failed: the sweep did not succeed
    assert "error: 1 of 3 jobs did not succeed (failed)" in done.stderr
    output = done.stdout + done.stderr
    assert "Bypassing sacct error" not in output and "accounting storage" not in output
    states = re.findall(r"SLURM job (\d+_\d+): ([A-Z]+(?: \(.+\))?)", output)
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


def test_ddp_across_two_slurm_tasks_matches_the_same_ddp_run_outside_slurm(queue, tmp_path):
    run = ["trainer=ddp_cpu", "trainer.max_epochs=2", "logger=csv"]
    done = sweep(
        queue,
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        *run,
        sweep_dir=tmp_path / "slurm",
        cpus=2,
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


def start_sweep(queue: Queue, sweep_dir: Path) -> subprocess.Popen:
    """A one-job SLURM sweep with long epochs, running in the background, once its epoch 1
    is saved."""
    cpus = min(2, node_cpus()[0])
    process = queue.start(
        f"hydra.launcher.cpus_per_task={cpus}", *LONG_EPOCHS, sweep_dir=sweep_dir, cpus=cpus
    )
    queue.wait(process, until=(sweep_dir / "0" / "checkpoints" / "last.ckpt").exists)
    return process


@pytest.mark.parametrize(
    "interrupt",
    [
        # What SLURM sends `signal_delay_s` before the time limit of a submitit job
        pytest.param(["scancel", "--signal=USR2"], id="time-limit-signal"),
        pytest.param(["scontrol", "requeue"], id="scontrol-requeue"),
    ],
)
def test_a_requeued_job_resumes_from_its_own_checkpoint_with_identical_metrics(
    interrupt, queue, tmp_path
):
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(queue, sweep_dir)
    subprocess.run([*interrupt, submitit_folder(sweep_dir, "0").name], check=True)
    done = queue.wait(process)
    assert done.returncode == 0, done.stderr

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


def test_a_cancelled_job_leaves_a_checkpoint_and_its_log_names_the_resume_command(queue, tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(queue, sweep_dir)
    subprocess.run(["scancel", submitit_folder(sweep_dir, "0").name], check=True)
    done = queue.wait(process)
    assert done.returncode == 1, done.stderr  # the sweep goes on, summarizes, and says so

    checkpoint = sweep_dir / "0" / "checkpoints" / "interrupted.ckpt"
    assert checkpoint.is_file()
    assert f"resume with: python train.py ckpt_path={checkpoint}" in job_log(sweep_dir, "0")
    assert "| interrupted |" in (sweep_dir / "summary.md").read_text()


def test_a_job_no_node_can_hold_is_reported_pending_with_slurms_reason(queue, tmp_path):
    too_many = node_cpus()[0] + 1  # SLURM queues it and keeps it waiting: PartitionConfig
    process = queue.start(f"hydra.launcher.cpus_per_task={too_many}", sweep_dir=tmp_path / "s")
    reported = re.compile(r"SLURM job \d+: PENDING \((PartitionConfig|Resources)\)")
    # squeue is read 0, 2, 4, 8, 16... s after submitting; the job waiting is the point here
    queue.wait(
        process, until=lambda: bool(reported.search(queue.output())), timeout=300, watch=False
    )
    # The sweep would wait for good: the fixture stops it and cancels the job.


def test_a_job_sbatch_refuses_fails_the_sweep_in_one_line_naming_sbatchs_error(queue, tmp_path):
    # In GB: more memory than any node has
    too_much = max((n.memory_mb for n in nodes()), default=0) // 1024 + 2
    done = sweep(queue, f"hydra.launcher.mem_gb={too_much}", sweep_dir=tmp_path / "s")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: submitit could not start the jobs: FailedJobError: sbatch: ")
    assert "Traceback" not in done.stderr


def test_two_sweeps_on_slurm_share_one_study_and_prune_through_its_storage(queue, tmp_path):
    """Two SLURM allocations sharing a file system: two sweeps started at once, each with
    its own sweep dir, run one study stored in one journal file; each submits its trials as
    a job array, and the jobs report to, are pruned by, and tell their trials through it."""
    journal = tmp_path / "shared" / "study.journal"
    study = [
        "debug=smoke", "hparams_search=optuna", "trainer.max_epochs=3",
        "hydra.launcher.cpus_per_task=1", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3",
        f"hydra.sweeper.storage={journal}",
        "hydra.sweeper.pruner={name:median,n_startup_trials:1}",
    ]  # fmt: skip
    sweeps = [queue.start(*study, sweep_dir=tmp_path / name) for name in ("a", "b")]
    outputs = []
    for process, stem in zip(sweeps, ("-0", "-1"), strict=True):
        queue.wait(process)
        outputs.append((tmp_path / f"{queue.name}{stem}.err").read_text())
        assert process.returncode == 0, outputs[-1][-3000:]
    found = optuna.load_study(study_name="mlplab_optuna", storage=open_storage(str(journal)))
    trials = found.get_trials()
    assert [t.number for t in trials] == list(range(6))  # no number twice
    jobs = {name: sorted(p.name for p in (tmp_path / name).iterdir() if p.name.isdigit())
            for name in ("a", "b")}  # fmt: skip
    assert sorted(jobs["a"] + jobs["b"], key=int) == [str(n) for n in range(6)]  # no dir twice
    for trial in trials:
        (job_dir,) = [
            tmp_path / n / str(trial.number) for n in jobs if str(trial.number) in jobs[n]
        ]
        assert trial.user_attrs["job_dir"] == str(job_dir)
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), trial
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert len(trial.intermediate_values) == metrics["epochs_trained"]
        assert ("pruned" in metrics) == (trial.state == TrialState.PRUNED)
    for name in ("a", "b"):  # each sweep's trials ran as one SLURM job array
        logs = sorted((tmp_path / name / ".submitit").glob("*_*/*_0_log.out"))
        assert len(logs) == 3 and len({p.parent.name.split("_")[0] for p in logs}) == 1
        assert all("Starting with JobEnvironment(job_id=" in p.read_text() for p in logs)
