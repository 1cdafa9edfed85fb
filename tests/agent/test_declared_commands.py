"""Declared commands first: CI configs, Makefile/justfile targets, hosting configs, Dockerfile
and test entry points win over the detectors' guesses, when the app's image can run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.ci_configs import kind_of
from core.agent.proposal import propose_pipeline
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus import DECLARED_COMMANDS, SampleRepo, write_repo


@pytest.mark.parametrize("sample", DECLARED_COMMANDS, ids=[s.name for s in DECLARED_COMMANDS])
def test_layouts_run_what_the_repository_declares(sample: SampleRepo, tmp_path: Path) -> None:
    analysis = analyze_repository(write_repo(sample, tmp_path))
    app = analysis.primary
    assert app.framework == sample.framework
    for attribute, expected in sample.expect.items():
        assert getattr(app, attribute) == expected, (attribute, app.evidence)
    if sample.output_directory:
        assert app.output_directory == sample.output_directory
    proposal = propose_pipeline(analysis)
    test = next((s for s in proposal.stages if s.stage_type == "test"), None)
    if app.test_command:
        assert test is not None and test.commands[-1] == app.test_command
        assert all(step in test.commands for step in app.setup_commands)
    report = validate_proposal(proposal)
    assert report.valid, report.errors


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("pytest -q", "test"),
        ("npm run lint", "lint"),
        ("cargo build --release", "build"),
        ("poetry run mypy src", "lint"),
        ("npm ci", None),
        ("pip install -e .[test]", None),
        ("npm publish", None),
        ("docker build -t x .", None),
        ("npx playwright test", None),
        ("pytest --cov=${{ matrix.pkg }}", None),
        ("echo $GITHUB_SHA", None),
        ("git diff --exit-code && npm test", None),
        ("# pytest", None),
        ("uv run tox run -e typing", "lint"),
        ("nox -s lint", "lint"),
        ("pre-commit run --all-files", "lint"),
        ("make check", "test"),
        ("just build", "build"),
    ],
)
def test_ci_lines_are_classified(line: str, kind: str | None) -> None:
    assert kind_of(line) == kind


def _node_repo(root: Path, scripts: dict[str, str]) -> None:
    deps = {"express": "4.19.0", "jest": "29.0.0"}
    body = {"name": "svc", "scripts": scripts, "dependencies": deps}
    (root / "package.json").write_text(json.dumps(body))
    (root / "package-lock.json").write_text("{}")


def _workflow(root: Path, text: str, name: str = "ci.yml") -> None:
    folder = root / ".github" / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_stale_ci_commands_and_foreign_tools_are_not_taken(tmp_path: Path) -> None:
    _node_repo(tmp_path, {"test": "jest", "start": "node ."})
    _workflow(
        tmp_path,
        "jobs:\n  a:\n    steps:\n"
        "      - run: npm run test:legacy\n"  # the script no longer exists
        "      - run: jest --ci | tee out.txt\n"  # a pipe: not a plain check
        "      - run: tox -e py312\n",  # a tool the Node image lacks
    )
    app = analyze_repository(tmp_path).primary
    assert app.test_command == "npm test"
    assert "test" not in app.command_sources


def test_ci_lines_run_in_their_working_directory(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    _node_repo(tmp_path / "web", {"test": "jest", "test:ci": "jest --ci", "start": "node ."})
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "requirements.txt").write_text("fastapi\npytest\n")
    _workflow(
        tmp_path,
        "jobs:\n  web:\n    defaults:\n      run:\n        working-directory: web\n"
        "    steps:\n      - run: npm run test:ci\n"
        "  api:\n    steps:\n      - run: cd api && pytest -x\n",
    )
    analysis = analyze_repository(tmp_path)
    by_path = {a.path: a for a in analysis.apps}
    assert by_path["web"].test_command == "npm run test:ci"
    assert by_path["api"].test_command == "pytest -x"


def test_vercel_build_runs_dependency_binaries_through_the_package_manager(
    tmp_path: Path,
) -> None:
    deps = {"next": "14.2.0", "react": "18.3.0"}
    body = {"name": "site", "scripts": {"build": "next build"}, "dependencies": deps}
    (tmp_path / "package.json").write_text(json.dumps(body))
    (tmp_path / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    (tmp_path / "vercel.json").write_text(
        json.dumps({"buildCommand": "next build && next-sitemap", "outputDirectory": "out"})
    )
    app = analyze_repository(tmp_path).primary
    # next-sitemap is no dependency: the declared command is not runnable, the script stays.
    assert app.build_command == "pnpm run build"
    assert app.output_directory == "out"
    (tmp_path / "vercel.json").write_text(json.dumps({"buildCommand": "next build"}))
    assert analyze_repository(tmp_path).primary.build_command == "pnpm exec next build"


@pytest.mark.parametrize(
    "ci_text",
    [
        "a: &x [1]\nb: *x\n",  # aliases are refused
        "jobs: [1, 2]\n",
        "jobs:\n  a:\n    steps:\n      - run: 123\n      - run: [pytest]\n      - 7\n",
        "jobs:\n  a:\n    defaults:\n      run:\n        working-directory: ../../etc\n"
        "    steps:\n      - run: pytest\n",
        "{{{{ not yaml",
        "x: " + "[" * 200 + "]" * 200 + "\n",
    ],
)
def test_hostile_ci_files_never_break_the_analysis(ci_text: str, tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\npytest\n")
    _workflow(tmp_path, ci_text)
    (tmp_path / ".gitlab-ci.yml").write_text(ci_text)
    (tmp_path / ".travis.yml").write_text(ci_text)
    analysis = analyze_repository(tmp_path)
    assert analysis.primary.framework == "flask"
    assert validate_proposal(propose_pipeline(analysis)).valid


def test_an_oversized_ci_file_is_reported_not_read(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\npytest\n")
    _workflow(tmp_path, "jobs:\n  a:\n    steps:\n" + "      - run: pytest -k x\n" * 40_000)
    analysis = analyze_repository(tmp_path)
    assert "test" not in analysis.primary.command_sources
    assert "-k x" not in (analysis.primary.test_command or "")
    assert any(".github/workflows/ci.yml was not read" in n for n in analysis.notes)


def test_declared_commands_override_only_what_they_declare(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\npytest\nruff\n")
    (tmp_path / "Makefile").write_text("test:\n\tdocker compose run app pytest\n")
    app = analyze_repository(tmp_path).primary
    # A target that needs a container engine is no CI step: the detector's guess stays.
    assert app.test_command is not None and app.test_command.endswith("pytest")
    assert app.lint_command is not None and "ruff check" in app.lint_command
    assert app.command_sources == {}


def test_fly_toml_names_the_image_and_the_release_step(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("django\npytest-django\n")
    (tmp_path / "manage.py").write_text("")
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "web.Dockerfile").write_text("FROM python:3.12\n")
    (tmp_path / "fly.toml").write_text(
        'app = "shop"\n[build]\ndockerfile = "deploy/web.Dockerfile"\n'
        '[deploy]\nrelease_command = "python manage.py migrate"\n'
    )
    app = analyze_repository(tmp_path).primary
    assert app.has_dockerfile
    assert "fly.toml deploys the image of deploy/web.Dockerfile" in app.evidence
    assert any("python manage.py migrate" in e for e in app.evidence)
    (tmp_path / "fly.toml").write_text('[build]\ndockerfile = "../../etc/passwd"\n[deploy]\n')
    assert not analyze_repository(tmp_path).primary.has_dockerfile


def test_make_targets_from_ci_must_exist_and_foreign_runners_are_skipped(tmp_path: Path) -> None:
    _node_repo(tmp_path, {"test": "jest", "start": "node ."})
    (tmp_path / "Makefile").write_text("check:\n\tnpm test\n")
    _workflow(
        tmp_path,
        "jobs:\n"
        "  win:\n    runs-on: windows-latest\n    steps:\n      - run: npm run test:win\n"
        "  pwsh:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: Invoke-Pester\n        shell: pwsh\n"
        "  unix:\n    runs-on: [self-hosted, linux]\n    steps:\n"
        "      - run: make test\n"  # no such target: not taken
        "      - run: make check\n",
    )
    app = analyze_repository(tmp_path).primary
    assert app.test_command == "make check"
    assert app.command_sources["test"] == ".github/workflows/ci.yml"


def test_python_tools_the_install_does_not_bring_are_installed_or_refused(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\n")
    _workflow(
        tmp_path,
        "jobs:\n  a:\n    steps:\n"
        "      - run: pytest -m slow\n        if: github.event_name == 'schedule'\n"
        "      - run: tox -e py\n"
        "      - run: python -m flake8 src\n",
    )
    app = analyze_repository(tmp_path).primary
    # A conditional step is no usual check; tox is not in requirements.txt: pip brings it.
    assert app.test_command == "pip install tox && tox -e py"
    assert app.lint_command == "pip install flake8 && python -m flake8 src"
    (tmp_path / "requirements.txt").unlink()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.poetry]\nname = "x"\n[tool.poetry.dependencies]\npython = "^3.12"\nflask = "*"\n'
    )
    (tmp_path / "poetry.lock").write_text("")
    app = analyze_repository(tmp_path).primary
    # Poetry manages the environment: a tool it does not declare is not run.
    assert app.command_sources.get("test") != ".github/workflows/ci.yml"
    assert app.command_sources.get("lint") != ".github/workflows/ci.yml"


def test_steps_whose_environment_the_ci_fills_in_are_not_taken(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\npytest\ntox\n")
    _workflow(
        tmp_path,
        "jobs:\n  a:\n    steps:\n"
        "      - run: tox run\n        env:\n          TOX_ENV: ${{ matrix.tox }}\n"
        "      - run: pytest tests/fast\n        if: ${{ always() }}\n",
    )
    app = analyze_repository(tmp_path).primary
    assert app.test_command == "pytest tests/fast"


def test_a_tool_in_the_installed_requirements_runs_as_declared(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "-r requirements/base.txt\nPyTest==8.0 ; python_version>'3'\n"
    )
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "base.txt").write_text("flask\nMy_Lint.Tool\n")
    _workflow(tmp_path, "jobs:\n  a:\n    steps:\n      - run: python -m pytest -x\n")
    app = analyze_repository(tmp_path).primary
    assert app.install_command is not None and "requirements" in app.install_command
    assert app.test_command == "python -m pytest -x"


def test_a_gitlab_job_runs_the_script_of_the_template_it_extends(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\npytest\n")
    (tmp_path / ".gitlab-ci.yml").write_text(
        ".py:\n  image: python:3.12\n  script:\n    - pytest -q tests\n"
        "unit:\n  extends: .py\n"
        "odd:\n  extends: [7, .missing]\n"
    )
    app = analyze_repository(tmp_path).primary
    assert app.test_command == "pytest -q tests"
    assert app.command_sources["test"] == ".gitlab-ci.yml"
