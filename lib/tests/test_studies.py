"""Optuna studies (mlplab.studies, mlplab.pruning and the sweeper of hparams_search=optuna):
real sweeps of train.py on the bundled digits, their studies read back through Optuna's
storage, and optuna-dashboard serving one."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.mlplab_studies.study_sweeper import _as_override, search_space
from mlplab.report import DEFERRED
from mlplab.studies import HEARTBEAT, StudyError, make_pruner, open_storage, storage_url
from mlplab.testing import PROJECT, run_command, wait_for

STUDY = ["debug=smoke", "hparams_search=optuna"]  # 5 batches an epoch, no loggers
PRUNING = [
    "trainer.max_epochs=4",
    "hydra.sweeper.n_trials=6",
    "hydra.sweeper.pruner={name:median,n_startup_trials:2}",
]


def sweep_command(*args: str, sweep_dir: Path) -> list[str]:
    return [sys.executable, "train.py", "-m", *STUDY, *args, f"hydra.sweep.dir={sweep_dir}"]


def start_sweep(
    *args: str, sweep_dir: Path, ignoring: signal.Signals | None = None, **env: str
) -> subprocess.Popen:
    """The sweep in a process of its own (``ignoring`` a signal from its start, as a shell's
    background job ignores Ctrl-C)."""
    return subprocess.Popen(
        sweep_command(*args, sweep_dir=sweep_dir),
        cwd=PROJECT, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(ignoring, signal.SIG_IGN)) if ignoring else None,
    )  # fmt: skip


def sweep(*args: str, sweep_dir: Path) -> subprocess.CompletedProcess:
    return run_command(*sweep_command(*args, sweep_dir=sweep_dir)[1:])


def trials(storage: Path | str, name: str = "mlplab_optuna") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=open_storage(str(storage)))
    return study.get_trials()


def study_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "study.csv") as f:
        return list(csv.DictReader(f))


def job_dirs(sweep_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit())


# -- the search space, storages and pruners -------------------------------------------------
def test_the_search_space_reads_hydras_sweep_syntax_and_the_command_lines_values_win():
    space, fixed = search_space(
        {
            "optimizer": "choice(sgd, adam)",
            "optimizer.lr": "tag(log, interval(0.0001, 0.1))",
            "model.hidden_sizes": "choice([256,128], [64])",
            "trainer.max_epochs": "range(2, 9, 3)",
            "data.batch_size": "int(interval(16, 64))",
            "seed": "7",
        },
        ["regularization.dropout=0.1,0.3", "optimizer=adam"],
    )
    assert space == {
        "optimizer.lr": FloatDistribution(0.0001, 0.1, log=True),
        "model.hidden_sizes": CategoricalDistribution(["[256,128]", "[64]"]),
        "trainer.max_epochs": IntDistribution(2, 8, step=3),
        "data.batch_size": IntDistribution(16, 64),
        "regularization.dropout": CategoricalDistribution([0.1, 0.3]),
    }
    assert fixed == ["seed=7", "optimizer=adam"]  # given on the command line: not searched
    # A sampled value goes back on the command line as it was written.
    assert [_as_override(v) for v in ("[256,128]", "sgd", "a,b", 1e-05, None)] == [
        "[256,128]",
        "sgd",
        "'a,b'",
        "1e-05",
        "null",
    ]
    with pytest.raises(StudyError, match="use choice"):
        search_space({"x": "glob(*)"}, [])


def test_storages_are_absolute_for_every_job_and_pruners_are_optunas(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_url(None, "sweep") == str(tmp_path / "sweep" / "optuna.journal")
    assert storage_url("sqlite:///s.db", "sweep") == f"sqlite:///{tmp_path}/s.db"
    assert storage_url("studies/a.journal", "sweep") == str(tmp_path / "studies/a.journal")
    assert storage_url("postgresql://db/studies", "sweep") == "postgresql://db/studies"
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(None), optuna.pruners.NopPruner)
    hyperband = make_pruner(OmegaConf.create({"name": "hyperband", "min_resource": 2}))
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["hydra.sweeper.pruner=mediam"], "hydra.sweeper.pruner=mediam is not a pruner"),
        (["hydra.sweeper.pruner={name:median,warmup:1}"], "unexpected keyword argument"),
        (["hydra.sweeper.storage=/proc/none/study.journal"], "cannot open the study storage"),
        (["hydra.sweeper.storage=sqlite:////proc/none.db"], "cannot open the study storage"),
        (["hydra.sweeper.storage=sqlite:///"], "is a database in memory"),
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 is not allowed: at least 1"),
        (["hydra.sweeper.heartbeat_s=0"], "hydra.sweeper.heartbeat_s=0.0 is not allowed"),
        (["hydra.sweeper.pruner={name:hyperband,reduction_factor:1}"], "must be >= 2"),
        (["hydra.sweeper.direction=[maximize,minimize]"], "2 direction(s) for 1 optimized"),
    ],
)
def test_a_bad_study_setting_is_one_line_and_exit_2_before_any_job(tmp_path, args, says):
    done = sweep(*args, sweep_dir=tmp_path / "sweep")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and says in done.stderr
    assert not list(tmp_path.glob("sweep/*/.hydra"))


def test_a_pruner_without_the_optuna_sweeper_is_one_line_and_exit_2(tmp_path):
    done = run_command(
        "train.py", "-m", "debug=smoke", "optimizer=sgd,adam", "hydra.sweeper.pruner=median",
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: hydra.sweeper.pruner is no setting of this sweep's sweeper: the study's "
        "settings (pruner, storage, n_trials, ...) belong to the Optuna sweeper: add "
        "hparams_search=optuna"
    )


def test_a_study_whose_metric_no_run_records_fails_its_first_trial_and_asks_no_more(tmp_path):
    done = sweep("hydra.sweeper.n_trials=3", "optimized_metric=val/f1_best", sweep_dir=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "optimized_metric=val/f1_best is not a metric this run records" in done.stderr
    assert [(t.number, t.state.name) for t in trials(tmp_path / "optuna.journal")] == [(0, "FAIL")]
    assert [r["state"] for r in study_rows(tmp_path)] == ["FAIL"]
    assert "1 jobs: 0 ok, 1 failed" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_a_study_optimizes_any_metric_by_its_best_in_the_metrics_own_direction(tmp_path):
    # Macro F1 (higher is better) and the top-1 error (lower, the project's own metric):
    # each gets val/<metric>_best in its direction, and the study maximizes the F1.
    done = sweep(
        "hydra.sweeper.n_trials=2", "trainer.max_epochs=3", "optimized_metric=val/f1_best",
        "+metrics.f1={_target_: torchmetrics.classification.MulticlassF1Score, average: macro}",
        "+metrics.error={_target_: mnist_mlp.metrics.MulticlassError}",
        sweep_dir=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    told = {}
    for job in job_dirs(tmp_path):
        m = json.loads((tmp_path / str(job) / "metrics.json").read_text())
        assert m["better"]["val/f1"] == "higher" and m["better"]["val/error"] == "lower"
        assert m["val/f1_best"] == max(e["val/f1"] for e in m["history"])
        assert m["val/error_best"] == min(e["val/error"] for e in m["history"])
        told[job] = m["val/f1_best"]
    assert {t.number: t.value for t in trials(tmp_path / "optuna.journal")} == told


def test_a_study_that_would_keep_its_worst_trials_stops_at_the_first(tmp_path):
    # val/loss_best is better lower; the study's direction says maximize (the default)
    done = sweep("hydra.sweeper.n_trials=3", "optimized_metric=val/loss_best", sweep_dir=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert (
        "optimized_metric=val/loss_best is better lower (torchmetrics' higher_is_better), but "
        "hydra.sweeper.direction=maximize: the study would keep its worst trials; set "
        "hydra.sweeper.direction=minimize"
    ) in done.stderr
    assert [(t.number, t.state.name) for t in trials(tmp_path / "optuna.journal")] == [(0, "FAIL")]


def test_a_study_continued_with_another_search_space_or_direction_is_refused(tmp_path):
    first = sweep("hydra.sweeper.n_trials=1", sweep_dir=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    journal = (tmp_path / "optuna.journal").read_bytes()
    for change, says in (
        ("optimizer=choice(sgd,adam)", "(optimizer changed)"),
        ("hydra.sweeper.direction=minimize", "was made to maximize, not to minimize"),
        ("optimized_metric=test/acc", "optimizes val/acc_best, not test/acc"),
    ):
        done = sweep("hydra.sweeper.n_trials=1", change, sweep_dir=tmp_path)
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert (tmp_path / "optuna.journal").read_bytes() == journal  # the study is untouched
    assert job_dirs(tmp_path) == [0]


def test_a_journal_whose_last_record_was_torn_continues(tmp_path):
    first = sweep("hydra.sweeper.n_trials=1", sweep_dir=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    journal = tmp_path / "optuna.journal"
    whole = journal.read_bytes()
    with open(journal, "ab") as f:  # a writer died (or the disk filled) mid-append
        f.write(b'{"op_code": 4, "worker_id": "dead", "trial_id": 0, "sta')
    again = sweep("hydra.sweeper.n_trials=1", sweep_dir=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert journal.read_bytes().startswith(whole)  # only the torn half went
    assert [(t.number, t.state.name) for t in trials(journal)] == [(0, "COMPLETE"), (1, "COMPLETE")]


@pytest.mark.slow
def test_a_multi_objective_study_tells_each_trial_its_values(tmp_path):
    done = sweep(
        "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=[maximize,minimize]",
        "optimized_metric=[val/acc_best,val/loss_best]", sweep_dir=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for trial in trials(tmp_path / "optuna.journal"):
        metrics = json.loads((tmp_path / str(trial.number) / "metrics.json").read_text())
        assert trial.state == TrialState.COMPLETE
        assert trial.values == pytest.approx([metrics["val/acc_best"], metrics["val/loss_best"]])


def test_a_users_own_model_sweeps_the_common_space_and_its_own_part(tmp_path):
    """A network of the user's (lib/tests/own_networks.py) with its own keys, as an option of
    its own: the default search (optimizer, lr, weight decay, dropout) and its own part."""
    extra = tmp_path / "conf"
    (extra / "model").mkdir(parents=True)
    (extra / "search_space").mkdir()
    (extra / "model" / "tiny.yaml").write_text("_target_: own_networks.TinyConvNet\nwidth: 4\n")
    (extra / "search_space" / "tiny.yaml").write_text("model.width: choice(2, 3)\n")
    command = sweep_command("hydra.sweeper.n_trials=2", "model=tiny", sweep_dir=tmp_path / "sweep")
    done = subprocess.run(
        [*command[:2], f"--config-dir={extra}", *command[2:]],  # Hydra's flags first
        cwd=PROJECT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = study_rows(tmp_path / "sweep")
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    assert {r["params_model.width"] for r in rows} <= {"2", "3"}
    assert all(r["params_optimizer.lr"] and r["params_regularization.dropout"] for r in rows)
    assert "params_model.hidden_sizes" not in rows[0]


# -- pruning -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Six trials of 4 epochs with the median pruner (from the third trial on)."""
    sweep_dir = tmp_path_factory.mktemp("pruned") / "sweep"
    return sweep_dir, sweep(*PRUNING, sweep_dir=sweep_dir)


def test_the_median_pruner_stops_hopeless_trials_as_a_normal_outcome(pruned_sweep):
    sweep_dir, done = pruned_sweep
    assert done.returncode == 0, done.stderr[-3000:]  # pruned jobs are no failures
    found = trials(sweep_dir / "optuna.journal")
    states = [t.state for t in found]
    assert TrialState.PRUNED in states and states[:2] == [TrialState.COMPLETE] * 2
    rows = study_rows(sweep_dir)
    with open(sweep_dir / "summary.csv") as f:
        summary = {r["job"]: r for r in csv.DictReader(f)}
    for trial, row in zip(found, rows, strict=True):
        assert row["state"] == trial.state.name and row["user_attrs_job_dir"].endswith(
            f"/{trial.number}"
        )
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        epochs = metrics["epochs_trained"]
        # Each validation reported the best val accuracy so far: the pruner's input.
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        assert trial.intermediate_values[epochs] == pytest.approx(metrics["val/acc_best"])
        if trial.state == TrialState.PRUNED:
            assert metrics["pruned"] == {"epoch": epochs, "pruner": "median"} and epochs < 4
            assert metrics["stop_reason"] == "pruned" and summary[str(trial.number)]["status"] == (
                "pruned"
            )
            # Short on purpose: the doctor says nothing of too few steps (debug=smoke is 5 a
            # epoch), and judges no plateau or chance on a stopped trial.
            assert "too_few_steps" not in summary[str(trial.number)]["doctor"]
        else:
            assert "pruned" not in metrics and epochs == 4
            assert trial.value == pytest.approx(metrics["val/acc_best"])
    pruned = states.count(TrialState.PRUNED)
    assert (
        f"6 jobs: {6 - pruned} ok, 0 failed, 0 incomplete, {pruned} pruned."
        in (sweep_dir / "summary.md").read_text()
    )


def test_a_studys_pictures_are_drawn_once_for_its_best_trial(pruned_sweep):
    sweep_dir, done = pruned_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(
        study_name="mlplab_optuna", storage=open_storage(str(sweep_dir / "optuna.journal"))
    )
    pictures = ("curves.png", "confusion_matrix.png", "misclassified.png")
    for trial in study.trials:
        job = sweep_dir / str(trial.number)
        report = (job / "report.md").read_text()
        if trial.number == study.best_trial.number:  # drawn when the sweep ended
            assert all((job / name).stat().st_size > 1000 for name in pictures)
            assert all(f"({name})" in report for name in pictures) and DEFERRED not in report
        else:
            assert not any((job / name).exists() for name in pictures)
            assert DEFERRED in report


def test_pictures_all_draws_every_trials(tmp_path):
    done = sweep("hydra.sweeper.n_trials=2", "callbacks.report.pictures=all", sweep_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.parent.name for p in tmp_path.glob("*/confusion_matrix.png")) == ["0", "1"]


def test_optuna_dashboard_serves_a_sweeps_study(pruned_sweep):
    sweep_dir, _ = pruned_sweep
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    command = [
        str(Path(sys.executable).with_name("optuna-dashboard")),
        str(sweep_dir / "optuna.journal"),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:  # it says when it listens
            if "Listening" in line or "listening on" in line.lower():
                break
        else:
            pytest.fail(f"optuna-dashboard ended: {server.wait()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as r:
            (study,) = json.load(r)["study_summaries"]
        assert study["study_name"] == "mlplab_optuna" and study["directions"] == ["maximize"]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=30
        ) as r:
            served = json.load(r)
    finally:
        server.terminate()
        server.wait(timeout=30)
    expected = trials(sweep_dir / "optuna.journal")
    assert [t["number"] for t in served["trials"]] == [t.number for t in expected]
    assert {t["state"] for t in served["trials"]} >= {"Complete", "Pruned"}
    assert served["has_intermediate_values"] is True


# -- two sweeps, one study -----------------------------------------------------------------
def test_two_sweeps_started_at_once_share_one_study_without_sharing_a_trial(tmp_path):
    """Two terminals, the same command: one study in one sweep dir, each trial run once."""
    both = [
        start_sweep("hydra.sweeper.n_trials=2", sweep_dir=tmp_path, OMP_NUM_THREADS="1")
        for _ in range(2)
    ]
    for process in both:
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
    found = trials(tmp_path / "optuna.journal")
    assert [t.number for t in found] == [0, 1, 2, 3]
    assert {t.state for t in found} == {TrialState.COMPLETE}
    assert job_dirs(tmp_path) == [0, 1, 2, 3]
    for trial in found:  # job n ran trial n, with trial n's params
        hydra = OmegaConf.load(tmp_path / str(trial.number) / ".hydra" / "hydra.yaml").hydra
        assert hydra.sweeper.trial == trial.number
        overrides = OmegaConf.load(tmp_path / str(trial.number) / ".hydra" / "overrides.yaml")
        assert f"optimizer={trial.params['optimizer']}" in overrides
        metrics = json.loads((tmp_path / str(trial.number) / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val/acc_best"])
    assert len({json.dumps(t.params, sort_keys=True) for t in found}) == 4  # seeded seed + n


# -- every trial ends ----------------------------------------------------------------------
LONG = ["data.batch_size=16", "trainer.max_epochs=3", "trainer.limit_train_batches=null"]


@pytest.mark.slow
def test_a_stopped_sweep_keeps_the_finished_jobs_value_and_fails_the_interrupted_one(tmp_path):
    process = start_sweep("hydra.sweeper.n_trials=3", *LONG, sweep_dir=tmp_path)
    wait_for(tmp_path / "1" / "checkpoints" / "last.ckpt", process)  # job 0 has finished
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 143, err[-3000:]
    first, second = trials(tmp_path / "optuna.journal")
    metrics = json.loads((tmp_path / "0" / "metrics.json").read_text())
    assert first.state == TrialState.COMPLETE and first.value == metrics["val/acc_best"]
    assert second.state == TrialState.FAIL and second.value is None  # no made-up value
    assert second.user_attrs["status"] == "interrupted"
    assert [r["state"] for r in study_rows(tmp_path)] == ["COMPLETE", "FAIL"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_as_a_finished_trial_is_told_keeps_its_value_and_ends_in_one_line(
    tmp_path, signum
):
    """The signal lands as job 0 has written its metrics: while it tells its trial, writes
    its report, or as the next trial starts. Wherever it lands: trial 0 keeps its value, no
    trial is left running, the sweep says so in one line with its summary."""
    process = start_sweep("hydra.sweeper.n_trials=3", sweep_dir=tmp_path)
    wait_for(tmp_path / "0" / "metrics.json", process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: "), err
    first, *others = trials(tmp_path / "optuna.journal")
    metrics = json.loads((tmp_path / "0" / "metrics.json").read_text())
    assert first.state == TrialState.COMPLETE and first.value == metrics["val/acc_best"]
    assert all(t.state != TrialState.RUNNING for t in others)
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "study.csv").is_file()


@pytest.mark.slow
def test_a_sweep_that_ignores_ctrl_c_still_stops_on_sigterm_in_one_line(tmp_path):
    # Started in a shell's background (Ctrl-C ignored), stopped by a scheduler's SIGTERM.
    process = start_sweep("hydra.sweeper.n_trials=3", sweep_dir=tmp_path, ignoring=signal.SIGINT)
    wait_for(tmp_path / "0" / "metrics.json", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: "), err
    assert all(t.state != TrialState.RUNNING for t in trials(tmp_path / "optuna.journal"))


@pytest.mark.slow
def test_a_trial_whose_sweep_was_killed_is_failed_when_the_study_continues(tmp_path):
    process = start_sweep("hydra.sweeper.n_trials=2", *LONG, sweep_dir=tmp_path)
    wait_for(tmp_path / "0" / "checkpoints" / "last.ckpt", process)
    process.kill()  # no handler runs: the trial is left RUNNING
    process.communicate(timeout=60)
    (left,) = trials(tmp_path / "optuna.journal")
    assert left.state == TrialState.RUNNING
    again = sweep("hydra.sweeper.n_trials=1", sweep_dir=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trials [0] had died" in again.stdout + again.stderr
    dead, new = trials(tmp_path / "optuna.journal")
    assert dead.state == TrialState.FAIL and dead.user_attrs["status"] == "died"
    assert new.state == TrialState.COMPLETE and job_dirs(tmp_path) == [0, 1]


@pytest.mark.slow
def test_trials_left_running_by_dead_sweeps_end_as_their_job_dirs_say(tmp_path):
    """A sweep killed right after it asked for a trial (no heartbeat yet), and one killed
    after its job finished but before it told the trial: the study's next sweep ends both."""
    import datetime
    import shutil
    import socket

    first = sweep("hydra.sweeper.n_trials=1", sweep_dir=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    journal = tmp_path / "optuna.journal"
    study = optuna.load_study(study_name="mlplab_optuna", storage=open_storage(str(journal)))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    shutil.copytree(tmp_path / "0", tmp_path / "1")  # a finished job, never told

    def running(**attrs) -> optuna.trial.FrozenTrial:
        return optuna.trial.FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, params={}, distributions={},
            datetime_start=datetime.datetime.now() - datetime.timedelta(hours=1),
            datetime_complete=None, intermediate_values={}, trial_id=-1, **attrs,
        )  # fmt: skip

    never_beat = running(user_attrs={}, system_attrs={})
    dead_pid = {"host": socket.gethostname(), "pid": int(gone.stdout), "time": 0}
    finished_untold = running(
        user_attrs={"job_dir": str(tmp_path / "1")}, system_attrs={HEARTBEAT: dead_pid}
    )
    study.add_trial(finished_untold)  # trial 1
    study.add_trial(never_beat)  # trial 2
    again = sweep("hydra.sweeper.n_trials=1", sweep_dir=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    done = {t.number: t for t in trials(journal)}
    value = json.loads((tmp_path / "1" / "metrics.json").read_text())["val/acc_best"]
    assert done[1].state == TrialState.COMPLETE and done[1].value == pytest.approx(value)
    assert done[2].state == TrialState.FAIL and done[2].user_attrs["status"] == "died"
    assert done[3].state == TrialState.COMPLETE


@pytest.mark.slow
def test_joblib_runs_a_studys_trials_in_parallel_each_pruned_through_the_storage(tmp_path):
    done = sweep(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
        *PRUNING, sweep_dir=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    found = trials(tmp_path / "optuna.journal")
    assert [t.number for t in found] == list(range(6)) and job_dirs(tmp_path) == list(range(6))
    assert {t.state for t in found} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.PRUNED in {t.state for t in found}  # the workers asked the pruner
    for trial in found:
        metrics = json.loads((tmp_path / str(trial.number) / "metrics.json").read_text())
        assert len(trial.intermediate_values) == metrics["epochs_trained"]
        assert metrics["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)
