"""The ``mlplab`` command: which library a project runs on, and renaming a project's package.

``mlplab --version`` says the version and where pip installed it from (a git commit, a folder),
as pip recorded it; ``mlplab rename NEW`` renames the project's package in the folder it runs
in, so that later ``copier update`` runs keep working (see the project's README).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import keyword
import re
import sys
from importlib import metadata
from pathlib import Path

from mlplab import __version__
from mlplab.errors import ConfigError


def installed_from() -> str | None:
    """Where pip installed mlplab from (``git+URL@commit``, a folder, ``editable`` ...), as
    its ``direct_url.json`` says; ``None`` from an index, or when unknown."""
    try:
        raw = metadata.distribution("mlplab").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        url = json.loads(raw or "null") or {}
    except ValueError:
        return None
    where = str(url.get("url", ""))
    vcs = url.get("vcs_info") or {}
    if vcs.get("commit_id"):
        return f"{vcs.get('vcs', 'git')}+{where}@{vcs['commit_id']}"
    if (url.get("dir_info") or {}).get("editable"):
        return f"{where.removeprefix('file://')} (editable)"
    return where.removeprefix("file://") or None


def describe() -> str:
    """``0.2.0``, with where it was installed from when pip says: what the run record keeps."""
    source = installed_from()
    return f"{__version__} ({source})" if source else __version__


# -- renaming a project's package ------------------------------------------------------------
def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a project's package, or ``None``: not a lowercase Python name, a
    keyword, a standard-library module, or a module this environment already imports."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return "not a lowercase Python name (a letter, then letters, digits or _)"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "a Python keyword"
    if name in sys.stdlib_module_names:
        return "a module of Python's standard library"
    if name in ("mlplab", "conf", "tests", "test", "data", "src"):
        return "taken by mlplab or a folder of the project"
    try:
        taken = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        taken = True
    return "the name of an installed package" if taken else None


def rename_package(project: Path, new: str) -> str:
    """Rename the package of the project in ``project`` to ``new``, as the template would have
    made it with ``package_name=new``: its folder under ``src/``, the answer recorded for
    ``copier update``, and where the Makefile, pyproject.toml and README name it. Return the
    old name."""
    problem = name_problem(new)
    if problem:
        raise ConfigError(f"cannot rename the package to {new!r}: {problem}")
    answers = project / ".copier-answers.yml"
    if not answers.is_file():
        raise ConfigError(
            f"{project} holds no .copier-answers.yml: run this in a project made by copier"
        )
    found = re.search(r"^package_name: *(\S+) *$", answers.read_text(), re.MULTILINE)
    if found is None:  # without it, src/ itself would pass for the package's folder
        raise ConfigError(f"{answers} names no package_name: add the answer, then rename")
    old = found.group(1).strip("'\"")
    if not old or not (project / "src" / old).is_dir():
        raise ConfigError(
            f"{answers} names package_name {old or '(none)'}, but src/{old} is no folder: "
            "rename by hand (the folder and that answer), or restore the folder"
        )
    if old == new or (project / "src" / new).exists():
        raise ConfigError(f"src/{new} exists already: choose another name")
    dashed = {old: new, old.replace("_", "-"): new.replace("_", "-")}
    edits = {
        answers: [(rf"^package_name: *{re.escape(found.group(1))} *$", f"package_name: {new}")],
        project / "pyproject.toml": [(rf'"{re.escape(k)}"', f'"{v}"') for k, v in dashed.items()],
        project / "Makefile": [(rf"^# {re.escape(old)}:", f"# {new}:")],
        project / "README.md": [(rf"\b{re.escape(old)}\b", new)],
    }
    from mlplab.rundir import write_text  # each file whole or not at all

    (project / "src" / old).rename(project / "src" / new)
    for path, changes in edits.items():
        if path.is_file():
            text = path.read_text()
            for pattern, replacement in changes:
                text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
            write_text(path, text)
    return old


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mlplab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mlplab {describe()}")
    commands = parser.add_subparsers(dest="command")
    rename = commands.add_parser("rename", help="rename this project's package (src/<name>/)")
    rename.add_argument("name", help="the new package name")
    args = parser.parse_args(argv)
    if args.command != "rename":
        parser.print_help()
        return
    try:
        old = rename_package(Path.cwd(), args.name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"renamed the package {old} to {args.name} (src/{args.name}/, .copier-answers.yml, "
        "pyproject.toml, Makefile, README.md): commit it; copier update keeps working"
    )


if __name__ == "__main__":
    main()
