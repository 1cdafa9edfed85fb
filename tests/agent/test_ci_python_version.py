"""The Python a repository's own CI sets up (`actions/setup-python` with one literal version)
is the image's Python when no file pins one: an application pinned to old wheels builds on the
version its maintainers use, not on the newest."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from tests.agent.corpus.sample import SampleRepo, write_repo

APP = {
    "requirements.txt": "fastapi==0.95.2\nPyYAML==6.0\npytest==7.3.1\n",
    "main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
    "test_main.py": "def test_ok():\n    assert True\n",
}


def _workflow(version: str) -> str:
    return (
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        "    - uses: actions/checkout@v3\n    - uses: actions/setup-python@v3\n"
        f"      with:\n        python-version: {version}\n    - run: pytest\n"
    )


def _image(tmp_path: Path, name: str, files: dict[str, str]) -> str | None:
    repo = write_repo(SampleRepo(name, "python", {**APP, **files}), tmp_path)
    return analyze_repository(repo).primary.image


def test_the_ci_s_python_is_the_image_s(tmp_path: Path) -> None:
    image = _image(tmp_path, "ci-39", {".github/workflows/ci.yml": _workflow('"3.9"')})
    assert image == "python:3.9"


def test_a_file_pin_wins_over_the_ci(tmp_path: Path) -> None:
    files = {".github/workflows/ci.yml": _workflow('"3.9"'), ".python-version": "3.11.4\n"}
    assert _image(tmp_path, "pinned", files) == "python:3.11"


@pytest.mark.parametrize(
    ("name", "workflows"),
    [
        ("expression", {".github/workflows/ci.yml": _workflow("${{ matrix.python }}")}),
        (
            "two-versions",
            {
                ".github/workflows/a.yml": _workflow('"3.9"'),
                ".github/workflows/b.yml": _workflow('"3.11"'),
            },
        ),
        ("hostile", {".github/workflows/ci.yml": _workflow('"' + "3" * 5000 + '"')}),
        ("not-yaml", {".github/workflows/ci.yml": "jobs: [\x00 {{{"}),
    ],
)
def test_no_single_literal_version_pins_nothing(
    name: str, workflows: dict[str, str], tmp_path: Path
) -> None:
    without = _image(tmp_path / "plain", name, {})
    assert _image(tmp_path, name, workflows) == without
