"""uv.lock and constraints.txt: uv's way and pip's way of `make install` install the same pins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins() -> list[str]:
    """constraints.txt's ``name==version`` lines, in order."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_lock_installs_constraints_txts_pins():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["constraint-dependencies"] == pins()
    locked: dict[str, set[str]] = {}
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        locked.setdefault(package["name"], set()).add(package.get("version", "dynamic"))
    for name, version in (pin.split("==") for pin in pins()):
        name = re.sub(r"[-_.]+", "-", name).lower()  # as the lock writes it (PEP 503)
        if name == "torch":  # the CPU build where it is tested (not the CUDA one, several GB)
            assert f"{version}+cpu" in locked[name] and locked[name] <= {version, f"{version}+cpu"}
        else:
            assert locked.get(name) == {version}, name


def test_the_lock_is_current_for_pyproject_toml(tmp_path):
    # Offline, with an empty cache: a lock that still fits pyproject.toml needs no resolving;
    # an edited dependency or pin does (and fails here), as `uv sync --locked` would.
    done = subprocess.run(
        [sys.executable, "-m", "uv", "lock", "--check", "--offline"],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "UV_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode == 0, f"run `uv lock` (then commit uv.lock): {done.stderr[-2000:]}"
