"""Repository analysis: every buildable app of the checkout (monorepo workspaces included),
the primary one first."""

from __future__ import annotations

from pathlib import Path

from core.agent.ci_configs import ci_lines
from core.agent.declared import apply_declared
from core.agent.detectors import JS_LOCKFILES, detect_app
from core.agent.detectors.node import NodeDetector
from core.agent.js_workspaces import detect_workspace
from core.agent.lint_install import install_detected_linter
from core.agent.repo_files import APP_CONTAINER_DIRS, RepoFiles
from core.agent.setup_steps import app_setup, node_unit_setup
from core.agent.submodule_checkout import submodule_setup
from core.agent.tox_legs import tox_per_leg
from core.agent.workspace_projects import JS_LANGUAGES, workspace_projects
from workflows.agent_models import AppDetection, RepoAnalysis

NODE = NodeDetector()
MANIFESTS = (
    "package.json",
    "pyproject.toml",
    "requirements.txt",
    "go.mod",
    "Cargo.toml",
    "pom.xml",
    "Gemfile",
    "composer.json",
)


def _folder_apps(
    files: RepoFiles, root: Path, root_app: AppDetection | None, tool: str | None, notes: list[str]
) -> tuple[list[AppDetection], bool]:
    """Apps of a repository that is no JS workspace: apps/*, packages/*, services/*, or
    top-level folders with their own manifests (frontend/ + backend/)."""
    candidates = [d for c in APP_CONTAINER_DIRS for d in files.subdirs(c)]
    if not candidates:
        candidates = [
            d for d in files.subdirs(".") if any(files.exists(f"{d}/{m}") for m in MANIFESTS)
        ]
    sub_apps = [a for a in (detect_app(files, c) for c in candidates) if a is not None]
    # packages/* holding plain Node/React code are shared libraries, not deployable apps.
    sub_apps = [
        a
        for a in sub_apps
        if not (a.path.startswith("packages/") and a.framework in ("node", "react"))
    ]
    if len(sub_apps) >= 2 or (tool and sub_apps):
        notes.append(f"monorepo with {len(sub_apps)} apps" + (f" ({tool})" if tool else ""))
        return sub_apps, True
    if root_app is not None:
        return [root_app], False
    if sub_apps:
        return sub_apps, False
    notes.append("nothing recognisable: the pipeline is a placeholder to edit")
    unknown = AppDetection(
        name=root.name or "app",
        language="unknown",
        framework="unknown",
        confidence=0.1,
        evidence=["no manifest, lockfile, index.html or Dockerfile found"],
    )
    return [unknown], False


def _beside_the_workspace(
    files: RepoFiles, taken: set[str], root_app: AppDetection | None
) -> list[AppDetection]:
    """Apps in other ecosystems next to a JS workspace (a Python backend beside the frontend)."""
    found: list[AppDetection] = []
    for folder in files.subdirs("."):
        if folder in taken or not any(files.exists(f"{folder}/{m}") for m in MANIFESTS):
            continue
        app = detect_app(files, folder)
        if app is not None and app.language not in JS_LANGUAGES:
            found.append(app)
    if not found and root_app is not None and root_app.language not in JS_LANGUAGES:
        found.append(root_app)
    return found


def analyze_repository(
    root: Path, *, framework_hint: str | None = None, app_path: str | None = None
) -> RepoAnalysis:
    """Detect every buildable app in the checkout; the primary one first."""
    files = RepoFiles(root)
    all_files = files.walk()
    notes: list[str] = []
    root_app = detect_app(files, ".")
    workspace = detect_workspace(files)
    tool = workspace.source if workspace else None
    packages: dict[str, str] = {}
    # A root with a package.json and a pyproject is a JS workspace root and a Python project.
    js_root = NODE.detect(files, ".") if workspace else None
    if js_root is not None:
        js_root.lockfiles = [n for n in JS_LOCKFILES if files.exists(n)]
    projects = workspace_projects(files, workspace, js_root) if workspace else None
    if projects is not None and (projects.apps or projects.packages):
        apps, packages = projects.apps, projects.packages
        if not apps and js_root is not None:
            # Only libraries and tooling: the workspace is its root (nothing to deploy).
            apps = [js_root]
        apps += _beside_the_workspace(files, set(packages) | {a.path for a in apps}, root_app)
        is_monorepo = len(apps) > 1 or bool(projects.apps)
        notes.append(f"JS workspace with {len(projects.apps)} projects ({tool})")
        notes.extend(projects.notes)
    else:
        apps, is_monorepo = _folder_apps(files, root, root_app, tool, notes)
    ci = ci_lines(files)
    submodules = submodule_setup(files)
    for app in apps:
        apply_declared(files, app, ci)
        tox_per_leg(files, app)
        install_detected_linter(files, app)
        if app.language in JS_LANGUAGES:
            app.setup_commands += node_unit_setup(files, app)
        else:
            app.setup_commands += app_setup(files, app)
        app.setup_commands = [*submodules, *(s for s in app.setup_commands if s not in submodules)]
    workspace_install = workspace_image = None
    js_base = js_root if workspace else root_app
    if is_monorepo and js_base is not None and js_base.language in JS_LANGUAGES:
        # JS workspaces install once at the root; each app then runs its scripts in place.
        workspace_install, workspace_image = js_base.install_command, js_base.image
        for app in apps:
            if app.language in JS_LANGUAGES:
                app.install_command = None

    def rank(app: AppDetection) -> tuple[int, int, int, float]:
        hinted = framework_hint is not None and framework_hint.lower() in app.framework
        chosen = app_path is not None and app.path == app_path.strip("/")
        return (int(chosen), int(hinted), int(app.role == "app"), app.confidence)

    apps.sort(key=rank, reverse=True)
    if framework_hint and not any(framework_hint.lower() in a.framework for a in apps):
        notes.append(f"hint {framework_hint!r} not confirmed by the repository contents")
    notes += [f"{rel} was not read: {why}" for rel, why in sorted(files.unread.items())]
    return RepoAnalysis(
        apps=apps,
        is_monorepo=is_monorepo,
        workspace_tool=tool,
        workspace_install_command=workspace_install,
        workspace_image=workspace_image,
        task_runner=workspace.runner if workspace else None,
        workspace_packages=packages,
        file_count=len(all_files),
        notes=notes,
    )
