"""Every command the docs show runs, and every output they quote is what it prints.

The rules are docs/configuration.md's "The commands in these docs are tested": the fenced
``bash`` and ``console`` blocks of README.md and docs/*.md run page by page, in order, each
page in its own scratch folder; ``bash`` commands are shortened by one rule
(:func:`shortened`), ``console`` transcripts run as written and are compared line by line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlplab.testing import PROJECT, run_command

PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
# The test suite runs this test; the bench's own test runs it shortened (lib/tests/test_bench.py);
# CI runs make lint in the clone (its hooks check the files git tracks: a page's folder has none).
NOT_RUN = ("make test", "make test-all", "make bench", "make lint")
TRAINING_MAKE_TARGETS = ("train", "sweep", "demos")  # they pass ARGS to train.py
MULTIRUN_MAKE_TARGETS = ("sweep", "demos")
MULTIRUN_FLAGS = ("-m", "--multirun")
# One short epoch, with the run's own loggers and callbacks (debug=smoke would drop loggers).
SHORT = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
)
# What needs a machine that is not here: composed (--cfg job), not run.
ELSEWHERE = (
    "hydra/launcher=submitit_slurm",
    "trainer=ddp",
    "trainer=gpu",
    "trainer.accelerator=gpu",
)
PLACEHOLDERS = {"outputs/<run>": "run", "multirun/<sweep>": "sweep"}
SCRIPTS = ("train.py", "eval.py", "predict.py", "export.py")
TEST_DATA = os.environ.get("MLPLAB_TEST_DATA")


@dataclass
class Command:
    """One command of a page: a ``bash`` line, or a ``console`` ``$`` line with the output
    quoted under it."""

    page: str
    line: str
    kind: str  # "bash" | "console"
    expected: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.line)

    @property
    def multirun(self) -> bool:
        words = _without_env(self.argv)
        flagged = any(flag in words for flag in MULTIRUN_FLAGS)
        return flagged or _make_target(words) in MULTIRUN_MAKE_TARGETS

    @property
    def trains(self) -> bool:
        words = _without_env(self.argv)
        return words[:2] == ["python", "train.py"] or _make_target(words) in TRAINING_MAKE_TARGETS


def _without_env(words: list[str]) -> list[str]:
    """The command without its leading ``NAME=value`` environment assignments."""
    i = 0
    while i < len(words) and re.fullmatch(r"[A-Za-z_]\w*=.*", words[i]):
        i += 1
    return words[i:]


def _make_target(words: list[str]) -> str | None:
    return words[1] if len(words) > 1 and words[0] == "make" else None


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """The page's fenced blocks as ``(language, lines)``; an indented fence (inside a list
    item) loses its indentation."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.fullmatch(r"( *)```(\w*)\s*", lines[i])
        i += 1
        if opening is None:
            continue
        indent, language, body = len(opening.group(1)), opening.group(2), []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        i += 1
        blocks.append((language, body))
    return blocks


def page_name(path: Path) -> str:
    """``README.md`` or ``docs/<page>.md``: how a command names its page."""
    return path.name if path.parent == PROJECT else f"docs/{path.name}"


def page_commands(path: Path, text: str | None = None) -> list[Command]:
    """The commands of a page, in order, with NOT_RUN left out."""
    text = path.read_text() if text is None else text
    page = page_name(path)
    found: list[Command] = []
    for language, body in fenced_blocks(text):
        if language == "bash":
            for line in _logical_lines(body):
                words = shlex.split(line, comments=True)
                if words:
                    found.append(Command(page, shlex.join(words), "bash"))
        elif language == "console":
            for line in body:
                if line.startswith("$ "):
                    found.append(Command(page, line[2:].strip(), "console"))
                elif found and found[-1].kind == "console" and line.strip():
                    found[-1].expected.append(line.rstrip())
    return [c for c in found if not any(c.line == n or c.line.startswith(n + " ") for n in NOT_RUN)]


def _logical_lines(body: list[str]) -> list[str]:
    joined, pending = [], ""
    for line in body:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            joined.append(pending + line)
            pending = ""
    return joined


def shortened(command: Command) -> list[str]:
    """The one rule: a ``bash`` training command gets :data:`SHORT` (those of its keys it does
    not set itself; a make target that trains, in ``ARGS``); one that continues a checkpoint
    runs as written (the run it continues was shortened); one that needs a cluster or GPUs
    (:data:`ELSEWHERE`) is composed with ``--cfg job`` in place of ``-m``, a swept list
    giving its first value. Transcripts run as written."""
    words = command.argv
    if command.kind == "console" or not command.trains:
        return words
    rest = _without_env(words)
    if set(ELSEWHERE) & set(rest):
        return [_first_value(w) for w in words if w not in MULTIRUN_FLAGS] + ["--cfg", "job"]
    if any(w.startswith("ckpt_path=") for w in rest) or {"--cfg", "--help"} & set(rest):
        return words
    keys = {w.split("=")[0] for w in rest}
    short = [o for o in SHORT if o.split("=")[0] not in keys]
    if rest[0] == "make":
        given = [w for w in rest if w.startswith("ARGS=")]
        if given:
            return [w if w != given[0] else " ".join([w, *short]) for w in words]
        return [*words, "ARGS=" + " ".join(short)]
    return [*words, *short]


def _first_value(word: str) -> str:
    """``key=a,b,c`` (a sweep) as ``key=a``; anything else as it is."""
    key, _, value = word.partition("=")
    if value and "," in value and not value.startswith(("[", "{", "'", '"')):
        return f"{key}={value.split(',')[0]}"
    return word


def matches(expected: list[str], output: str) -> str | None:
    """None if the quoted lines appear in ``output`` in order (``...`` matches anything),
    else the first quoted line that does not."""
    lines = [part.rstrip() for line in output.splitlines() for part in line.split("\r")]
    position = 0
    for quoted in expected:
        if quoted.strip() == "...":
            continue
        pattern = re.compile(".*".join(re.escape(piece) for piece in quoted.split("...")))
        while position < len(lines) and not pattern.fullmatch(lines[position]):
            position += 1
        if position == len(lines):
            return quoted
        position += 1
    return None


class Page:
    """A page's scratch folder (this checkout's files, ``data/`` the real IDX files) and the
    dirs its latest training command and sweep printed."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.dirs = folder, {}
        folder.mkdir(parents=True, exist_ok=True)
        skip = {".git", "outputs", "multirun", "data", "wandb", "lightning_logs"}
        for entry in PROJECT.iterdir():
            if entry.name not in skip and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
        if TEST_DATA and not (folder / "data").exists():
            (folder / "data").symlink_to(Path(TEST_DATA).resolve())

    def substituted(self, words: list[str]) -> list[str]:
        out = []
        for word in words:
            for placeholder, kind in PLACEHOLDERS.items():
                if placeholder in word:
                    if kind not in self.dirs:
                        raise AssertionError(f"{placeholder}: no earlier command printed one")
                    word = word.replace(placeholder, self.dirs[kind])
            out.append(word)
        return out

    def run(self, command: Command) -> subprocess.CompletedProcess:
        words = self.substituted(shortened(command))
        env = {**_fresh_shell_environment(), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        rest = _without_env(words)
        assigned = words[: len(words) - len(rest)]
        env.update(word.split("=", 1) for word in assigned)
        words = rest
        if _in_this_process(words):
            done = run_command(*words[1:], cwd=self.folder, env=env, merged=True)
            return self._read_dirs(command, done)
        if words[0] == "python":
            words[0] = sys.executable
        done = subprocess.run(
            words,
            cwd=self.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1200,
        )
        return self._read_dirs(command, done)

    def _read_dirs(
        self, command: Command, done: subprocess.CompletedProcess
    ) -> subprocess.CompletedProcess:
        if command.trains:
            for line in done.stdout.splitlines():
                if line.startswith("run dir: "):
                    self.dirs["run"] = line.removeprefix("run dir: ").split(" (")[0]
                if line.startswith("sweep summary: "):
                    self.dirs["sweep"] = str(Path(line.removeprefix("sweep summary: ")).parent)
        return done


def _in_this_process(words: list[str]) -> bool:
    """Whether a command runs in the test's process (:func:`mlplab.testing.run_command`): a
    project script run by ``python``, unless it runs its jobs in processes of their own (a
    launcher, DDP). Any other runs as a user's shell runs it."""
    script = len(words) > 1 and words[0] == "python" and words[1] in SCRIPTS
    own_processes = any(w.startswith(("hydra/launcher=", "trainer=ddp")) for w in words)
    return script and not own_processes


def _fresh_shell_environment() -> dict[str, str]:
    """This environment as a user's shell has it: without the variables of a ``make`` that
    runs the tests (``make test ARGS=...`` exports ARGS, and MAKEFLAGS passes it on, so a
    documented ``make train`` would get the test run's ARGS)."""
    makeflags = os.environ.get("MAKEFLAGS", "")
    from_make = set(re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", makeflags))
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", *from_make} - {"MLPLAB_TEST_DATA"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def check(command: Command, done: subprocess.CompletedProcess) -> None:
    shown = f"{command.page}: {command.line}\n{done.stdout[-3000:]}"
    if command.kind == "bash":
        assert done.returncode == 0, f"exit {done.returncode}: {shown}"
        return
    refused = any(line.startswith("error:") for line in command.expected)
    assert done.returncode == (2 if refused else 0), f"exit {done.returncode}: {shown}"
    missing = matches(command.expected, done.stdout)
    assert missing is None, f"the docs quote {missing!r}, it printed: {shown}"


def _cases() -> list:
    """One case per page, its commands run in order in one scratch folder (a command may
    use what an earlier one wrote); README.md's multiruns are a slow case of their own."""
    cases = []
    for path in PAGES:
        commands = page_commands(path)
        if path.name == "README.md":
            single = [c for c in commands if not c.multirun]
            cases.append(pytest.param(single, id="README.md"))
            commands, name = [c for c in commands if c.multirun], "README.md-multiruns"
        else:
            name = page_name(path)
        if commands:  # performance.md shows only make bench, which is not run
            cases.append(pytest.param(commands, id=name, marks=pytest.mark.slow))
    return cases


@pytest.mark.skipif(not TEST_DATA, reason="the docs' commands read data/: set MLPLAB_TEST_DATA")
@pytest.mark.parametrize("commands", _cases())
def test_the_commands_of_a_page_run_as_it_says(commands: list[Command], tmp_path) -> None:
    page = Page(tmp_path / "page")
    for command in commands:
        check(command, page.run(command))


# The checker itself: a broken example is caught.

BROKEN_PAGE = """
```console
$ python train.py regularization.dropout=1.5
error: regularization.dropout=1.5 is fine
```

```bash
python train.py model=no_such_model
```
"""


def test_a_quoted_output_that_differs_from_what_the_command_prints_fails(tmp_path):
    page = Page(tmp_path / "page")
    transcript, command = page_commands(PROJECT / "README.md", BROKEN_PAGE)
    with pytest.raises(AssertionError, match=r"the docs quote 'error: regularization\.dropout"):
        check(transcript, page.run(transcript))
    with pytest.raises(AssertionError, match="exit 2"):
        check(command, page.run(command))


def test_the_one_rule_shortens_training_commands_only():
    def short(line: str, kind: str = "bash") -> str:
        return shlex.join(shortened(Command("x", line, kind)))

    rule = " ".join(SHORT)
    assert short("python train.py optimizer=adam") == f"python train.py optimizer=adam {rule}"
    assert short("make train") == f"make train 'ARGS={rule}'"
    assert short("make sweep 'ARGS=a=1'") == f"make sweep 'ARGS=a=1 {rule}'"
    assert short("python train.py trainer.max_epochs=20") == "python train.py " + " ".join(
        ["trainer.max_epochs=20", *SHORT[1:]]
    )  # a limit the command sets itself stays
    assert short("python train.py ckpt_path=outputs/<run> trainer.max_epochs=4").endswith("=4")
    assert short("python train.py -m hydra/launcher=submitit_slurm a=1,2 b=[1,2]") == (
        "python train.py hydra/launcher=submitit_slurm a=1 'b=[1,2]' --cfg job"
    )
    assert short("python train.py trainer=ddp_cpu").startswith("python train.py trainer=ddp_cpu t")
    assert short("python eval.py ckpt_path=x") == "python eval.py ckpt_path=x"
    assert short("make train", "console") == "make train"
    assert short("PYTHONPATH=x python train.py") == f"PYTHONPATH=x python train.py {rule}"


def test_quoted_lines_match_in_order_with_dots_for_anything():
    output = (
        "W&B: offline\nprogress\rEpoch 1\ntest accuracy 87.60% (loss 0.4676)\nrun dir: /a/b (x)\n"
    )
    assert matches(["...", "test accuracy 87.60% (loss ...)", "run dir: .../b (x)"], output) is None
    assert matches(["run dir: /a/b (x)", "test accuracy 87.60% (loss 0.4676)"], output) == (
        "test accuracy 87.60% (loss 0.4676)"
    )
    assert matches(["Epoch 1"], output) is None  # a progress bar's \r-separated redraws
