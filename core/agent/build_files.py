"""Commands declared outside CI: Makefile and justfile targets, a Dockerfile's build steps and
the directory it serves, and conventional test entry points (runtests.py, script/test, ...)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from core.agent.ci_configs import TARGETS, CommandKind, kind_of
from core.agent.framework_outputs import relative_dir
from core.agent.repo_files import RepoFiles, join

# A recipe that needs a container engine or a VM does not run inside a CI job's container.
_NEEDS_HOST = re.compile(r"\b(docker|docker-compose|podman|vagrant|kind|minikube|sudo)\b")
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*:(?![=:])(.*)$")
_JUST_RECIPE = re.compile(r"^@?([A-Za-z0-9][A-Za-z0-9_\-]*)\s*:(?!=)(.*)$")
ENTRY_POINTS = ("runtests.py", "tests.py", "script/test", "scripts/test", "scripts/test.sh",
                "test/run.sh", "tests/run.sh", "bin/test")  # fmt: skip
STATIC_SERVE_DIRS = ("/usr/share/nginx/html", "/usr/local/apache2/htdocs", "/srv", "/var/www")
MAX_RECIPE_LINES = 8


@dataclass
class Recipe:
    name: str
    lines: list[str] = field(default_factory=list)
    prerequisites: list[str] = field(default_factory=list)


def _recipes(text: str, pattern: re.Pattern[str], make: bool) -> dict[str, Recipe]:
    recipes: dict[str, Recipe] = {}
    current: Recipe | None = None
    for raw in text.splitlines()[:5000]:
        indented = raw.startswith("\t") if make else raw[:1] in (" ", "\t")
        if indented:
            if current is not None and raw.strip() and not raw.strip().startswith("#"):
                current.lines.append(raw.strip().lstrip("@-").strip())
            continue
        match = pattern.match(raw)
        if match and not raw.startswith((".", "#")):
            current = Recipe(match.group(1), prerequisites=match.group(2).split("#")[0].split())
            recipes.setdefault(current.name, current)
        elif raw.strip():
            current = None
    return recipes


@dataclass(frozen=True)
class LocalTarget:
    command: str
    source: str
    # What the target runs (a make recipe with its prerequisites), checked against the image.
    runs: tuple[str, ...]


MAKEFILES = ("Makefile", "makefile", "GNUmakefile")
JUSTFILES = ("justfile", "Justfile", ".justfile")


def _first_recipes(
    files: RepoFiles, base: str, names: tuple[str, ...], pattern: re.Pattern[str], *, make: bool
) -> tuple[str, dict[str, Recipe]]:
    """The first of `names` the directory has, and its recipes ("" and none without one)."""
    for name in names:
        text = files.text(join(base, name))
        if text is not None:
            return join(base, name), _recipes(text, pattern, make)
    return "", {}


def _per_kind(
    recipes: dict[str, Recipe], take: Callable[[Recipe], LocalTarget | None]
) -> dict[CommandKind, LocalTarget]:
    """Per kind the first of its conventional targets that `take` accepts."""
    found: dict[CommandKind, LocalTarget] = {}
    for kind, targets in TARGETS.items():
        for target in targets:
            recipe = recipes.get(target)
            chosen = take(recipe) if recipe is not None else None
            if chosen is not None:
                found[kind] = chosen
                break
    return found


def make_targets(files: RepoFiles, base: str) -> dict[CommandKind, LocalTarget]:
    """Per kind the Makefile's conventional target."""
    source, recipes = _first_recipes(files, base, MAKEFILES, _MAKE_TARGET, make=True)

    def take(recipe: Recipe) -> LocalTarget | None:
        body = _expanded(recipe, recipes)
        if not body.strip() or _NEEDS_HOST.search(body):
            return None
        runs = tuple(line for line in body.splitlines() if line.strip())
        return LocalTarget(f"make {recipe.name}", source, runs)

    return _per_kind(recipes, take)


def has_make_target(files: RepoFiles, base: str, target: str) -> bool:
    return target in _first_recipes(files, base, MAKEFILES, _MAKE_TARGET, make=True)[1]


def _expanded(recipe: Recipe, recipes: dict[str, Recipe], depth: int = 0) -> str:
    parts = list(recipe.lines)
    if depth < 3:
        parts += [_expanded(recipes[p], recipes, depth + 1) for p in recipe.prerequisites
                  if p in recipes and p != recipe.name]  # fmt: skip
    return "\n".join(parts)


def just_recipes(files: RepoFiles, base: str) -> dict[CommandKind, LocalTarget]:
    """The body of a justfile recipe, inlined (CI images do not ship `just`)."""
    source, recipes = _first_recipes(files, base, JUSTFILES, _JUST_RECIPE, make=False)

    def take(recipe: Recipe) -> LocalTarget | None:
        if not recipe.lines or len(recipe.lines) > MAX_RECIPE_LINES:
            return None
        body = " && ".join(recipe.lines)
        if recipe.prerequisites or "{{" in body or _NEEDS_HOST.search(body):
            return None
        return LocalTarget(body, source, tuple(recipe.lines))

    return _per_kind(recipes, take)


def entry_point_test(files: RepoFiles, base: str) -> tuple[str, str] | None:
    """A test entry point the repository ships, run with the interpreter its shebang names."""
    for rel in ENTRY_POINTS:
        text = files.text(join(base, rel))
        if text is None:
            continue
        if rel.endswith(".py"):
            if rel == "tests.py" and "__main__" not in text:
                return "python -m unittest tests", join(base, rel)
            return f"python {rel}", join(base, rel)
        first = text.splitlines()[0] if text else ""
        shell = "bash" if "bash" in first else ("python" if "python" in first else "sh")
        return f"{shell} {rel}", join(base, rel)
    return None


def dockerfile_build(files: RepoFiles, base: str) -> tuple[str | None, str | None, str]:
    """(build command, served output directory, source) from the app's Dockerfile."""
    rel = join(base, "Dockerfile")
    text = files.text(rel)
    if text is None:
        return None, None, rel
    text = re.sub(r"\\\n\s*", " ", text)
    build: str | None = None
    workdirs: dict[str, str] = {}
    stage, workdir = "0", "/"
    output: str | None = None
    for raw in text.splitlines()[:2000]:
        line = raw.strip()
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            alias = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
            stage = alias.group(1) if alias else str(len(workdirs))
            workdir = "/"
        elif instruction == "WORKDIR":
            workdir = rest.strip()
            workdirs[stage] = workdir
        elif instruction == "RUN" and build is None:
            for part in re.split(r"&&|;", rest):
                if kind_of(part.strip()) == "build":
                    build = part.strip()
                    break
        elif instruction == "COPY" and "--from=" in rest:
            output = _served(rest, workdirs) or output
    return build, output, rel


def _served(rest: str, workdirs: dict[str, str]) -> str | None:
    args = [a for a in rest.split() if not a.startswith("--")]
    source_stage = re.search(r"--from=(\S+)", rest)
    if len(args) < 2 or source_stage is None:
        return None
    src, dst = args[-2], args[-1].rstrip("/")
    if not any(dst == d or dst.startswith(d + "/") for d in STATIC_SERVE_DIRS):
        return None
    root = workdirs.get(source_stage.group(1), "/").rstrip("/") + "/"
    if src.startswith("/"):
        if not src.startswith(root) or root == "/":
            return None
        src = src[len(root) :]
    return relative_dir(src)
