"""A bare tox run in a Python matrix leg runs the environments of the leg's Python (tox 4's
`-f py3XY`), as a CI's tox-gh-actions does; without it each leg ran the whole envlist."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from core.agent.repo_files import RepoFiles
from core.agent.tox_legs import LEG_FACTOR, tox_per_leg
from tests.agent.corpus.sample import SampleRepo, write_repo
from workflows.agent_models import AppDetection

TOX_INI = """[tox]
envlist =
    lint
    py{39,310,311}-{crypto,nocrypto}
    docs

[testenv]
commands = pytest
"""

CI = """name: CI
on: [push]
jobs:
  tests:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        python-version: ["3.9", "3.10", "3.11"]
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python-version }}
      - run: python -m pip install --upgrade tox tox-gh-actions
      - run: python -m tox
"""


def _app(command: str | None, versions: list[str], image: str = "python:3.11") -> AppDetection:
    return AppDetection(
        name="lib",
        language="python",
        framework="python-lib",
        confidence=1.0,
        test_command=command,
        image=image,
        version_matrix=versions,
    )


def _files(tmp_path: Path, tox_ini: str = TOX_INI) -> RepoFiles:
    (tmp_path / "tox.ini").write_text(tox_ini)
    return RepoFiles(tmp_path)


def test_the_generated_test_stage_runs_the_legs_environments(tmp_path: Path) -> None:
    sample = SampleRepo(
        "tox-legs",
        "python-lib",
        {
            "pyproject.toml": '[project]\nname = "lib"\nversion = "1"\nrequires-python = ">=3.9"\n',
            "lib/__init__.py": "",
            "tests/test_lib.py": "def test_x():\n    pass\n",
            "tox.ini": TOX_INI,
            ".github/workflows/ci.yml": CI,
        },
    )
    proposal = propose_pipeline(analyze_repository(write_repo(sample, tmp_path)))
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert test.matrix == {"PYTHON_VERSION": ["3.9", "3.10", "3.11"]}
    assert test.commands[-1].endswith(f"python -m tox{LEG_FACTOR}")


@pytest.mark.parametrize("version", ["3.9", "3.10", "3.13"])
def test_the_factor_is_the_legs_python(tmp_path: Path, version: str) -> None:
    """The command as a leg's shell runs it (PYTHON_VERSION is the leg's variable)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "tox").write_text('#!/bin/sh\necho "$@"\n')
    (tools / "tox").chmod(0o755)
    app = _app("tox", ["3.9", "3.10", "3.13"])
    tox_per_leg(_files(tmp_path, TOX_INI.replace("311", "313")), app)
    env = {"PATH": f"{tools}:/usr/bin:/bin", "PYTHON_VERSION": version}
    done = subprocess.run(
        ["/bin/sh", "-c", app.test_command or ""], env=env, capture_output=True, text=True
    )
    assert done.stdout.split() == ["-f", f"py{version.replace('.', '')}"]


@pytest.mark.parametrize(
    ("command", "versions", "image"),
    [
        ("python -m tox -e py310", ["3.9", "3.10", "3.11"], "python:3.11"),  # its own selection
        ("tox -m tests", ["3.9", "3.10", "3.11"], "python:3.11"),
        ("pip install tox", ["3.9", "3.10", "3.11"], "python:3.11"),  # no tox run
        ("pytest", ["3.9", "3.10", "3.11"], "python:3.11"),
        ("python -m tox", ["3.11"], "python:3.11"),  # no matrix
        ("python -m tox", ["3.9", "3.12"], "python:3.11"),  # 3.12 has no environments
        ("python -m tox", ["3.9", "3.10"], "node:22"),
        (None, ["3.9", "3.10"], "python:3.11"),
    ],
)
def test_left_as_it_is(
    tmp_path: Path, command: str | None, versions: list[str], image: str
) -> None:
    app = _app(command, versions, image)
    tox_per_leg(_files(tmp_path), app)
    assert app.test_command == command


@pytest.mark.parametrize(
    "tox_ini",
    ["[tox\nenvlist = py{39,310", "[tox]\nenvlist = py{" + "9," * 5000 + "}", "\x00\xff", ""],
)
def test_a_broken_or_hostile_tox_config_changes_nothing(tmp_path: Path, tox_ini: str) -> None:
    app = _app("python -m tox", ["3.9", "3.10"])
    tox_per_leg(_files(tmp_path, tox_ini), app)
    assert app.test_command == "python -m tox"


def test_applied_twice_selects_once(tmp_path: Path) -> None:
    app = _app("pip install tox && python -m tox && echo done", ["3.9", "3.10"])
    files = _files(tmp_path)
    tox_per_leg(files, app)
    tox_per_leg(files, app)
    assert app.test_command == f"pip install tox && python -m tox{LEG_FACTOR} && echo done"
