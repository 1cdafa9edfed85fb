"""The planner detects each corpus repository; each generated pipeline validates in both formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.images import COREPACK_ENABLE
from core.agent.proposal import propose_pipeline
from core.agent.yarn_classic import with_yarn
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus import CORPUS, SampleRepo, write_repo
from workflows.agent_models import Preferences


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.mark.parametrize("sample", CORPUS, ids=[s.name for s in CORPUS])
def test_detects_framework(sample: SampleRepo, corpus_root: Path) -> None:
    analysis = analyze_repository(write_repo(sample, corpus_root))
    assert analysis.is_monorepo == sample.monorepo
    if sample.monorepo:
        assert sorted(a.framework for a in analysis.apps) == sorted(sample.app_frameworks)
        return
    app = analysis.primary
    assert app.framework == sample.framework, app.evidence
    assert app.confidence >= 0.6
    if sample.package_manager:
        assert app.package_manager == sample.package_manager
    if sample.output_directory:
        assert app.output_directory == sample.output_directory
    assert app.estimated_build_seconds > 0


@pytest.mark.parametrize("sample", CORPUS, ids=[s.name for s in CORPUS])
def test_generated_pipeline_validates(sample: SampleRepo, corpus_root: Path) -> None:
    analysis = analyze_repository(write_repo(sample, corpus_root))
    proposal = propose_pipeline(analysis, Preferences())
    report = validate_proposal(proposal)
    assert report.valid, report.errors
    assert report.github_actions_yaml and "jobs:" in report.github_actions_yaml
    assert report.gitlab_ci_yaml and "stages:" in report.gitlab_ci_yaml
    types = [s.stage_type for s in proposal.stages]
    assert "deploy" in types
    deploy = next(s for s in proposal.stages if s.stage_type == "deploy")
    assert deploy.conditions["branch"] == ["main"]


def test_node_commands_follow_the_package_manager(corpus_root: Path) -> None:
    by_name = {s.name: s for s in CORPUS}
    pnpm = analyze_repository(write_repo(by_name["nextjs-export-pnpm"], corpus_root)).primary
    assert pnpm.install_command == f"{COREPACK_ENABLE} && pnpm install --frozen-lockfile"
    assert pnpm.build_command == "pnpm run build"
    yarn = analyze_repository(write_repo(by_name["react-vite-yarn"], corpus_root)).primary
    assert yarn.install_command == with_yarn("yarn install --frozen-lockfile")
    assert yarn.test_command == "yarn test"
    bun = analyze_repository(write_repo(by_name["vue-vite-bun"], corpus_root)).primary
    assert bun.image == "oven/bun:1"


def test_monorepo_installs_once_and_prefixes_stages(corpus_root: Path) -> None:
    sample = next(s for s in CORPUS if s.name == "monorepo-workspaces")
    analysis = analyze_repository(write_repo(sample, corpus_root))
    proposal = propose_pipeline(analysis)
    names = [s.name for s in proposal.stages]
    assert names[0] == "install"
    assert "web-build" in names and "admin-build" in names
    web_build = next(s for s in proposal.stages if s.name == "web-build")
    assert web_build.working_directory == "apps/web"
    assert web_build.commands[0] == "(cd ../.. && npm ci)"


def test_preferences_drop_stages_and_pick_deploy_provider(corpus_root: Path) -> None:
    sample = next(s for s in CORPUS if s.name == "nextjs-npm")
    analysis = analyze_repository(write_repo(sample, corpus_root))
    prefs = Preferences(include_tests=False, deploy_provider="vercel", default_branch="prod")
    proposal = propose_pipeline(analysis, prefs)
    assert "test" not in [s.stage_type for s in proposal.stages]
    deploy = proposal.stages[-1]
    assert "vercel deploy" in deploy.commands[0]
    report = validate_proposal(proposal)
    assert report.valid, report.errors
    assert "secrets.VERCEL_TOKEN" in (report.github_actions_yaml or "")
    assert "refs/heads/prod" in (report.github_actions_yaml or "")


def test_empty_repository_gives_placeholder(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hello")
    analysis = analyze_repository(tmp_path)
    assert analysis.primary.framework == "unknown"
    assert analysis.primary.confidence < 0.5


def test_framework_hint_orders_monorepo_apps(corpus_root: Path) -> None:
    sample = next(s for s in CORPUS if s.name == "monorepo-polyglot")
    root = write_repo(sample, corpus_root)
    assert analyze_repository(root, framework_hint="fastapi").primary.framework == "fastapi"
    assert analyze_repository(root, framework_hint="vue").primary.framework == "vue"
