"""A JavaScript workspace turned into the projects a pipeline builds: the root kept (its own
scripts, or the task runner across every member), each deployable member built through the
runner, libraries and tooling covered by the root instead of stages of their own."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from core.agent.detectors import detect_app
from core.agent.js_workspaces import BUILT_BY_MEMBERS, Workspace, member_role, runner_command
from core.agent.repo_files import RepoFiles, join
from core.agent.scripts import classify, delegation, writes
from workflows.agent_models import AppDetection

JS_LANGUAGES = ("javascript", "typescript")


@dataclass
class WorkspaceProjects:
    apps: list[AppDetection]
    packages: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _engines_node(pkg: dict[str, Any]) -> bool:
    engines = pkg.get("engines")
    return isinstance(engines, dict) and bool(engines.get("node"))


def _up(path: str) -> str:
    return "/".join([".."] * len(PurePosixPath(path).parts)) or "."


def _inherit(app: AppDetection, pkg: dict[str, Any], root_app: AppDetection) -> None:
    """A member installs with the root and runs on the root's Node unless it pins its own."""
    app.package_manager = root_app.package_manager
    app.lockfiles = list(root_app.lockfiles)
    app.cache_paths = list(root_app.cache_paths)
    if not _engines_node(pkg) and root_app.image:
        app.image = root_app.image
    app.install_command = None
    # What the root sets up (its .env, a generated client) the member's tools read too.
    inherited = [f"(cd {_up(app.path)} && {step})" for step in root_app.setup_commands]
    app.setup_commands = [*inherited, *(s for s in app.setup_commands if s not in inherited)]


def _member(
    files: RepoFiles, path: str, workspace: Workspace, root_app: AppDetection | None
) -> tuple[AppDetection | None, str]:
    app = detect_app(files, path)
    if app is None:
        return None, "tooling"
    if app.language not in JS_LANGUAGES:
        return app, "app"
    pkg = files.json(join(path, "package.json")) or {}
    project = files.json(join(path, "project.json")) or {}
    has_index = any(files.exists(join(path, n)) for n in ("index.html", "public/index.html"))
    role = member_role(app.framework, pkg, path, has_index, project)
    app.role = role
    if root_app is not None and root_app.language in JS_LANGUAGES:
        _inherit(app, pkg, root_app)
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    targets = project.get("targets") if isinstance(project.get("targets"), dict) else {}
    runner = workspace.runner
    builds = (isinstance(scripts, dict) and "build" in scripts) or (
        runner == "nx" and isinstance(targets, dict) and "build" in targets
    )
    if (
        role == "app"
        and runner in ("turbo", "nx", "lerna")
        and builds
        and (runner != "turbo" or "build" in workspace.runner_tasks)
    ):
        name = str(project.get("name") or pkg.get("name") or PurePosixPath(path).name)
        manager = app.package_manager or "npm"
        # The runner builds the member's workspace dependencies first, from the root.
        app.build_command = f"cd {_up(path)} && {runner_command(runner, manager, 'build', name)}"
        app.command_sources["build"] = f"{runner} (workspace task runner)"
    return app, role


def _hoisted(files: RepoFiles, root: AppDetection) -> bool:
    """A workspace root whose framework comes only from dependencies hoisted for its members:
    none of the framework's config files, no index.html, no src/ at the root."""
    if root.framework in ("node", "workspace") or any(
        e.startswith("config ") for e in root.evidence
    ):
        return False
    return not (files.exists("index.html") or files.is_dir("src") or files.is_dir("app"))


def _delegated(files: RepoFiles, root: AppDetection, workspace: Workspace) -> None:
    """A root script that runs one member's script means what that script means: an
    end-to-end suite is no unit test stage, a fixer no lint stage."""
    scripts = (files.json("package.json") or {}).get("scripts")
    if not isinstance(scripts, dict):
        return
    for attr in ("test_command", "lint_command"):
        command = getattr(root, attr)
        body = scripts.get(command.split()[-1]) if isinstance(command, str) else None
        target = delegation(body) if isinstance(body, str) else None
        if target is None:
            continue
        member_scripts = _member_scripts(files, workspace, target[0])
        inner = member_scripts.get(target[1])
        if not isinstance(inner, str):
            continue
        kind = classify(target[1], member_scripts)
        if attr == "test_command" and kind != "unit":
            if kind == "e2e":
                root.e2e_test_command = command
            root.test_command = None
            root.evidence.append(f"root script runs {target[0]}'s {kind} script {target[1]!r}")
        elif attr == "lint_command" and writes(inner):
            root.lint_command = None
            root.evidence.append(f"root lint runs {target[0]}'s fixer {target[1]!r}")


def _member_scripts(files: RepoFiles, workspace: Workspace, member: str) -> dict[str, Any]:
    for path in workspace.members:
        pkg = files.json(join(path, "package.json")) or {}
        if member in (path, pkg.get("name"), PurePosixPath(path).name):
            scripts = pkg.get("scripts")
            return {str(k): v for k, v in scripts.items()} if isinstance(scripts, dict) else {}
    return {}


def _runner_scripts(files: RepoFiles, root: AppDetection, workspace: Workspace) -> None:
    """A root script that is only `nx build` runs the default project: across the workspace
    the runner's run-many is meant."""
    if workspace.runner != "nx":
        return
    scripts = (files.json("package.json") or {}).get("scripts")
    if not isinstance(scripts, dict):
        return
    manager = root.package_manager or "npm"
    for kind, attr in (
        ("test", "test_command"),
        ("lint", "lint_command"),
        ("build", "build_command"),
    ):
        command = getattr(root, attr)
        body = scripts.get(command.split()[-1]) if isinstance(command, str) else None
        if isinstance(body, str) and re.fullmatch(rf"\s*nx\s+{kind}\s*", body):
            setattr(root, attr, runner_command("nx", manager, kind))
            root.command_sources[kind] = "nx (workspace task runner)"


def _root_project(
    files: RepoFiles, workspace: Workspace, root_app: AppDetection, has_apps: bool
) -> AppDetection | None:
    """The root as a project: its declared scripts, else the runner's tasks across members."""
    root = root_app.model_copy(deep=True)
    root.install_command = None
    manager = root.package_manager or "npm"
    runner = workspace.runner
    _runner_scripts(files, root, workspace)
    _delegated(files, root, workspace)
    if runner is not None:
        for kind, attr in (("test", "test_command"), ("lint", "lint_command")):
            if getattr(root, attr) is None and kind in workspace.runner_tasks:
                setattr(root, attr, runner_command(runner, manager, kind))
                root.command_sources[kind] = f"{runner} (workspace task runner)"
        if root.build_command is None and "build" in workspace.runner_tasks and not has_apps:
            root.build_command = runner_command(runner, manager, "build")
    if runner == "redwood":
        root.framework, root.role, root.output_directory = "redwood", "app", "web/dist"
        root.confidence = 0.9
        root.evidence.append("redwood.toml")
        return root
    if workspace.projects:
        # An integrated nx repository hoists every project's dependencies to the root: the
        # framework they suggest is no app at the root.
        root.framework = "node"
        root.output_directory = _nx_output(files, workspace.projects)
    elif has_apps and _hoisted(files, root):
        root.framework = "node"
    if root.framework == "node":
        root.role = "workspace"
        root.framework = runner or "workspace"
        if has_apps:
            # Members build themselves (through the runner): the root would build them twice.
            root.build_command = None
            root.command_sources["build"] = BUILT_BY_MEMBERS
    if root.role == "workspace" and root.build_command is None:
        root.output_directory = None
    if root.role == "workspace" and root.build_command and not workspace.projects:
        root.output_directory = None
    if not (root.test_command or root.lint_command or root.build_command):
        return None
    return root


def _nx_output(files: RepoFiles, projects: list[str]) -> str | None:
    """Where nx puts the first app project's build (its outputPath, else nx's dist/<path>)."""
    apps = [p for p in projects if p.startswith("apps/")] or projects
    if not apps:
        return None
    project = files.json(join(apps[0], "project.json")) or {}
    targets = project.get("targets")
    build = targets.get("build") if isinstance(targets, dict) else None
    options = build.get("options") if isinstance(build, dict) else None
    declared = options.get("outputPath") if isinstance(options, dict) else None
    if isinstance(declared, str):
        cleaned = declared.replace("{workspaceRoot}/", "").removeprefix("./")
        if cleaned and not cleaned.startswith("/") and ".." not in cleaned.split("/"):
            return cleaned.rstrip("/")
    return f"dist/{apps[0]}"


def workspace_projects(
    files: RepoFiles, workspace: Workspace, root_app: AppDetection | None
) -> WorkspaceProjects:
    result = WorkspaceProjects(apps=[])
    redwood = workspace.runner == "redwood"
    for path in workspace.members:
        app, role = _member(files, path, workspace, root_app)
        if app is None or role != "app" or redwood:
            result.packages[path] = "component" if redwood else role
            continue
        result.apps.append(app)
    for path in workspace.projects:
        result.packages[path] = "component"
    root = None
    if root_app is not None and root_app.language in JS_LANGUAGES:
        root = _root_project(files, workspace, root_app, bool(result.apps))
    if root is not None:
        # What the root runs across the workspace, members do not run again.
        for app in result.apps:
            if root.test_command and app.language in JS_LANGUAGES:
                app.test_command = None
            if root.lint_command and app.language in JS_LANGUAGES:
                app.lint_command = None
        result.apps.insert(0, root)
    if result.packages:
        kinds = sorted(set(result.packages.values()))
        result.notes.append(
            f"{len(result.packages)} workspace packages ({', '.join(kinds)}) are built and tested "
            "through the workspace, not deployed"
        )
    return result
