"""The copier template (copier.yml, template/): this repository's project is its render, new
projects install and pass their own tests for every answer, and `copier update` brings a
template change into a project while keeping the user's edits. Real copier, real git."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = yaml.safe_load((ROOT / ".copier-answers.yml").read_text())
# The repository holds the library and the template besides its project, so these files of
# the template (a new project's README, Makefile and CI) are not the repository's own ones.
REPOSITORY_OWN = {
    "README.md",
    "Makefile",
    ".ci/run",
    ".github/workflows/ci.yml",
    ".pre-commit-config.yaml",
}
# The project's files in this repository: what the template renders, nothing else.
PROJECT_PATHS = ["src", "conf", "benchmarks", "train.py", "eval.py", "predict.py", "export.py"]

# New projects tested, beside this repository's own (all data, both trackers, the lesson).
# Together they cover every pair of answer values (see the test below), and no fewer do; the
# first is `copier copy --defaults` and runs in `make test`, the others are slow.
COMBOS = [
    {"data": ["mnist"], "tracker": ["wandb"], "lesson": False},  # the defaults
    {"data": ["images"], "tracker": []},
    {"data": ["table"], "tracker": ["wandb", "mlflow"]},
    {"data": ["mnist"], "tracker": ["mlflow"], "lesson": True},
    {"data": ["mnist", "table"], "tracker": [], "lesson": True},
]


def copier(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The copier command line, as a user runs it (no prompt: stdin is closed)."""
    command = [str(Path(sys.executable).with_name("copier")), *args]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
    )


def answer_flags(answers: dict) -> list[str]:
    return [flag for k, v in answers.items() for flag in ("--data", f"{k}={v}")]


def render(destination: Path, answers: dict, template: Path = ROOT) -> Path:
    """The template (this working tree, uncommitted changes included) rendered for
    ``answers``; every other question takes its default."""
    done = copier(
        "copy", "--defaults", "--quiet", "--vcs-ref=HEAD", *answer_flags(answers),
        str(template), str(destination), cwd=destination.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return destination


def files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts
    }


def test_this_repositorys_project_is_the_template_rendered_for_its_recorded_answers(tmp_path):
    answers = {k: v for k, v in ANSWERS.items() if not k.startswith("_")}
    rendered = render(tmp_path / "rendered", answers)
    made = files(rendered) - REPOSITORY_OWN - {".copier-answers.yml"}
    differ = sorted(f for f in made if (rendered / f).read_bytes() != (ROOT / f).read_bytes())
    assert differ == [], f"edit these in template/ (the repository's are its render): {differ}"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *PROJECT_PATHS],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    missing = sorted(set(listed) - made)
    assert missing == [], f"the template does not make these project files: {missing}"
    recorded = yaml.safe_load((rendered / ".copier-answers.yml").read_text())
    assert {k: v for k, v in recorded.items() if not k.startswith("_")} == answers
    # The repository's hooks: a new project's, then its own (the library, the template).
    hooks = [
        yaml.safe_load(path.read_text())["repos"][0]["hooks"]
        for path in (rendered / ".pre-commit-config.yaml", ROOT / ".pre-commit-config.yaml")
    ]
    assert hooks[1][: len(hooks[0])] == hooks[0]


@pytest.mark.parametrize("name", ["email", "optuna", "class", "match", "json", "sklearn"])
def test_a_package_name_that_would_shadow_a_module_is_refused(tmp_path, name):
    done = copier("copy", "--defaults", "--vcs-ref=HEAD", "--data", f"package_name={name}",
                  str(ROOT), str(tmp_path / "proj"), cwd=tmp_path)  # fmt: skip
    assert done.returncode != 0
    assert f"{name} is taken (a Python keyword, a standard-library module" in done.stderr
    assert not (tmp_path / "proj" / "src").exists()


def test_the_taken_names_are_pythons_keywords_stdlib_and_the_pinned_packages():
    import importlib.metadata
    import keyword
    import re

    taken = set(yaml.safe_load((ROOT / "copier.yml").read_text())["taken_names"]["default"])
    pins = {
        re.split(r"[=<>\[ ]", line)[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    imported = {
        name
        for name, dists in importlib.metadata.packages_distributions().items()
        if any(d.lower().replace("_", "-") in pins for d in dists)
    }
    wanted = {*keyword.kwlist, *keyword.softkwlist, *sys.stdlib_module_names, *imported}
    missing = {n for n in wanted if re.fullmatch(r"[a-z][a-z0-9_]*", n)} - taken
    assert not missing, f"add to taken_names in copier.yml: {sorted(missing)}"


def test_the_tested_answers_cover_every_pair_of_answer_values():
    """Pairwise: for any two questions (a data kind, a tracker, the lesson), every pair of
    their values is in some tested project, so a clash of two answers cannot hide."""
    projects = [*COMBOS, ANSWERS]
    flags = {  # each value of each question, as a yes/no of a project
        "mnist": lambda a: "mnist" in a["data"],
        "table": lambda a: "table" in a["data"],
        "images": lambda a: "images" in a["data"],
        "wandb": lambda a: "wandb" in a["tracker"],
        "mlflow": lambda a: "mlflow" in a["tracker"],
        "lesson": lambda a: bool(a.get("lesson")),
    }
    possible = {  # a lesson needs mnist
        (x, vx, y, vy)
        for x, y in itertools.combinations(flags, 2)
        for vx, vy in itertools.product([False, True], repeat=2)
        if not ({x, y} == {"mnist", "lesson"} and (vx, vy) == (False, True))
    }
    pairs = list(itertools.combinations(flags, 2))
    seen = {(x, flags[x](a), y, flags[y](a)) for a in projects for x, y in pairs}
    assert possible - seen == set()


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory) -> Path:
    """One environment for the new projects: a venv of its own that sees this one's
    packages, so a project installs (``pip install -e``) without downloading anything."""
    env = tmp_path_factory.mktemp("env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    shared = sysconfig.get_paths()["purelib"]
    Path(site, "_shared_env.pth").write_text(f"import site; site.addsitedir({shared!r})\n")
    return python


def check_new_project(tmp_path: Path, python: Path, answers: dict) -> None:
    """Make a project with ``answers`` as a user does, install it, lint it and run its tests."""
    name = "proj_" + "_".join([*answers["data"], *answers["tracker"]] or ["csv"])
    if answers.get("lesson"):
        name += "_lesson"
    project = render(tmp_path / name, {"package_name": name, **answers})
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*install, "-e", project], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # make lint's hooks (ruff, mypy) as its Makefile runs them: its environment's python first
    git("init", "-q", cwd=project)
    git("add", "-A", cwd=project)
    path = f"{python.parent}{os.pathsep}{os.environ['PATH']}"
    # one mypy cache for the projects this environment checks: what they import is the same
    cache = str(python.parent.parent / "mypy_cache")
    done = subprocess.run(
        [python, "-m", "pre_commit", "run", "--all-files"], cwd=project, capture_output=True,
        text=True, env={**os.environ, "PATH": path, "MYPY_CACHE_DIR": cache},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.findall(r"^(.+?)\.{3,}Passed$", done.stdout, re.MULTILINE)
    assert passed == [
        "ruff check",
        "ruff format --check",
        "mypy src (pyproject.toml's [tool.mypy])",
    ]
    # Only what was chosen: the data, tracker and lesson files of the other answers are absent.
    made = files(project)
    for data, marker in (("mnist", "conf/data/mnist.yaml"), ("table", "conf/data/table.yaml"),
                         ("images", "conf/data/images.yaml")):  # fmt: skip
        assert (marker in made) == (data in answers["data"])
    for tracker in ("wandb", "mlflow"):
        assert (f"conf/logger/{tracker}.yaml" in made) == (tracker in answers["tracker"])
    assert ("conf/experiment/lesson.yaml" in made) == bool(answers.get("lesson"))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    tests = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "not slow", "-n", "0"],
        cwd=project, capture_output=True, text=True, env=environment, timeout=1200,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout


def test_a_project_made_with_the_defaults_installs_and_passes_its_tests(tmp_path, shared_env):
    # exactly the README's command: no prompt, every answer but the name its default
    done = copier("copy", "--defaults", "--vcs-ref=HEAD", "--data", "package_name=myproj",
                  str(ROOT), "myproj", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = yaml.safe_load((tmp_path / "myproj" / ".copier-answers.yml").read_text())
    assert {k: recorded.get(k) for k in COMBOS[0]} == COMBOS[0]
    assert recorded["mlplab_source"] == ""  # the template's own library, at its version
    source = installs(tmp_path / "myproj")  # the checkout it was made from
    assert source.startswith(f"git+file://{ROOT}@") and source.endswith("#subdirectory=lib")
    check_new_project(tmp_path, shared_env, COMBOS[0])


@pytest.mark.slow
@pytest.mark.parametrize("answers", COMBOS[1:], ids=lambda a: "-".join(a["data"] + a["tracker"]))
def test_projects_made_with_other_answers_install_and_pass_their_tests(
    tmp_path, shared_env, answers
):
    check_new_project(tmp_path, shared_env, answers)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def commit_all(folder: Path, message: str, tag: str | None = None) -> None:
    git("add", "-A", cwd=folder)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=folder)
    if tag:
        git("tag", tag, cwd=folder)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """The template as its own git repository (this working tree), released as 1.0.0."""
    template = tmp_path_factory.mktemp("released") / "mlplab"
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).splitlines()
    for name in listed:
        source, target = ROOT / name, template / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.exists():
            shutil.copy2(source, target)
    git("init", "-q", cwd=template)
    commit_all(template, "mlplab 1.0.0", tag="v1.0.0")
    return template


def new_project(released: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A clone of the released template (to change), and a project made from it, committed."""
    template = tmp_path / "mlplab"
    git("clone", "-q", str(released), str(template), cwd=tmp_path)
    # an absolute path (or a URL): `copier update` finds the template where copy found it
    done = copier("copy", "--defaults", "--data", "package_name=myproj", str(template), "myproj",
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    project = tmp_path / "myproj"
    git("init", "-q", cwd=project)
    commit_all(project, "new project")
    return template, project


def installs(project: Path) -> str:
    """What the project's ``make install`` installs mlplab from, as make reads its Makefile
    (where ``#`` starts a comment)."""
    done = subprocess.run(
        ["make", "-s", "--eval", "print-mlplab: ; @echo '$(MLPLAB)'", "print-mlplab"],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_copier_update_brings_a_template_change_and_keeps_the_users_edits(released, tmp_path):
    template, project = new_project(released, tmp_path)
    own = f"git+file://{template.resolve()}@{{}}#subdirectory=lib"
    assert installs(project) == own.format(git("rev-parse", "v1.0.0", cwd=template).strip())

    # The user changes their model and a config; the template changes other files.
    model = project / "src" / "myproj" / "model.py"
    model.write_text(model.read_text() + "\n\nUSER_CONSTANT = 7  # the user's own code\n")
    adam = project / "conf" / "optimizer" / "adam.yaml"
    adam.write_text(adam.read_text().replace("lr: ", "lr: 0.003  # was ", 1))
    commit_all(project, "my edits")
    sgd = template / "conf" / "optimizer" / "sgd.yaml"
    sgd.write_text(sgd.read_text() + "# a template change\n")
    (template / "conf" / "scheduler" / "linear.yaml").write_text(
        "_target_: torch.optim.lr_scheduler.LinearLR\n_partial_: true\n"
    )
    commit_all(template, "mlplab 1.1.0", tag="v1.1.0")

    done = copier("update", "--defaults", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "USER_CONSTANT = 7" in model.read_text()
    assert "lr: 0.003  # was " in adam.read_text()
    assert (
        (project / "conf" / "optimizer" / "sgd.yaml").read_text().endswith("# a template change\n")
    )
    assert (project / "conf" / "scheduler" / "linear.yaml").exists()
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v1.1.0"
    # The library moves with the template version updated to, and only then.
    assert installs(project) == own.format(git("rev-parse", "v1.1.0", cwd=template).strip())

    # A real conflict: the template changes the line the user changed. Copier marks it in
    # the file, as git does, and keeps both sides for the user to choose.
    commit_all(project, "update to 1.1.0")
    users_adam = adam.read_text()
    template_adam = template / "conf" / "optimizer" / "adam.yaml"
    template_adam.write_text(template_adam.read_text().replace("lr: ", "lr: 0.002  # ", 1))
    commit_all(template, "mlplab 1.2.0", tag="v1.2.0")
    done = copier("update", "--defaults", cwd=project)
    assert done.returncode == 0, done.stderr
    merged = adam.read_text()
    assert "<<<<<<< before updating" in merged and ">>>>>>> after updating" in merged
    assert "lr: 0.003  # was " in merged and "lr: 0.002  # " in merged

    # Answering again: the library's source changes where the project says it (Makefile).
    adam.write_text(users_adam)  # the user settles the conflict: theirs
    commit_all(project, "update to 1.2.0")
    done = copier("update", "--defaults", "--vcs-ref=:current:", "--data",
                  "mlplab_source=/opt/mlplab/lib", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert installs(project) == "/opt/mlplab/lib"
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert (recorded["mlplab_source"], recorded["_commit"]) == ("/opt/mlplab/lib", "v1.2.0")


def test_copier_update_in_the_template_repository_itself_stops_in_one_line(released):
    done = copier("update", "--defaults", cwd=released)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "Cannot update because cannot obtain old template references from `.copier-answers.yml`."
    )
    assert git("status", "--porcelain", cwd=released) == ""  # nothing touched


@pytest.mark.slow
def test_the_library_a_project_installs_is_the_templates_at_its_version(released, tmp_path):
    """The Makefile's source installs (pip, from the template's git history, offline), and
    ``mlplab --version`` names the commit it came from."""
    template, project = new_project(released, tmp_path)
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), installs(project)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    version = subprocess.run(
        [sys.executable, "-m", "mlplab", "--version"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path,
    )  # fmt: skip
    commit = git("rev-parse", "v1.0.0", cwd=template).strip()
    said = version.stdout.strip()
    assert said.startswith("mlplab 0.2.0 (git+file:///") and said.endswith(f"/mlplab@{commit})")


def test_a_renamed_package_still_gets_the_templates_changes(released, tmp_path):
    template, project = new_project(released, tmp_path)
    model = project / "src" / "myproj" / "model.py"
    model.write_text(model.read_text() + "\n\nUSER_CONSTANT = 7  # the user's own code\n")
    commit_all(project, "my edits")
    mlplab = [sys.executable, "-m", "mlplab", "rename"]
    for taken in ("email", "optuna", "Not-a-name"):
        refused = subprocess.run([*mlplab, taken], cwd=project, capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr.startswith("error: cannot rename")
    done = subprocess.run([*mlplab, "newproj"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    commit_all(project, "renamed")
    assert not (project / "src" / "myproj").exists()
    assert 'name = "newproj"' in (project / "pyproject.toml").read_text()
    # The template changes the model; the update brings it into the renamed package.
    template_model = template / "src" / "mnist_mlp" / "model.py"  # template/src/ links to it
    template_model.write_text("# v1.1\n" + template_model.read_text())
    commit_all(template, "mlplab 1.1.0", tag="v1.1.0")
    done = copier("update", "--defaults", cwd=project)
    assert done.returncode == 0, done.stderr
    renamed = (project / "src" / "newproj" / "model.py").read_text()
    assert "USER_CONSTANT = 7" in renamed and renamed.startswith("# v1.1\n")
    assert not (project / "src" / "myproj").exists()
    assert sorted(p.name for p in (project / "src").iterdir()) == ["newproj"]


@pytest.mark.slow
def test_a_new_projects_make_install_writes_its_lock_then_keeps_to_it(released, tmp_path):
    # uv's way, as the project's CI takes it: the first install writes uv.lock (the pins of
    # constraints.txt, mlplab from the template's git commit); an edit without `uv lock` is
    # refused, not installed past the lock.
    template, project = new_project(released, tmp_path)
    uv = Path(sys.executable).with_name("uv")
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS"}  # of a `make test-all` running this
    env = {k: v for k, v in os.environ.items() if k not in drop}

    def make_install() -> subprocess.CompletedProcess:
        return subprocess.run(["make", "install", f"UV={uv}"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip

    done = make_install()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    packages = tomllib.loads((project / "uv.lock").read_text())["package"]
    mlplab = next(p for p in packages if p["name"] == "mlplab")
    head = git("rev-parse", "HEAD", cwd=template).strip()
    assert mlplab["source"]["git"] == f"file://{template}?subdirectory=lib&rev={head}#{head}"
    torch = next(p for p in packages if p["name"] == "torch" and "+cpu" in p["version"])
    assert torch["version"] == "2.13.0+cpu"
    python = project / ".venv" / "bin" / "python"
    imported = subprocess.run(
        [python, "-c", "import mlplab, myproj; print(mlplab.__file__)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert imported.returncode == 0 and "/site-packages/mlplab/" in imported.stdout, imported
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy>=1.24"', '"numpy>=1.25"'))
    done = make_install()
    assert done.returncode != 0 and "uv lock" in done.stderr + done.stdout, done.stderr[-2000:]
