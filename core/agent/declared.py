"""Declared commands first: what the repository's CI, hosting configs (netlify.toml, vercel.json,
fly.toml), Makefile/justfile, Dockerfile and test entry points say, laid over the detectors'
guesses; a declared command is used only when the app's image can run it."""

from __future__ import annotations

import re
import shlex
from typing import Any

from core.agent.build_files import (
    dockerfile_build,
    entry_point_test,
    has_make_target,
    just_recipes,
    make_targets,
)
from core.agent.ci_configs import CiLine, CommandKind, kind_of
from core.agent.framework_outputs import relative_dir
from core.agent.js_workspaces import BUILT_BY_MEMBERS, runner_exec
from core.agent.python_requirements import (
    RequirementFiles,
    python_dependencies,
    requirement_name,
)
from core.agent.python_tool_pins import tool_requirement
from core.agent.repo_files import RepoFiles, join
from workflows.agent_models import AppDetection

JS = ("javascript", "typescript")
MAX_JOINED_LINES = 4
# First words each ecosystem's image runs; anything else needs a tool the image may lack.
ECOSYSTEM_TOOLS: dict[str, tuple[str, ...]] = {
    "go": ("go", "make"),
    "rust": ("cargo", "make"),
    "java": ("mvn", "./mvnw", "gradle", "./gradlew", "make"),
    "kotlin": ("mvn", "./mvnw", "gradle", "./gradlew", "make"),
    "ruby": ("bundle", "rake", "bin/rails", "bin/rake", "rails", "make"),
    "php": ("composer", "php", "vendor/bin/", "./vendor/bin/", "make"),
}
PYTHON_TOOLS = ("pytest", "tox", "nox", "ruff", "flake8", "mypy", "black", "isort", "pylint",
                "coverage", "pyright", "bandit", "django-admin")  # fmt: skip
PACKAGING_BUILDS = ("poetry build", "uv build", "python -m build", "pip install build")


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:
        return []


def _project_names(files: RepoFiles, base: str, extras: list[str]) -> set[str]:
    """What `pip install .[extras]` installs: the project's dependencies and those extras."""
    pyproject = files.toml(join(base, "pyproject.toml")) or {}
    project = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else {}
    assert isinstance(project, dict)
    specs: list[Any] = list(project.get("dependencies") or [])
    optional = project.get("optional-dependencies")
    for extra in extras:
        group = optional.get(extra) if isinstance(optional, dict) else None
        specs.extend(group if isinstance(group, list) else [])
    names = {n for spec in specs if isinstance(spec, str) and (n := requirement_name(spec))}
    setup = (files.text(join(base, "setup.py")) or "") + (files.text(join(base, "setup.cfg")) or "")
    names.update(m.lower() for m in re.findall(r"[\"'\n]\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)", setup))
    return names


def _installed_names(files: RepoFiles, app: AppDetection) -> set[str]:
    """Packages the app's install command brings (canonical names)."""
    base = app.path or "."
    if app.package_manager != "pip":
        return python_dependencies(files, base)[0]
    install = app.install_command or ""
    reader = RequirementFiles(files)
    for rel in re.findall(r"(?:-r|--requirement)\s+([^\s&;|]+)", install):
        if relative_dir(rel):
            reader.add(join(base, rel))
    names = set(reader.names)
    local = re.search(r"pip install\s+(?:-e\s+)?['\"]?\.(?:\[([^\]]*)\])?", install)
    if local or reader.local_paths:
        extras = [e.strip() for e in (local.group(1) or "").split(",")] if local else []
        names |= _project_names(files, base, [e for e in extras if e])
    return names


def _fit_node(segment: str, words: list[str], app: AppDetection, pkg: dict[str, Any]) -> str | None:
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    deps: dict[str, Any] = {}
    for key in ("dependencies", "devDependencies"):
        if isinstance(pkg.get(key), dict):
            deps.update(pkg[key])
    first, rest = words[0], words[1:]
    if first in ("npm", "yarn", "pnpm", "bun"):
        if not rest:
            return None
        if rest[0] in ("exec", "x", "dlx") or (first == "bun" and rest[0] == "test"):
            return segment
        if rest[0] in ("run", "run-script"):
            script = rest[1] if len(rest) > 1 else ""
        elif first == "npm":
            script = {"test": "test", "t": "test", "start": "start"}.get(rest[0], "")
        else:
            script = rest[0]
        if isinstance(scripts, dict) and script in scripts:
            return segment
        # `pnpm vitest`, `yarn jest`: a package's own command when no script has that name.
        local_bin = first != "npm" and rest[0] not in ("run", "run-script")
        return (
            segment
            if local_bin and (script in deps or (script == "tsc" and "typescript" in deps))
            else None
        )
    if first in ("npx", "bunx", "node", "corepack"):
        return segment
    if first in deps or (first == "tsc" and "typescript" in deps):
        return f"{runner_exec(app.package_manager or 'npm')} {segment}"
    return None


STDLIB_MODULES = ("unittest", "compileall", "doctest", "venv", "pip", "json.tool")


def _fit_python(
    segment: str, words: list[str], app: AppDetection, installed: set[str], files: RepoFiles
) -> str | None:
    """Python commands run through the app's environment; a tool the install does not bring
    is installed first with pip, or refused where the environment is managed (Poetry, uv)."""
    first = words[0]
    prefix = {"poetry": "poetry run ", "uv": "uv run "}.get(app.package_manager or "", "")
    if first in ("poetry", "uv") and first == app.package_manager:
        return segment
    if first in ("python", "python3"):
        module = words[2] if len(words) > 2 and words[1] == "-m" else None
        if module is None or module in STDLIB_MODULES:
            return prefix + segment
        tool = module
    elif first in PYTHON_TOOLS:
        tool = first
    else:
        return None
    if re.sub(r"[-_.]+", "-", tool).lower() in installed:
        return prefix + segment
    if app.package_manager == "pip":
        return f"pip install {tool_requirement(tool, files, app.path or '.')} && {segment}"
    return None


def _with_components(segment: str) -> str:
    """clippy and rustfmt are rustup components the stock Rust image does not carry."""
    words = segment.split()
    if words[:2] == ["cargo", "clippy"]:
        return f"rustup component add clippy && {segment}"
    if words[:2] == ["cargo", "fmt"]:
        return f"rustup component add rustfmt && {segment}"
    return segment


def fit(command: str, app: AppDetection, files: RepoFiles) -> str | None:
    """The command as the app's stage runs it, or None when its image lacks a tool it calls."""
    out: list[str] = []
    pkg = files.json(join(app.path, "package.json")) or {}
    installed = _installed_names(files, app) if app.language == "python" else set()
    for segment in (s.strip() for s in command.split("&&")):
        words = _words(segment)
        if not words or any(w in ("|", ">", ">>") for w in words):
            return None
        if words[0] == "make":
            # Make ships in the stock images; the target must exist (a bare `make` builds all).
            target = words[1] if len(words) > 1 else None
            known = target is None or has_make_target(files, app.path, target)
            fitted = segment if known and len(words) <= 2 else None
        elif app.language in JS:
            fitted = _fit_node(segment, words, app, pkg)
        elif app.language == "python":
            fitted = _fit_python(segment, words, app, installed, files)
        else:
            tools = ECOSYSTEM_TOOLS.get(app.language, ())
            ok = any(words[0] == t or (t.endswith("/") and words[0].startswith(t)) for t in tools)
            fitted = _with_components(segment) if ok else None
        if fitted is None:
            return None
        out.append(fitted)
    return " && ".join(out) if out else None


def _ci_commands(
    lines: list[CiLine], app: AppDetection, files: RepoFiles
) -> dict[CommandKind, tuple[str, str]]:
    """Per kind the fitting lines of the first CI file declaring it for the app's directory."""
    where = app.path or "."
    chosen: dict[CommandKind, tuple[list[str], str]] = {}
    for line in lines:
        directory, command = line.directory, line.command
        cd = re.match(r"^cd\s+([A-Za-z0-9_./\-]+)\s*&&\s*(.+)$", command)
        if cd:
            sub = relative_dir(cd.group(1)) or "."
            directory, command = (sub if directory == "." else join(directory, sub)), cd.group(2)
        kind = kind_of(command)
        if kind is None or directory != where:
            continue
        fitted = fit(command, app, files)
        if fitted is None:
            continue
        picked, source = chosen.setdefault(kind, ([], line.source))
        if source == line.source and fitted not in picked and len(picked) < MAX_JOINED_LINES:
            picked.append(fitted)
    return {k: (" && ".join(cmds), src) for k, (cmds, src) in chosen.items()}


def _hosting(files: RepoFiles, app: AppDetection) -> tuple[str | None, str | None, str]:
    """(build command, publish directory, source) from netlify.toml or vercel.json."""
    netlify = files.toml("netlify.toml") or {}
    build = netlify.get("build") if isinstance(netlify.get("build"), dict) else None
    if build:
        base = relative_dir(str(build.get("base") or "")) or "."
        if base == (app.path or "."):
            command = build.get("command")
            publish = build.get("publish")
            out = relative_dir(str(publish)) if isinstance(publish, str) else None
            if out and base != "." and out.startswith(base + "/"):
                out = out[len(base) + 1 :]
            return (command if isinstance(command, str) else None), out, "netlify.toml"
    vercel = files.json(join(app.path, "vercel.json")) or {}
    command, output = vercel.get("buildCommand"), vercel.get("outputDirectory")
    if isinstance(command, str) or isinstance(output, str):
        out = relative_dir(output) if isinstance(output, str) else None
        return (command if isinstance(command, str) else None), out, join(app.path, "vercel.json")
    return None, None, ""


def _fly(files: RepoFiles, app: AppDetection) -> None:
    """fly.toml deploys an image: its Dockerfile and release command are evidence for the app."""
    fly = files.toml(join(app.path, "fly.toml"))
    if not fly:
        return
    build = fly.get("build") if isinstance(fly.get("build"), dict) else {}
    deploy = fly.get("deploy") if isinstance(fly.get("deploy"), dict) else {}
    assert isinstance(build, dict) and isinstance(deploy, dict)
    dockerfile = build.get("dockerfile") if isinstance(build.get("dockerfile"), str) else None
    if dockerfile and relative_dir(dockerfile) and files.exists(join(app.path, dockerfile)):
        app.has_dockerfile = True
        app.evidence.append(f"fly.toml deploys the image of {dockerfile}")
    elif files.exists(join(app.path, "Dockerfile")) and not build.get("image"):
        app.evidence.append("fly.toml deploys the image of Dockerfile")
    release = deploy.get("release_command")
    if isinstance(release, str) and release.strip():
        app.evidence.append(f"fly.toml runs {release.strip()[:200]!r} before each release")


def _declared_by_scripts(app: AppDetection, kind: CommandKind) -> bool:
    """JS commands come from package.json scripts (or the workspace runner): declared too."""
    return app.language in JS and getattr(app, f"{kind}_command") is not None


def _set(app: AppDetection, kind: CommandKind, command: str, source: str) -> None:
    setattr(app, f"{kind}_command", command)
    app.command_sources[kind] = source
    app.evidence.append(f"{kind} command declared in {source}")


def apply_declared(files: RepoFiles, app: AppDetection, ci: list[CiLine]) -> None:
    """Lay what the repository declares over the detector's guesses, most specific first."""
    if app.language in ("unknown", "html"):
        return
    from_ci = _ci_commands(ci, app, files)
    hosted_build, hosted_out, hosting_source = _hosting(files, app)
    local = {**just_recipes(files, app.path), **make_targets(files, app.path)}
    kinds: tuple[CommandKind, ...] = ("test", "lint", "build")
    for kind in kinds:
        if app.command_sources.get(kind) == BUILT_BY_MEMBERS:
            continue
        if kind == "build" and hosted_build and (fitted := fit(hosted_build, app, files)):
            _set(app, kind, fitted, hosting_source)
        elif kind in from_ci:
            _set(app, kind, *from_ci[kind])
        elif kind in app.command_sources or _declared_by_scripts(app, kind):
            continue
        elif kind in local and all(fit(line, app, files) for line in local[kind].runs):
            target = local[kind]
            _set(app, kind, fit(target.command, app, files) or target.command, target.source)
        elif kind == "test" and (entry := entry_point_test(files, app.path)):
            fitted = fit(entry[0], app, files)
            if fitted:
                _set(app, kind, fitted, entry[1])
    if hosted_out:
        app.output_directory = hosted_out
        app.evidence.append(f"output {hosted_out} declared in {hosting_source}")
    docker_build, served, docker_source = dockerfile_build(files, app.path)
    if app.build_command is None and docker_build and (fitted := fit(docker_build, app, files)):
        _set(app, "build", fitted, docker_source)
    if served and not hosted_out:
        app.output_directory = served
        app.evidence.append(f"output {served} served by {docker_source}")
    _fly(files, app)
    _drop_packaging_build(files, app)


def _drop_packaging_build(files: RepoFiles, app: AppDetection) -> None:
    """An application is run, not published: a wheel build is no build stage for it."""
    if app.language != "python" or "build" in app.command_sources or not app.build_command:
        return
    if not any(app.build_command.startswith(b) for b in PACKAGING_BUILDS):
        return
    pyproject = files.toml(join(app.path, "pyproject.toml")) or {}
    tool = pyproject.get("tool")
    poetry = tool.get("poetry") if isinstance(tool, dict) else None
    package_mode = poetry.get("package-mode", True) if isinstance(poetry, dict) else True
    if app.framework in ("django", "fastapi", "flask") or package_mode is False:
        app.build_command = None
        app.output_directory = None
        app.evidence.append("an application: no package build")
