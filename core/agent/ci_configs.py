"""Commands a repository's existing CI already runs: GitHub Actions run steps, GitLab CI scripts,
CircleCI run steps and Travis scripts, each line with the directory it runs in and its file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from core.agent.repo_files import RepoFiles

CommandKind = Literal["test", "lint", "build"]
MAX_CI_FILES = 20
WIN_SHELLS = {"pwsh", "powershell", "cmd"}
MAX_LINES_PER_FILE = 400
GITLAB_RESERVED = {
    "stages", "variables", "default", "include", "workflow", "image", "services", "cache",
    "before_script", "after_script", "pages",
}  # fmt: skip


# Conventional Makefile/justfile target names per kind.
TARGETS: dict[CommandKind, tuple[str, ...]] = {
    "test": ("test", "tests", "check", "unit", "test-unit"),
    "lint": ("lint", "style", "fmt-check", "format-check", "typecheck"),
    "build": ("build", "dist", "compile"),
}


@dataclass(frozen=True)
class CiLine:
    command: str
    directory: str  # relative to the repository root, "." for the root
    source: str  # the file that declares it


def _dict(value: Any) -> dict[str, Any]:
    """A mapping of an untrusted document, or an empty one when it holds something else."""
    return value if isinstance(value, dict) else {}


def _lines(script: Any) -> list[str]:
    """Shell lines of a `run:`/`script:` value (a string or a list of strings)."""
    if isinstance(script, list):
        return [line for item in script for line in _lines(item)]
    if not isinstance(script, str):
        return []
    joined = re.sub(r"\\\n\s*", " ", script)
    return _first_branches([line.strip() for line in joined.splitlines() if line.strip()])


def _first_branches(lines: list[str]) -> list[str]:
    """The lines a shell `if` runs in its first branch: `elif`/`else` branches are alternatives
    (`if nyc is installed; then npm run test-ci; else npm test; fi` runs the tests once, not
    twice), and the if/elif/else/fi lines are no commands."""
    out: list[str] = []
    # Per open `if`: whether its current branch is an alternative.
    stack: list[bool] = []
    for line in lines:
        word = line.split(maxsplit=1)[0].rstrip(";")
        if word == "if" and not re.search(r"\bfi\s*;?$", line):
            stack.append(False)
        elif word in ("elif", "else") and stack:
            stack[-1] = True
        elif word == "fi" and stack:
            stack.pop()
        elif word == "then" or (stack and any(stack)):
            continue
        else:
            out.append(line)
            continue
        rest = re.sub(r"^.*?\b(then|else)\s+", "", line) if word in ("if", "else") else ""
        if rest and rest != line and not any(stack) and not re.match(r"^(fi|if)\b", rest):
            out.append(rest.removesuffix(";").strip())
    return out


def _directory(value: Any, default: str = ".") -> str:
    if not isinstance(value, str) or not value.strip():
        return default
    path = str(value).strip().removeprefix("./").rstrip("/")
    # CircleCI's ~/project and absolute paths mean the checkout itself.
    if path in ("", ".", "~/project") or path.startswith(("/", "~", "$")):
        return "."
    if ".." in path.split("/"):
        return "."
    return path


def _github(files: RepoFiles, out: list[CiLine]) -> None:
    folder = ".github/workflows"
    if not files.is_dir(folder):
        return
    names = sorted(p.name for p in files.path(folder).iterdir() if p.suffix in (".yml", ".yaml"))
    for name in names[:MAX_CI_FILES]:
        rel = f"{folder}/{name}"
        data = files.yaml(rel) or {}
        top = _directory(_dict(_dict(data.get("defaults")).get("run")).get("working-directory"))
        jobs = data.get("jobs")
        if not isinstance(jobs, dict):
            continue
        for job in jobs.values():
            if not isinstance(job, dict) or _foreign_runner(job.get("runs-on")):
                continue
            defaults = _dict(_dict(job.get("defaults")).get("run"))
            job_dir = _directory(defaults.get("working-directory"), top)
            steps = job.get("steps")
            for step in steps if isinstance(steps, list) else []:
                if not isinstance(step, dict) or "run" not in step:
                    continue
                if str(step.get("shell") or defaults.get("shell") or "").lower() in WIN_SHELLS:
                    continue
                if _conditional(step.get("if")) or "${{" in str(step.get("env") or ""):
                    # The step's command reads values only the CI system fills in.
                    continue
                where = _directory(step.get("working-directory"), job_dir)
                out.extend(CiLine(c, where, rel) for c in _lines(step["run"]))


def _conditional(condition: Any) -> bool:
    """A step that runs only for one matrix entry or event is not the job's usual check."""
    if condition is None or condition is True:
        return False
    text = str(condition).replace("${{", "").replace("}}", "").strip()
    return text not in ("always()", "success()", "!cancelled()", "true")


def _foreign_runner(runs_on: Any) -> bool:
    """Windows and macOS jobs run commands a Linux container cannot."""
    labels = runs_on if isinstance(runs_on, list) else [runs_on]
    return any(isinstance(x, str) and re.search(r"windows|macos", x, re.I) for x in labels)


def _gitlab(files: RepoFiles, out: list[CiLine]) -> None:
    rel = ".gitlab-ci.yml"
    data = files.yaml(rel) or {}
    for key, job in data.items():
        if str(key).startswith(".") or key in GITLAB_RESERVED or not isinstance(job, dict):
            continue
        script = job.get("script")
        parents = job.get("extends")
        for parent in (parents if isinstance(parents, list) else [parents])[:5]:
            # A job without a script of its own runs the one of the template it extends.
            template = data.get(parent) if isinstance(parent, str) else None
            if script is None and isinstance(template, dict):
                script = template.get("script")
        out.extend(CiLine(c, ".", rel) for c in _lines(script))


def _circleci(files: RepoFiles, out: list[CiLine]) -> None:
    rel = ".circleci/config.yml"
    jobs = _dict(files.yaml(rel)).get("jobs")
    if not isinstance(jobs, dict):
        return
    for job in jobs.values():
        if not isinstance(job, dict):
            continue
        job_dir = _directory(job.get("working_directory"))
        steps = job.get("steps")
        for step in steps if isinstance(steps, list) else []:
            run = step.get("run") if isinstance(step, dict) else None
            if isinstance(run, dict):
                where = _directory(run.get("working_directory"), job_dir)
                out.extend(CiLine(c, where, rel) for c in _lines(run.get("command")))
            elif isinstance(run, str):
                out.extend(CiLine(c, job_dir, rel) for c in _lines(run))


def _travis(files: RepoFiles, out: list[CiLine]) -> None:
    rel = ".travis.yml"
    data = files.yaml(rel) or {}
    out.extend(CiLine(c, ".", rel) for c in _lines(data.get("script")))
    include = _dict(data.get("jobs") or data.get("matrix")).get("include")
    for job in include if isinstance(include, list) else []:
        if isinstance(job, dict):
            out.extend(CiLine(c, ".", rel) for c in _lines(job.get("script")))


def ci_lines(files: RepoFiles) -> list[CiLine]:
    """Every run line of the repository's CI, newest systems first, bounded per file."""
    out: list[CiLine] = []
    for reader in (_github, _gitlab, _circleci, _travis):
        found: list[CiLine] = []
        reader(files, found)
        by_source: dict[str, int] = {}
        for line in found:
            by_source[line.source] = by_source.get(line.source, 0) + 1
            if by_source[line.source] <= MAX_LINES_PER_FILE:
                out.append(line)
    return out


# Lines that start with these are plumbing, publishing or need the CI machine, not a check.
_SKIP_START = re.compile(
    r"^(docker|docker-compose|podman|kubectl|helm|terraform|aws|gcloud|az|gh|twine|codecov|"
    r"coveralls|git|curl|wget|sudo|apt-get|apt|brew|choco|echo|printf|export|source|set|mkdir|"
    r"rm|cp|mv|ls|cat|tar|unzip|chmod|ln|sleep|netlify|vercel|flyctl|fly|firebase|surge|"
    r"semantic-release|changeset|npx\s+(semantic-release|changeset|netlify|vercel))\b"
)
_DEPLOY = re.compile(r"\b(publish|deploy|upload|semantic-release)\b")
_INSTALL = re.compile(
    r"^(npm\s+(ci|install|i)\b|yarn(\s+install)?$|yarn\s+install|pnpm\s+(i|install)\b|"
    r"bun\s+install|pip3?\s+install|python3?\s+-m\s+pip\s+install|poetry\s+install|uv\s+sync|"
    r"uv\s+pip\s+install|bundle\s+install|composer\s+install|go\s+mod\s+download|corepack)"
)
_E2E = re.compile(r"playwright|cypress|e2e|wdio|selenium|testcafe|nightwatch")
# A tox/nox environment named for a check is a lint step, whatever runs it.
_LINT_ENV = re.compile(
    r"\b(tox|nox)\b.*\s-(e|s)\s*['\"]?(lint|typing|types|mypy|style|flake8|pre-commit|format)"
)
_LINT = re.compile(
    r"\b(pre-commit\s+run|lint|eslint|ruff|flake8|pylint|mypy|pyright|black\s+--check|isort\s+--check|"
    r"prettier\s+(--check|-c)|clippy|golangci-lint|go\s+vet|gofmt|rubocop|pint|phpcs|phpstan|"
    r"stylelint|typecheck|type-check|tsc\s+--noEmit|fmt\s+--check|format\s+--check|biome)\b"
)
# Commands that rewrite the code instead of checking it: `lint:fix`, `eslint --fix`,
# `prettier -w`, `ruff format` without --check.
_FIXER = re.compile(
    r"(^|\s)--(fix|write)\b|\b(prettier|oxfmt|biome\s+format)\b[^&;|]*\s-w\b|"
    r"[\w.-]:fix\b|\bfix:[\w-]|\bruff\s+format\b(?![^&;|]*--check)"
)
_TEST = re.compile(
    r"\b(test|tests|pytest|jest|vitest|mocha|tox|nox|rspec|phpunit|unittest|runtests|spec|"
    r"coverage\s+run|ctest|verify)\b"
)
_BUILD = re.compile(r"\b(build|compile|dist|bundle|package|generate|export|assemble)\b")


def kind_of(command: str) -> CommandKind | None:
    """test, lint or build for a CI line; None for installs, deploys, shell plumbing and
    lines that need the CI system's variables."""
    line = command.strip()
    if not line or line.startswith("#") or re.search(r"\$\{\{|\$[A-Z_{]", line):
        return None
    segments = [seg.strip() for seg in re.split(r"&&|;|\|\|", line) if seg.strip()]
    if any(_INSTALL.match(seg) or _SKIP_START.match(seg) for seg in segments):
        return None
    if _DEPLOY.search(line):
        return None
    if _E2E.search(line):
        return None
    target = re.fullmatch(r"(?:make|just)\s+([A-Za-z0-9_.\-]+)", line)
    if target:
        return next((k for k, names in TARGETS.items() if target.group(1) in names), None)
    if _FIXER.search(line):
        return None  # rewrites the code (an autofix workflow): never the pipeline's check
    if _LINT_ENV.search(line) or _LINT.search(line):
        return "lint"
    if _TEST.search(line):
        return "test"
    if _BUILD.search(line):
        return "build"
    return None
