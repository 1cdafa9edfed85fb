"""JS workspaces as one project: the root kept, members inheriting the root's package manager,
lockfile and Node version, apps told apart from libraries and tooling, builds and tests through
the task runner, and hostile workspace declarations."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.images import COREPACK_ENABLE
from core.agent.js_workspaces import MAX_MEMBERS, runner_command
from core.agent.proposal import propose_pipeline
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus import JS_WORKSPACES, write_repo
from workflows.agent_models import RepoAnalysis

LAYOUTS = {s.name: s for s in JS_WORKSPACES}


def _analyse(name: str, tmp_path: Path) -> RepoAnalysis:
    return analyze_repository(write_repo(LAYOUTS[name], tmp_path))


def _app(analysis: RepoAnalysis, path: str):
    return next(a for a in analysis.apps if a.path == path)


def test_turbo_workspace_is_one_project_driven_by_its_runner(tmp_path: Path) -> None:
    analysis = _analyse("turbo-pnpm", tmp_path)
    assert analysis.task_runner == "turbo"
    assert analysis.primary.role == "app"
    assert analysis.workspace_packages == {
        "packages/eslint-config": "tooling",
        "packages/tsconfig": "tooling",
        "packages/ui": "library",
    }
    root = _app(analysis, ".")
    assert root.role == "workspace"
    assert root.lint_command == "pnpm run lint"  # declared by the root
    assert root.test_command == "pnpm exec turbo run test"  # a runner task nobody scripted
    assert root.build_command is None  # the apps build, the root would build them twice
    for path in ("apps/web", "apps/docs"):
        app = _app(analysis, path)
        assert (app.package_manager, app.image, app.lockfiles) == (
            "pnpm",
            "node:22",
            ["pnpm-lock.yaml"],
        )
        assert app.install_command is None
        assert app.test_command is None and app.lint_command is None
    assert _app(analysis, "apps/web").build_command == (
        "cd ../.. && pnpm exec turbo run build --filter=web"
    )
    proposal = propose_pipeline(analysis)
    assert [s.name for s in proposal.stages].count("install") == 1
    install = proposal.stages[0]
    assert install.commands == [f"{COREPACK_ENABLE} && pnpm install --frozen-lockfile"]
    for stage in proposal.stages:
        assert len(stage.depends_on) == len(set(stage.depends_on)), stage.name
        assert not any(c.startswith("npm ") for c in stage.commands), stage.name
    web = next(s for s in proposal.stages if s.name == "web-build")
    assert web.artifact_paths == ["apps/web/.next"]
    # The root's .env (from its example) is what the members' builds read.
    assert web.commands[1] == "(cd ../.. && cp -n .env.example .env)"
    lint = next(s for s in proposal.stages if s.name == "acme-lint")
    assert lint.commands[1:] == ["cp -n .env.example .env", "pnpm run lint"]
    report = validate_proposal(proposal)
    assert report.valid, report.errors


def test_nx_builds_members_by_project_name_and_tests_with_run_many(tmp_path: Path) -> None:
    analysis = _analyse("nx-npm", tmp_path)
    assert analysis.task_runner == "nx"
    assert analysis.workspace_packages == {"apps/admin-e2e": "tooling", "libs/util": "library"}
    assert _app(analysis, "apps/api").build_command == "cd ../.. && npx nx run shop-api:build"
    # An nx application without a build script still builds through its project's target.
    assert _app(analysis, "apps/admin").build_command == "cd ../.. && npx nx run admin:build"
    root = _app(analysis, ".")
    # `nx test` alone tests the default project: the workspace is tested with run-many.
    assert (root.framework, root.test_command) == ("nx", "npx nx run-many -t test")
    assert root.build_command is None
    assert validate_proposal(propose_pipeline(analysis)).valid


def test_an_integrated_nx_repository_is_its_root_driven_by_nx(tmp_path: Path) -> None:
    analysis = _analyse("nx-integrated", tmp_path)
    [root] = analysis.apps
    # The hoisted next dependency makes no Next.js app of the root.
    assert (root.framework, root.role) == ("nx", "workspace")
    assert root.build_command == "npx nx run-many -t build"
    assert root.test_command == "npx nx run-many -t test"
    assert root.lint_command == "npx nx run-many -t lint"
    assert root.output_directory == "dist/apps/store-web"
    assert analysis.workspace_packages == {"apps/store": "component", "libs/cart": "component"}
    assert validate_proposal(propose_pipeline(analysis)).valid


def test_apps_of_other_ecosystems_beside_a_workspace_are_kept(tmp_path: Path) -> None:
    analysis = _analyse("bun-frontend-python-backend", tmp_path)
    assert sorted(a.path for a in analysis.apps) == ["backend", "frontend"]
    frontend = _app(analysis, "frontend")
    assert (frontend.package_manager, frontend.lockfiles) == ("bun", ["bun.lock"])
    assert frontend.e2e_test_command == "bun run test"
    assert frontend.test_command is None and frontend.lint_command is None
    assert analysis.workspace_install_command == "bun install --frozen-lockfile"
    # The root's scripts only run the frontend's end-to-end suite and its fixer: no root stage.
    assert "." not in {a.path for a in analysis.apps}
    assert validate_proposal(propose_pipeline(analysis)).valid


def test_redwood_is_one_app_built_by_its_cli(tmp_path: Path) -> None:
    analysis = _analyse("redwood-yarn", tmp_path)
    [app] = analysis.apps
    assert (app.framework, app.path, app.output_directory) == ("redwood", ".", "web/dist")
    assert (app.build_command, app.test_command) == ("yarn rw build", "yarn rw test --no-watch")
    assert analysis.workspace_install_command == f"{COREPACK_ENABLE} && yarn install --immutable"
    assert analysis.workspace_packages == {"api": "component", "web": "component"}


def test_a_root_app_is_kept_and_a_member_may_pin_its_own_node(tmp_path: Path) -> None:
    analysis = _analyse("yarn-workspaces-root-app", tmp_path)
    root = _app(analysis, ".")
    assert (root.role, root.framework, root.build_command) == ("app", "react-vite", "yarn build")
    legacy = _app(analysis, "packages/legacy-app")
    assert (legacy.package_manager, legacy.image) == ("yarn", "node:18")
    assert legacy.lockfiles == ["yarn.lock"]
    assert analysis.workspace_packages == {"packages/utils": "library"}


def test_two_apps_without_builds_are_needed_once(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"workspaces": ["apps/*"]}))
    (tmp_path / "package-lock.json").write_text("{}")
    for name in ("a", "b"):
        app = tmp_path / "apps" / name
        app.mkdir(parents=True)
        deps = {"express": "4.0.0"}
        scripts = {"start": "node .", "test": "node --test"}
        (app / "package.json").write_text(
            json.dumps({"name": name, "scripts": scripts, "dependencies": deps})
        )
    proposal = propose_pipeline(analyze_repository(tmp_path))
    for stage in proposal.stages:
        assert len(stage.depends_on) == len(set(stage.depends_on)), stage
    assert validate_proposal(proposal).valid


def test_hostile_workspace_globs_stay_inside_the_repository(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "evil").mkdir(parents=True)
    (outside / "evil" / "package.json").write_text(json.dumps({"name": "evil"}))
    repo = tmp_path / "repo"
    (repo / "apps").mkdir(parents=True)
    (repo / "apps" / "link").symlink_to(outside / "evil")
    (repo / "package.json").write_text(
        json.dumps({"workspaces": ["../outside/*", "/etc/*", "apps/**", "!apps/skip", 7]})
    )
    skip = repo / "apps" / "skip"
    skip.mkdir()
    (skip / "package.json").write_text(json.dumps({"name": "skip", "dependencies": {"next": "1"}}))
    for i in range(MAX_MEMBERS + 50):
        member = repo / "apps" / f"m{i:03d}"
        member.mkdir()
        (member / "package.json").write_text(json.dumps({"name": f"m{i}", "main": "i.js"}))
    analysis = analyze_repository(repo)
    members = set(analysis.workspace_packages) | {a.path for a in analysis.apps}
    assert "apps/skip" not in members and "apps/link" not in members
    assert all(m.startswith("apps/m") for m in members if m != ".")
    assert len(members) <= MAX_MEMBERS + 1


@pytest.mark.parametrize("workspaces", ["apps/*", 42, {"packages": "x"}, [None, {}], []])
def test_malformed_workspaces_fields_are_ignored(workspaces: object, tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"name": "x", "workspaces": workspaces}))
    (tmp_path / "index.html").write_text("<!doctype html>")
    assert analyze_repository(tmp_path).primary.path == "."


def test_hostile_package_names_are_quoted_for_the_runner() -> None:
    command = runner_command("turbo", "pnpm", "build", "$(id)'x")
    assert command == "pnpm exec turbo run build --filter='$(id)'\"'\"'x'"
    assert runner_command("nx", "npm", "build", "@acme/web") == "npx nx run @acme/web:build"


def test_concurrent_analyses_of_one_checkout_agree(tmp_path: Path) -> None:
    repo = write_repo(LAYOUTS["turbo-pnpm"], tmp_path)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: analyze_repository(repo), range(12)))
    assert all(r == results[0] for r in results)
