"""mlplab.about: ``mlplab rename`` on a project folder (the copier round trip is
tests/test_template.py's)."""

from __future__ import annotations

import pytest

from mlplab.about import rename_package
from mlplab.errors import ConfigError


def project_named(tmp_path, answers: str):
    (tmp_path / "src" / "old_name").mkdir(parents=True)
    (tmp_path / "src" / "old_name" / "__init__.py").write_text("")
    (tmp_path / ".copier-answers.yml").write_text(answers)
    (tmp_path / "pyproject.toml").write_text('name = "old-name"\npackages = ["old_name"]\n')
    return tmp_path


def test_rename_moves_the_package_and_every_place_that_names_it(tmp_path):
    project = project_named(tmp_path, "_commit: v1\npackage_name: old_name\n")
    assert rename_package(project, "new_name") == "old_name"
    assert (project / "src" / "new_name" / "__init__.py").is_file()
    assert not (project / "src" / "old_name").exists()
    assert "package_name: new_name\n" in (project / ".copier-answers.yml").read_text()
    assert (project / "pyproject.toml").read_text() == (
        'name = "new-name"\npackages = ["new_name"]\n'
    )


@pytest.mark.parametrize(
    "answers, refusal",
    [
        # Without the answer, src/ itself must not pass for the package's folder.
        ("_commit: v1\n", "names no package_name: add the answer, then rename"),
        ("package_name: gone\n", "names package_name gone, but src/gone is no folder"),
    ],
)
def test_rename_refuses_answers_that_name_no_package_and_changes_nothing(
    tmp_path, answers, refusal
):
    project = project_named(tmp_path, answers)
    with pytest.raises(ConfigError, match=refusal):
        rename_package(project, "new_name")
    assert sorted(p.name for p in (project / "src").iterdir()) == ["old_name"]
    assert (project / ".copier-answers.yml").read_text() == answers
