"""nox as the noxfile needs it: its declared needs_version, and a release from before nox's
options refused unknown attributes when the noxfile sets one (`nox.options.needs_version`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from core.agent.python_tool_pins import nox_requirement
from tests.agent.corpus import SampleRepo, write_repo

CI = """\
name: Test
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
    - uses: actions/checkout@v4
    - uses: actions/setup-python@v5
      with:
        python-version: '3.12'
    - run: python -m pip install --upgrade nox
    - run: python -m nox -s lint
"""
PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "sample"
version = "1.0"
"""


def _noxfile(options: str) -> str:
    return f"import nox\n\n{options}\n\n@nox.session\ndef lint(session):\n    session.run('true')\n"


@pytest.mark.parametrize(
    ("noxfile", "expected"),
    [
        ('nox.options.needs_version = ">= 2024.3.2"', "nox>=2024.3.2,<2025.2.9"),
        ('nox.needs_version = ">=2024.3.2"', "nox>=2024.3.2"),
        ('nox.needs_version = ">=2025.5.1"\nnox.options.sessions = ["lint"]', "nox>=2025.5.1"),
        ('nox.options.sessions = ["lint"]\nnox.options.reuse_venv = "yes"', "nox"),
        ("nox.options.stop_on_first_eror = True", "nox<2025.2.9"),
        ('nox.needs_version = ">=2025.10.1"\nnox.options.custom = 1', "nox>=2025.10.1"),
        ('nox.needs_version = "<2024"\nnox.options.custom = 1', "nox<2024"),
        ("", "nox"),
    ],
)
def test_the_requirement_follows_the_noxfile(noxfile: str, expected: str) -> None:
    assert nox_requirement(_noxfile(noxfile)) == expected


def test_a_refused_option_seen_in_a_run_pins_below_the_strict_release() -> None:
    assert nox_requirement(_noxfile(""), refused=True) == "nox<2025.2.9"
    assert nox_requirement(None, refused=True) == "nox<2025.2.9"


@pytest.mark.parametrize(
    "hostile",
    [
        'nox.needs_version = "; rm -rf / #"',
        'nox.needs_version = ">=1 && curl evil"',
        "nox.needs_version = '$(touch x)'",
        'nox.needs_version = "' + ">=1," * 500 + '"',
        "\x00" * 10_000 + 'nox.needs_version = ">=2024"',
        "nox.options.needs_version == '>=1'",
    ],
)
def test_hostile_noxfiles_give_only_parsed_specifiers(hostile: str) -> None:
    requirement = nox_requirement(hostile)
    assert requirement.startswith("nox")
    assert not any(c in requirement for c in ";&$`'\" ")
    assert len(requirement) < 100


def test_a_huge_noxfile_is_read_only_to_its_bound() -> None:
    text = "#\n" * 300_000 + 'nox.needs_version = ">=2024.3.2"\nnox.options.custom = 1\n'
    assert nox_requirement(text) == "nox"


def test_the_generated_lint_stage_installs_the_nox_the_noxfile_needs(tmp_path: Path) -> None:
    noxfile = _noxfile('nox.options.sessions = ["lint"]\nnox.options.needs_version = ">= 2024.3.2"')
    sample = SampleRepo(
        name="noxlib",
        framework="python",
        files={
            "pyproject.toml": PYPROJECT,
            "noxfile.py": noxfile,
            "src/sample/__init__.py": "",
            ".github/workflows/test.yml": CI,
        },
    )
    analysis = analyze_repository(write_repo(sample, tmp_path))
    proposal = propose_pipeline(analysis)
    lint = next(s for s in proposal.stages if s.stage_type == "lint")
    assert "pip install 'nox>=2024.3.2,<2025.2.9' && python -m nox -s lint" in lint.commands


def test_two_generations_of_one_repository_pin_alike(tmp_path: Path) -> None:
    """A duplicate generation (a retried activity) reads the same pin."""
    sample = SampleRepo(
        name="noxlib2",
        framework="python",
        files={"pyproject.toml": PYPROJECT, "noxfile.py": _noxfile("nox.options.x = 1"),
               ".github/workflows/test.yml": CI},
    )  # fmt: skip
    root = write_repo(sample, tmp_path)
    first = propose_pipeline(analyze_repository(root))
    second = propose_pipeline(analyze_repository(root))
    assert first.model_dump() == second.model_dump()


REFUSED = (
    "nox > Running session lint\n"
    '    nox.options.needs_version = ">= 2024.3.2"\n'
    "AttributeError: 'NoxfileOptions' object has no attribute 'needs_version'\n"
)


PIN = "'nox>=2024.3.2,<2025.2.9'"


def _stage(commands: list[str]) -> dict[str, object]:
    return {"name": "lint", "commands": commands, "working_directory": "."}


@pytest.mark.parametrize(
    ("command", "fixed"),
    [
        ("python -m pip install --upgrade nox", f"python -m pip install --upgrade {PIN}"),
        ("pip install nox && nox -s lint", f"pip install {PIN} && nox -s lint"),
        ("pip install -U nox[uv] flake8", "pip install -U nox[uv] flake8"),
    ],
)  # fmt: skip
def test_a_refused_noxfile_option_is_repaired_with_the_release_it_needs(
    command: str, fixed: str, tmp_path: Path
) -> None:
    from core.agent.repairs import repair_stage

    (tmp_path / "noxfile.py").write_text(_noxfile('nox.options.needs_version = ">= 2024.3.2"'))
    repaired = repair_stage(_stage([command, "python -m nox -s lint"]), [], REFUSED, tmp_path)
    if fixed == command:
        assert repaired is None
        return
    assert repaired is not None
    assert repaired.stage["commands"] == [fixed, "python -m nox -s lint"]
    assert "2025.2.9" in repaired.diagnosis


def test_an_already_pinned_nox_or_another_failure_is_not_repaired(tmp_path: Path) -> None:
    from core.agent.repairs import repair_stage

    (tmp_path / "noxfile.py").write_text(_noxfile("nox.options.x = 1"))
    pinned = _stage(["pip install 'nox<2025.2.9' && nox -s lint"])
    assert repair_stage(pinned, [], REFUSED, tmp_path) is None
    other = _stage(["pip install nox && nox -s lint"])
    assert (
        repair_stage(other, [], "AttributeError: 'Foo' object has no attribute 'x'", tmp_path)
        is None
    )


def test_a_noxfile_outside_the_checkout_is_not_read(tmp_path: Path) -> None:
    from core.agent.repairs import repair_stage

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "noxfile.py").write_text('nox.needs_version = ">=1999"\n')
    root = tmp_path / "repo"
    root.mkdir()
    stage = {**_stage(["pip install nox"]), "working_directory": "../outside"}
    repaired = repair_stage(stage, [], REFUSED, root)
    assert repaired is not None
    assert repaired.stage["commands"] == ["pip install 'nox<2025.2.9'"]
