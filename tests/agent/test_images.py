"""The image catalog: every generated stage, over the whole layout corpus, calls only tools its
image contains or one of its own earlier steps installs; caches sit where the images keep them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.images import (
    called_tools,
    family_of,
    image_tools,
    install_steps,
    missing_tools,
    repository_of,
)
from core.agent.proposal import propose_pipeline
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus import CORPUS, SampleRepo, write_repo
from workflows.agent_models import Preferences

PROVIDERS = (None, "vercel", "netlify", "docker")


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.mark.parametrize("sample", CORPUS, ids=[s.name for s in CORPUS])
def test_every_stage_has_the_tools_it_calls(sample: SampleRepo, corpus_root: Path) -> None:
    analysis = analyze_repository(write_repo(sample, corpus_root))
    for provider in PROVIDERS:
        proposal = propose_pipeline(analysis, Preferences(deploy_provider=provider))
        for stage in proposal.stages:
            if stage.image is None:
                # Docker builds run on the runner's own Docker (docker:27-dind beside them).
                assert stage.services == ["docker:27-dind"], stage.name
                continue
            assert family_of(stage.image) is not None, (stage.name, stage.image)
            provided = [
                tool
                for app in analysis.apps
                if app.path == stage.working_directory
                for tool in app.provided_tools
            ]
            assert missing_tools(stage.image, stage.commands, provided) == [], (
                sample.name,
                stage.name,
                stage.image,
                stage.commands,
            )


@pytest.mark.parametrize("sample", CORPUS, ids=[s.name for s in CORPUS])
def test_caches_sit_where_the_images_keep_them(sample: SampleRepo, corpus_root: Path) -> None:
    analysis = analyze_repository(write_repo(sample, corpus_root))
    never_used = {"~/.cache/poetry", "~/.cargo/registry", "~/go/pkg/mod", "vendor/bundle"}
    for stage in propose_pipeline(analysis).stages:
        assert not never_used & set(stage.cache_paths), (stage.name, stage.cache_paths)


def test_known_images_and_their_tools() -> None:
    node = image_tools("node:20")
    assert node is not None and {"node", "npm", "npx", "corepack"} <= node
    composer = image_tools("composer:2")
    assert composer is not None and {"php", "composer"} <= composer and "npm" not in composer
    rust = image_tools("rust:1.75.0")
    assert rust is not None and "cargo" in rust and "cargo-clippy" not in rust
    assert image_tools("registry.example/unknown:1") is None
    assert repository_of("docker.io/library/python:3.12-slim") == "python"
    assert repository_of("oven/bun:1@sha256:abc") == "oven/bun"


def test_tool_parsing_of_shell_lines() -> None:
    line = "(cd ../.. && FOO=1 pnpm install) && npx --yes x || test $? -lt 8; ./gradlew build"
    assert called_tools(line) == ["cd", "pnpm", "npx", "test"]
    assert called_tools("cargo clippy -- -D warnings && cargo fmt --check") == [
        "cargo-clippy",
        "cargo-fmt",
    ]
    assert missing_tools("python:3.12", ["pip install poetry && poetry install"]) == []
    assert missing_tools("python:3.12", ["poetry install", "pip install poetry"]) == ["poetry"]
    assert missing_tools("composer:2", ["composer install", "npm ci && npm run build"]) == ["npm"]
    assert install_steps("rust:1", ["cargo clippy"]) == ["rustup component add clippy"]
    assert missing_tools("unknown/image:1", ["anything"]) == []
    # Unbalanced quotes in a hostile script never crash the check.
    assert "npm" in called_tools("npm run 'broken && echo \"x")


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    return root


def test_laravel_assets_build_in_node_not_in_composer(tmp_path: Path) -> None:
    composer = {"require": {"php": "^8.2", "laravel/framework": "^11.0"}}
    pkg = {"scripts": {"build": "vite build"}, "devDependencies": {"vite": "5"}}
    root = _write(
        tmp_path,
        {
            "composer.json": json.dumps(composer),
            "artisan": "",
            "package.json": json.dumps(pkg),
            ".nvmrc": "20\n",
        },
    )
    proposal = propose_pipeline(analyze_repository(root))
    build = next(s for s in proposal.stages if s.stage_type == "build")
    assert build.image == "node:20"
    assert build.commands == ["npm install && npm run build"]  # no lockfile: no npm ci
    install = next(s for s in proposal.stages if s.stage_type == "install")
    assert install.image == "composer:2"
    assert validate_proposal(proposal).valid


def test_an_older_php_gets_composer_installed_first(tmp_path: Path) -> None:
    composer = {"require": {"php": ">=7.4 <8.1", "phpunit/phpunit": "^9"}}
    root = _write(tmp_path, {"composer.json": json.dumps(composer)})
    proposal = propose_pipeline(analyze_repository(root))
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert test.image == "php:8.0-cli"
    assert "getcomposer.org/installer" in test.commands[0]
    assert missing_tools(test.image, test.commands) == []


def test_node_caches_and_audit_follow_the_package_manager(tmp_path: Path) -> None:
    berry = {"name": "a", "scripts": {"build": "vite build"}, "packageManager": "yarn@4.1.0"}
    root = _write(tmp_path / "berry", {"package.json": json.dumps(berry), "yarn.lock": ""})
    assert analyze_repository(root).primary.cache_paths == ["~/.yarn/berry/cache", "node_modules"]
    classic = {"name": "b", "scripts": {"build": "vite build"}}
    root = _write(tmp_path / "classic", {"package.json": json.dumps(classic), "yarn.lock": ""})
    assert analyze_repository(root).primary.cache_paths == ["~/.cache/yarn", "node_modules"]
    root = _write(tmp_path / "unlocked", {"package.json": json.dumps(classic)})
    app = analyze_repository(root).primary
    assert app.install_command == "npm install"
    scan = next(
        s for s in propose_pipeline(analyze_repository(root)).stages if s.name == "security-scan"
    )
    assert scan.commands[0].startswith("npm install --package-lock-only --ignore-scripts && ")


def test_deploy_clis_run_on_the_apps_node(tmp_path: Path) -> None:
    pkg = {"name": "a", "scripts": {"build": "vite build"}, "dependencies": {"vue": "3"}}
    root = _write(tmp_path, {"package.json": json.dumps(pkg), ".nvmrc": "lts/jod"})
    analysis = analyze_repository(root)
    for provider in ("vercel", "netlify"):
        stages = propose_pipeline(analysis, Preferences(deploy_provider=provider)).stages
        assert next(s for s in stages if s.stage_type == "deploy").image == "node:22"


def test_rust_lint_adds_clippy_and_caches_under_cargo_home(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {"Cargo.toml": '[package]\nname = "x"\nversion = "0.1.0"\n', "Cargo.lock": ""},
    )
    proposal = propose_pipeline(analyze_repository(root))
    lint = next(s for s in proposal.stages if s.stage_type == "lint")
    assert lint.commands[-1].startswith("rustup component add clippy && cargo clippy")
    assert "/usr/local/cargo/registry" in lint.cache_paths


def test_polyglot_scans_run_each_in_its_own_image(tmp_path: Path) -> None:
    pkg = {"name": "web", "scripts": {"build": "vite build"}, "dependencies": {"vue": "3"}}
    root = _write(
        tmp_path,
        {
            "web/package.json": json.dumps(pkg),
            "web/package-lock.json": "{}",
            "api/requirements.txt": "fastapi\npytest\n",
        },
    )
    proposal = propose_pipeline(analyze_repository(root))
    scans = [s for s in proposal.stages if s.stage_type == "security_scan"]
    assert len(scans) == 2
    assert {s.image for s in scans} == {"node:20", "python:3.12"}
    deploy = next(s for s in proposal.stages if s.stage_type == "deploy")
    assert sorted(deploy.depends_on) == sorted(s.name for s in scans)
    assert validate_proposal(proposal).valid
