"""Submodules as the maintainers' CI checks them out: declared in .gitmodules and fetched by the
CI (or no CI to say otherwise), the stages that read the checkout fetch them first."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from core.agent.repo_files import RepoFiles
from core.agent.submodule_checkout import SUBMODULE_STEP, submodule_setup
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus import SampleRepo, write_repo

GITMODULES = '[submodule "tests/data"]\n\tpath = tests/data\n\turl = https://example.com/data.git\n'
PYPROJECT = """\
[tool.poetry]
name = "lib"
version = "1.0"

[tool.poetry.dependencies]
python = "^3.9"

[tool.poetry.group.dev.dependencies]
pytest = "^8"

[build-system]
requires = ["poetry-core"]
build-backend = "poetry.core.masonry.api"
"""


def _workflow(checkout: str) -> str:
    return (
        "name: Tests\non: [push]\njobs:\n  tests:\n    runs-on: ubuntu-latest\n    steps:\n"
        f"      - uses: actions/checkout@v4\n{checkout}"
        "      - run: pipx install poetry\n      - run: poetry install\n"
        "      - run: poetry run pytest -q tests\n"
    )


GITLAB = "variables:\n  GIT_SUBMODULE_STRATEGY: recursive\ntest:\n  script: [pytest]\n"
NOT_FETCHED = "        with:\n          submodules: false\n"
RECURSIVE = '        with:\n          submodules: "recursive"\n'


def _files(tmp_path: Path, files: dict[str, str], name: str = "lib") -> RepoFiles:
    return RepoFiles(write_repo(SampleRepo(name=name, framework="python", files=files), tmp_path))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({".github/workflows/t.yml": _workflow(RECURSIVE)}, [SUBMODULE_STEP]),
        ({".github/workflows/t.yml": _workflow("        with:\n          submodules: true\n")},
         [SUBMODULE_STEP]),
        ({".github/workflows/t.yml": _workflow("      - run: git submodule update --init\n")},
         [SUBMODULE_STEP]),
        ({".gitlab-ci.yml": GITLAB}, [SUBMODULE_STEP]),
        ({}, [SUBMODULE_STEP]),
        ({".github/workflows/t.yml": _workflow("")}, []),
        ({".github/workflows/t.yml": _workflow(NOT_FETCHED)}, []),
    ],
)  # fmt: skip
def test_the_step_follows_what_the_ci_checks_out(
    extra: dict[str, str], expected: list[str], tmp_path: Path
) -> None:
    files = _files(tmp_path, {".gitmodules": GITMODULES, "pyproject.toml": PYPROJECT, **extra})
    assert submodule_setup(files) == expected


def test_no_declared_submodule_no_step(tmp_path: Path) -> None:
    files = _files(
        tmp_path, {"pyproject.toml": PYPROJECT, ".github/workflows/t.yml": _workflow(RECURSIVE)}
    )
    assert submodule_setup(files) == []


@pytest.mark.parametrize(
    "gitmodules",
    [
        '[submodule "x"]\n\tpath = ../../etc\n\turl = https://example.com/x.git\n',
        '[submodule "x"]\n\tpath = /etc\n\turl = ext::sh -c touch% /tmp/pwned\n',
        "\x00" * 70_000,
        "[submodule\n" * 5000,
    ],
)
def test_hostile_gitmodules_give_no_step(gitmodules: str, tmp_path: Path) -> None:
    files = _files(tmp_path, {".gitmodules": gitmodules, "pyproject.toml": PYPROJECT})
    assert submodule_setup(files) == []


def test_the_generated_test_stage_fetches_the_submodules_first(tmp_path: Path) -> None:
    files = {
        ".gitmodules": GITMODULES,
        "pyproject.toml": PYPROJECT,
        "poetry.lock": "# lock\n",
        "lib/__init__.py": "",
        "tests/test_lib.py": "def test_x():\n    assert True\n",
        ".github/workflows/t.yml": _workflow(RECURSIVE),
    }
    root = write_repo(SampleRepo(name="withsub", framework="python", files=files), tmp_path)
    proposal = propose_pipeline(analyze_repository(root))
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert SUBMODULE_STEP in test.commands
    assert test.commands.index(SUBMODULE_STEP) < len(test.commands) - 1
    assert test.commands.count(SUBMODULE_STEP) == 1
    install = next(s for s in proposal.stages if s.stage_type == "install")
    assert SUBMODULE_STEP not in install.commands
    assert validate_proposal(proposal).valid
    # A second generation of the same checkout (a retried activity) proposes the same stages.
    again = propose_pipeline(analyze_repository(root))
    assert again.model_dump() == proposal.model_dump()


def test_a_ci_file_past_the_bound_is_read_only_to_it(tmp_path: Path) -> None:
    workflow = _workflow("") + "#\n" * 200_000 + "      - run: git submodule update --init\n"
    files = _files(tmp_path, {".gitmodules": GITMODULES, ".github/workflows/t.yml": workflow})
    assert submodule_setup(files) == []
