"""What a package.json script does: unit tests, end-to-end tests, lint or build; placeholders
and watch-mode scripts are no stage; the setup an end-to-end suite needs before it runs."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

ScriptKind = Literal["unit", "e2e", "lint", "build", "placeholder", "other"]

E2E_TOOLS = (
    "playwright",
    "cypress",
    "wdio",
    "webdriverio",
    "nightwatch",
    "testcafe",
    "detox",
    "start-server-and-test",
    "codeceptjs",
)
UNIT_TOOLS = ("jest", "vitest", "mocha", "ava", "tap", "uvu", "jasmine", "karma", "node --test")
LINT_TOOLS = ("eslint", "biome", "oxlint", "xo", "standard", "stylelint", "tsc", "svelte-check")
# Build scripts under another name, in the order a maintainer would reach for them.
BUILD_NAMES = ("build", "build:prod", "build:production", "compile", "dist", "bundle", "build:all")
UNIT_NAMES = ("test", "test:unit", "unit", "test:ci", "test:run", "tests", "spec")
E2E_NAMES = ("test:e2e", "e2e", "test:integration", "cypress:run", "playwright")
LINT_NAMES = ("lint", "lint:check", "check", "typecheck", "type-check", "check-types", "tsc")
_PLACEHOLDER = re.compile(
    r"""^\s*(?:echo\s+(?:"[^"]*"|'[^']*'|[^&|;]*)\s*(?:&&|;)\s*)?exit\s+\d+\s*;?\s*$"""
    r"""|no test specified|^\s*(?:true|:)?\s*$""",
    re.IGNORECASE,
)
# `npm run x`, `yarn x`, `pnpm x`, `bun run x`: a script calling another script.
_RUN_SCRIPT = re.compile(
    r"^(?:npm\s+(?:run(?:-script)?|test|t)|yarn(?:\s+run)?|pnpm(?:\s+run)?|bun\s+run)"
    r"(?:\s+([A-Za-z0-9:_.\-]+))?"
)
_OUT_FLAGS = re.compile(
    r"(?:--outDir|--out-dir|--output-path|--dist-dir|--outdir)(?:=|\s+)['\"]?([^\s'\"&;|]+)"
)


@dataclass
class ScriptPlan:
    """The stages a package's scripts give: each a script name, or None."""

    unit: str | None = None
    e2e: str | None = None
    lint: str | None = None
    build: str | None = None
    output_directory: str | None = None
    e2e_tools: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_placeholder(body: str) -> bool:
    """`echo "Error: no test specified" && exit 1` and friends: a script that tests nothing."""
    return bool(_PLACEHOLDER.search(body))


def _words(body: str) -> list[str]:
    try:
        return shlex.split(body, comments=False)
    except ValueError:
        return body.split()


def _mentions(body: str, tools: tuple[str, ...]) -> list[str]:
    words = " ".join(_words(body)).lower()
    return [t for t in tools if re.search(rf"(?<![\w@/-]){re.escape(t)}(?![\w-])", words)]


def _segments(body: str) -> list[str]:
    return [s.strip() for s in re.split(r"&&|\|\||;", body) if s.strip()]


def _called_scripts(body: str, scripts: dict[str, str]) -> list[str]:
    """Scripts that `body` runs by name (npm run x, run-s x y, npm-run-all x)."""
    called: list[str] = []
    for segment in _segments(body):
        match = _RUN_SCRIPT.match(segment)
        if match:
            name = match.group(1) or "test"
            if segment.startswith(("npm test", "npm t")):
                name = "test"
            if name in scripts:
                called.append(name)
            continue
        words = _words(segment)
        if words and words[0] in ("run-s", "run-p", "npm-run-all", "concurrently"):
            called.extend(w.strip("'\"") for w in words[1:] if w.strip("'\"") in scripts)
    return called


def classify(name: str, scripts: dict[str, str], depth: int = 0) -> ScriptKind:
    """What running the script `name` does, following calls to other scripts (bounded)."""
    body = scripts.get(name)
    if not isinstance(body, str):
        return "other"
    if is_placeholder(body):
        return "placeholder"
    if _mentions(body, E2E_TOOLS) or re.search(r"(^|:)e2e($|:)", name):
        return "e2e"
    if depth < 4:
        inner = [classify(c, scripts, depth + 1) for c in _called_scripts(body, scripts)]
        if "e2e" in inner:
            return "e2e"
        if inner and all(k == "placeholder" for k in inner):
            return "placeholder"
    if name.startswith("test") or name in UNIT_NAMES or _mentions(body, UNIT_TOOLS):
        return "unit"
    if name in BUILD_NAMES or name.startswith("build"):
        return "build"
    if name.startswith("lint") or _mentions(body, LINT_TOOLS):
        return "lint"
    return "other"


def _watches(body: str) -> bool:
    """A dev loop, not a CI step (jest --watch, vitest watch, nodemon)."""
    if re.search(r"--watch(All)?(?!\S*=false)\b", body) and "--watchAll=false" not in body:
        return True
    words = _words(body)
    return bool(words) and (words[0] == "nodemon" or words[:2] == ["vitest", "watch"])


def _interactive(body: str) -> bool:
    """A suite opened in a window (cypress open, playwright --ui) waits for a person."""
    return bool(re.search(r"cypress\s+open|--ui\b|--headed\b|--debug\b", body))


def _writes(body: str) -> bool:
    """A fixer (eslint --fix, prettier --write) changes the tree instead of checking it."""
    return bool(re.search(r"--fix\b|--write\b|(?<!\w)-w(?!\w)", body))


def _unit_from_composite(name: str, scripts: dict[str, str]) -> str | None:
    """`test` = `npm run test:unit && npm run test:e2e`: the unit half is the unit stage."""
    for called in _called_scripts(scripts.get(name, ""), scripts):
        if called != name and classify(called, scripts) == "unit":
            return called
    return None


def plan_scripts(scripts: dict[str, str]) -> ScriptPlan:
    """The unit, end-to-end, lint and build scripts of one package.json."""
    clean = {str(k): v for k, v in scripts.items() if isinstance(v, str)}
    plan = ScriptPlan()
    for name in UNIT_NAMES:
        if name not in clean or _watches(clean[name]):
            continue
        kind = classify(name, clean)
        if kind == "unit":
            plan.unit = name
            break
        if kind == "placeholder":
            plan.notes.append(f"script {name!r} is a placeholder that tests nothing")
        elif kind == "e2e":
            plan.notes.append(f"script {name!r} runs end-to-end tests, not unit tests")
            unit = _unit_from_composite(name, clean)
            if unit:
                plan.unit = unit
                break
    others = sorted(n for n in clean if "e2e" in n or "integration" in n)
    for name in (*E2E_NAMES, *others, "test"):
        if name not in clean or _interactive(clean[name]) or re.search(r"(^|:)dev($|:)", name):
            continue
        if classify(name, clean) == "e2e":
            plan.e2e = name
            plan.e2e_tools = _e2e_tools(name, clean)
            break
    plan.lint = next(
        (n for n in LINT_NAMES if n in clean and not _writes(clean[n]) and not _watches(clean[n])),
        None,
    )
    plan.build = next(
        (n for n in BUILD_NAMES if n in clean and classify(n, clean) not in ("placeholder",)),
        None,
    )
    if plan.build:
        plan.output_directory = output_from_script(clean[plan.build])
    return plan


def _e2e_tools(name: str, scripts: dict[str, str], depth: int = 0) -> list[str]:
    body = scripts.get(name, "")
    found = _mentions(body, E2E_TOOLS)
    if depth < 4:
        for called in _called_scripts(body, scripts):
            if called != name:
                found += _e2e_tools(called, scripts, depth + 1)
    return list(dict.fromkeys(found))


def output_from_script(body: str) -> str | None:
    """An output directory a build script names (`vite build --outDir site`)."""
    match = _OUT_FLAGS.search(body)
    if match and _safe_relative(match.group(1)):
        return match.group(1).strip("./") or None
    return None


def _safe_relative(path: str) -> bool:
    return bool(path) and not path.startswith(("/", "~", "$")) and ".." not in path.split("/")


def e2e_setup(tools: list[str], run_exec: str) -> list[str]:
    """Browsers an end-to-end suite downloads before it can run."""
    steps: list[str] = []
    if "playwright" in tools:
        steps.append(f"{run_exec} playwright install --with-deps")
    if "cypress" in tools:
        steps.append(f"{run_exec} cypress install")
    return steps


def delegation(body: str) -> tuple[str, str] | None:
    """(member, script) when a workspace root's script only runs one member's script:
    `pnpm --filter web test`, `bun run --filter web test`, `yarn workspace web test`,
    `npm run test --workspace=web`."""
    try:
        words = shlex.split(body)
    except ValueError:
        return None
    if len(words) < 3 or words[0] not in ("npm", "pnpm", "yarn", "bun") or "&&" in body:
        return None
    member: str | None = None
    rest: list[str] = []
    i = 1
    while i < len(words):
        word = words[i]
        if word in ("--filter", "-F", "--workspace", "-w", "workspace") and i + 1 < len(words):
            member, i = words[i + 1], i + 2
            continue
        if word.startswith(("--filter=", "--workspace=")):
            member = word.split("=", 1)[1]
        elif word not in ("run", "run-script") and not word.startswith("-"):
            rest.append(word)
        i += 1
    if member is None or len(rest) != 1:
        return None
    return member, rest[0]


def writes(body: str) -> bool:
    return _writes(body)
