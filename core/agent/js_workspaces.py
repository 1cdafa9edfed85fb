"""JavaScript workspaces as one project: the members npm/pnpm/yarn/bun workspaces declare, the
task runner (turbo, nx, lerna, Redwood) that drives them, and what each member is (a deployable
app, a library, or tooling)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from core.agent.repo_files import APP_CONTAINER_DIRS, RepoFiles, join

Role = Literal["app", "library", "tooling"]
TaskRunner = Literal["turbo", "nx", "lerna", "redwood"]
# Frameworks whose output is something to deploy (a site, a server), not a package to import.
DEPLOYABLE_FRAMEWORKS = {
    "nextjs", "nuxt", "remix", "gatsby", "sveltekit", "astro", "angular", "react-cra",
    "react-vite", "vue", "svelte", "express",
}  # fmt: skip
_TOOLING_NAME = re.compile(
    r"(^|[/@-])(eslint|prettier|tsconfig|typescript-config|config|configs|tooling|scripts|"
    r"jest-presets?|tailwind-config|stylelint|commitlint|biome)(-config)?$"
)
MAX_MEMBERS = 200
# The source of a workspace root's build when its apps build themselves: nothing overrides it.
BUILT_BY_MEMBERS = "the workspace's apps"


@dataclass
class Workspace:
    """The workspace rooted at the repository root."""

    source: str  # workspaces | pnpm-workspace | turbo | nx | lerna | redwood
    members: list[str] = field(default_factory=list)
    runner: TaskRunner | None = None
    runner_tasks: set[str] = field(default_factory=set)
    # Projects only the runner knows (nx project.json without a package.json).
    projects: list[str] = field(default_factory=list)


def _globs(files: RepoFiles) -> tuple[str | None, list[str]]:
    pkg = files.json("package.json") or {}
    workspaces: Any = pkg.get("workspaces")
    if isinstance(workspaces, dict):
        workspaces = workspaces.get("packages")
    if isinstance(workspaces, list) and workspaces:
        return "workspaces", [str(w) for w in workspaces if isinstance(w, str)]
    data = files.yaml("pnpm-workspace.yaml")
    if data:
        packages = data.get("packages")
        if isinstance(packages, list):
            return "pnpm-workspace", [str(p) for p in packages if isinstance(p, str)]
    lerna = files.json("lerna.json") or {}
    if isinstance(lerna.get("packages"), list):
        return "lerna", [str(p) for p in lerna["packages"] if isinstance(p, str)]
    return None, []


def expand(files: RepoFiles, globs: list[str]) -> list[str]:
    """Member directories holding a package.json; `!pattern` excludes, `**` reaches two levels."""
    include = [_clean(g) for g in globs if not g.startswith("!")]
    exclude = [_clean(g[1:]) for g in globs if g.startswith("!")]
    out: list[str] = []
    for pattern in include:
        if not pattern or ".." in pattern.split("/") or pattern.startswith("/"):
            continue
        out.extend(_match(files, pattern))
    found = [p for p in dict.fromkeys(out) if files.exists(join(p, "package.json"))]
    return sorted(p for p in found if not any(_glob_hit(p, e) for e in exclude))[:MAX_MEMBERS]


def _clean(pattern: str) -> str:
    return pattern.strip().rstrip("/").removeprefix("./")


def _match(files: RepoFiles, pattern: str) -> list[str]:
    parts = pattern.split("/")
    current = ["."]
    for part in parts:
        nxt: list[str] = []
        for base in current:
            if part == "**":
                level = files.subdirs(base)
                nxt.extend(level)
                nxt.extend(d for sub in level for d in files.subdirs(sub))
            elif "*" in part or "?" in part:
                rx = re.compile(
                    "^" + re.escape(part).replace(r"\*", ".*").replace(r"\?", ".") + "$"
                )
                nxt.extend(d for d in files.subdirs(base) if rx.match(d.rsplit("/", 1)[-1]))
            else:
                candidate = join(base, part)
                if files.is_dir(candidate):
                    nxt.append(candidate)
        current = list(dict.fromkeys(nxt))[: MAX_MEMBERS * 4]
    return current


def _glob_hit(path: str, pattern: str) -> bool:
    rx = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", ".")
    return re.fullmatch(rx, path) is not None


def _turbo_tasks(files: RepoFiles) -> set[str]:
    turbo = files.json("turbo.json") or {}
    tasks = turbo.get("tasks") or turbo.get("pipeline") or {}
    # "web#build" is one package's task; the task name is what `turbo run` takes.
    return {str(t).rsplit("#", 1)[-1] for t in tasks} if isinstance(tasks, dict) else set()


def detect_workspace(files: RepoFiles) -> Workspace | None:
    source, globs = _globs(files)
    runner: TaskRunner | None = None
    if files.exists("redwood.toml"):
        runner = "redwood"
    elif files.exists("turbo.json"):
        runner = "turbo"
    elif files.exists("nx.json"):
        runner = "nx"
    elif files.exists("lerna.json"):
        runner = "lerna"
    if source is None and runner is None:
        return None
    if not globs:
        # A runner without declared workspaces: its members sit in the usual folders.
        globs = [f"{d}/*" for d in APP_CONTAINER_DIRS]
    workspace = Workspace(source=source or str(runner), members=expand(files, globs), runner=runner)
    if runner == "turbo":
        workspace.runner_tasks = _turbo_tasks(files)
    elif runner in ("nx", "lerna"):
        if runner == "nx":
            _nx_projects(files, workspace)
        for member in workspace.members:
            scripts = (files.json(join(member, "package.json")) or {}).get("scripts")
            if isinstance(scripts, dict):
                workspace.runner_tasks.update(str(s) for s in scripts)
            project = files.json(join(member, "project.json")) or {}
            if isinstance(project.get("targets"), dict):
                workspace.runner_tasks.update(str(t) for t in project["targets"])
    elif runner == "redwood":
        workspace.runner_tasks = {"build", "test", "lint"}
    return workspace


_NX_PLUGIN_TASKS = (
    ("eslint", "lint"),
    ("jest", "test"),
    ("vite", "test"),
    ("vite", "build"),
    ("next", "build"),
    ("webpack", "build"),
    ("rollup", "build"),
    ("esbuild", "build"),
    ("remix", "build"),
    ("nuxt", "build"),
    ("angular", "build"),
)


def _nx_projects(files: RepoFiles, workspace: Workspace) -> None:
    """An integrated nx repository: projects with a project.json and no package.json, and
    targets inferred by its plugins."""
    nx = files.json("nx.json") or {}
    defaults = nx.get("targetDefaults")
    if isinstance(defaults, dict):
        workspace.runner_tasks.update(str(t) for t in defaults)
    plugins = nx.get("plugins")
    for plugin in plugins if isinstance(plugins, list) else []:
        name = str(plugin.get("plugin") if isinstance(plugin, dict) else plugin)
        workspace.runner_tasks.update(task for key, task in _NX_PLUGIN_TASKS if key in name)
    for folder in (*APP_CONTAINER_DIRS, "libs"):
        for path in files.subdirs(folder)[:MAX_MEMBERS]:
            if path in workspace.members or not files.exists(join(path, "project.json")):
                continue
            workspace.projects.append(path)
            project = files.json(join(path, "project.json")) or {}
            if isinstance(project.get("targets"), dict):
                workspace.runner_tasks.update(str(t) for t in project["targets"])


def root_of(files: RepoFiles, base: str) -> str | None:
    """The workspace root that declares `base` as a member ("." today), or None."""
    if base in ("", "."):
        return None
    source, globs = _globs(files)
    if source is None:
        return None
    include = [_clean(g) for g in globs if not g.startswith("!")]
    exclude = [_clean(g[1:]) for g in globs if g.startswith("!")]
    if any(_glob_hit(base, e) for e in exclude) or not any(_glob_hit(base, i) for i in include):
        return None
    return "." if files.exists(join(base, "package.json")) else None


def member_role(
    framework: str,
    pkg: dict[str, Any],
    base: str,
    has_index_html: bool,
    project: dict[str, Any] | None = None,
) -> Role:
    """A deployable app, a library other members import, or tooling (shared configs, an
    end-to-end suite of another member)."""
    name = str(pkg.get("name") or base.rsplit("/", 1)[-1]).lower()
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    assert isinstance(scripts, dict)
    folder = base.rsplit("/", 1)[-1].lower()
    if _TOOLING_NAME.search(name) or _TOOLING_NAME.search(folder):
        return "tooling"
    if re.search(r"(^|[-_.])e2e$", name) or re.search(r"(^|[-_.])e2e$", folder):
        return "tooling"
    # nx says what a project is.
    declared = (project or {}).get("projectType")
    if declared in ("application", "library"):
        return "app" if declared == "application" else "library"
    publishes = any(k in pkg for k in ("main", "module", "exports", "types", "files", "bin"))
    if framework in DEPLOYABLE_FRAMEWORKS - {"react-vite", "vue", "svelte", "express"}:
        return "app"
    # apps/ is where workspaces keep what they ship (the turbo and nx convention).
    if base.split("/", 1)[0] in ("apps", "sites", "services"):
        return "app"
    if framework in ("react-vite", "vue", "svelte") and has_index_html and not publishes:
        return "app"
    if "start" in scripts and not publishes:
        return "app"
    if not scripts and not publishes:
        return "tooling"
    return "library"


def runner_exec(manager: str) -> str:
    """How a member's or the root's local binary is run with the workspace's package manager."""
    return {"pnpm": "pnpm exec", "yarn": "yarn", "bun": "bunx"}.get(manager, "npx")


def runner_command(runner: TaskRunner, manager: str, task: str, package: str | None = None) -> str:
    """The task runner's command for one task across the workspace, or for one package."""
    run = runner_exec(manager)
    quoted = _quote(package) if package else None
    if runner == "turbo":
        return f"{run} turbo run {task}" + (f" --filter={quoted}" if quoted else "")
    if runner == "nx":
        return f"{run} nx run {quoted}:{task}" if quoted else f"{run} nx run-many -t {task}"
    if runner == "lerna":
        return f"{run} lerna run {task}" + (f" --scope={quoted}" if quoted else "")
    return {"build": f"{run} rw build", "test": f"{run} rw test --no-watch"}.get(
        task, f"{run} rw {task}"
    )


def _quote(name: str) -> str:
    """Package names are chosen by the repository: quoted unless plainly safe."""
    if re.fullmatch(r"[@A-Za-z0-9._/\-]+", name):
        return name
    return "'" + name.replace("'", "'\"'\"'") + "'"
