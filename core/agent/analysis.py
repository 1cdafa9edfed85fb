"""Repository analysis: every buildable app of the checkout (monorepo workspaces included),
the primary one first."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from core.agent.detectors import detect_app
from core.agent.repo_files import APP_CONTAINER_DIRS, RepoFiles
from workflows.agent_models import AppDetection, RepoAnalysis


def _workspace_globs(files: RepoFiles) -> tuple[str | None, list[str]]:
    pkg = files.json("package.json") or {}
    workspaces = pkg.get("workspaces")
    if isinstance(workspaces, dict):
        workspaces = workspaces.get("packages")
    if isinstance(workspaces, list) and workspaces:
        return "workspaces", [str(w) for w in workspaces]
    data = files.yaml("pnpm-workspace.yaml")
    if data:
        packages = data.get("packages")
        if isinstance(packages, list):
            return "pnpm-workspace", [str(p) for p in packages]
    for marker in ("turbo.json", "nx.json", "lerna.json"):
        if files.exists(marker):
            return marker.split(".")[0], [f"{d}/*" for d in APP_CONTAINER_DIRS]
    return None, []


def _expand(files: RepoFiles, globs: Iterable[str]) -> list[str]:
    out: list[str] = []
    for pattern in globs:
        pattern = pattern.rstrip("/")
        if pattern.startswith("!"):
            continue
        if pattern.endswith("/*") or pattern.endswith("/**"):
            out.extend(files.subdirs(pattern.split("/*", 1)[0]))
        elif files.is_dir(pattern):
            out.append(pattern)
    return sorted(dict.fromkeys(out))


def analyze_repository(
    root: Path, *, framework_hint: str | None = None, app_path: str | None = None
) -> RepoAnalysis:
    """Detect every buildable app in the checkout; the primary one first."""
    files = RepoFiles(root)
    all_files = files.walk()
    tool, globs = _workspace_globs(files)
    candidates = _expand(files, globs) if globs else []
    if not candidates:
        candidates = [d for c in APP_CONTAINER_DIRS for d in files.subdirs(c)]
    if not candidates:
        # Several top-level folders with their own manifests (frontend/ + backend/).
        candidates = [
            d
            for d in files.subdirs(".")
            if any(
                files.exists(f"{d}/{m}")
                for m in (
                    "package.json",
                    "pyproject.toml",
                    "requirements.txt",
                    "go.mod",
                    "Cargo.toml",
                    "pom.xml",
                    "Gemfile",
                    "composer.json",
                )
            )
        ]
    sub_apps = [a for a in (detect_app(files, c) for c in candidates) if a is not None]
    # packages/* holding plain Node/React code are shared libraries, not deployable apps.
    sub_apps = [
        a
        for a in sub_apps
        if not (a.path.startswith("packages/") and a.framework in ("node", "react"))
    ]
    notes: list[str] = []
    root_app = detect_app(files, ".")
    if len(sub_apps) >= 2 or (tool and sub_apps):
        apps = sub_apps
        is_monorepo = True
        notes.append(f"monorepo with {len(apps)} apps" + (f" ({tool})" if tool else ""))
    elif root_app is not None:
        apps, is_monorepo = [root_app], False
    elif sub_apps:
        apps, is_monorepo = sub_apps, False
    else:
        apps, is_monorepo = (
            [
                AppDetection(
                    name=root.name or "app",
                    language="unknown",
                    framework="unknown",
                    confidence=0.1,
                    evidence=["no manifest, lockfile, index.html or Dockerfile found"],
                )
            ],
            False,
        )
        notes.append("nothing recognisable: the pipeline is a placeholder to edit")

    workspace_install = workspace_image = None
    if is_monorepo and root_app is not None and root_app.language in ("javascript", "typescript"):
        # JS workspaces install once at the root; each app then runs its scripts in place.
        workspace_install, workspace_image = root_app.install_command, root_app.image
        for app in apps:
            if app.language in ("javascript", "typescript"):
                app.install_command = None

    def rank(app: AppDetection) -> tuple[int, int, float]:
        hinted = framework_hint is not None and framework_hint.lower() in app.framework
        chosen = app_path is not None and app.path == app_path.strip("/")
        return (int(chosen), int(hinted), app.confidence)

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
        file_count=len(all_files),
        notes=notes,
    )
