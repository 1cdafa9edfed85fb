"""pip requirement files read as pip reads them: `-r`/`-c` includes followed (inside the checkout,
bounded), options, hashes, markers and line continuations understood, editable and VCS lines
named by their `#egg=` fragment, every other line parsed by `packaging`."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from core.agent.repo_files import RepoFiles, join

MAX_INCLUDED_FILES = 20
MAX_LINES = 5_000
_INCLUDE_OPTIONS = {"-r", "--requirement"}
_CONSTRAINT_OPTIONS = {"-c", "--constraint"}


def _logical_lines(text: str) -> list[str]:
    """Lines with `\\` continuations joined and comments (` #` or a leading #) dropped."""
    joined = re.sub(r"\\\r?\n", " ", text)
    out: list[str] = []
    for line in joined.splitlines()[:MAX_LINES]:
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


def _egg_name(url: str) -> str | None:
    match = re.search(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)", url)
    return match.group(1) if match else None


def _normal(rel: str) -> str:
    """`requirements/base.txt` of `requirements/../requirements/base.txt`."""
    parts: list[str] = []
    for part in PurePosixPath(rel).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) or "."


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class RequirementFiles:
    """The packages a set of requirement files installs (names canonicalised, lower case)."""

    def __init__(self, files: RepoFiles) -> None:
        self.files = files
        self.names: set[str] = set()
        self.read: list[str] = []
        self.local_paths: list[str] = []  # `-e .`, `./lib`: the project itself or a local package
        self.included: set[str] = set()
        self._seen: set[str] = set()

    def add(self, rel: str, *, included_by: str | None = None) -> None:
        """Read one requirement file (and what it includes)."""
        if included_by is not None and included_by != rel:
            self.included.add(rel)
        if rel in self._seen or len(self._seen) >= MAX_INCLUDED_FILES:
            return
        self._seen.add(rel)
        text = self.files.text(rel)
        if text is None:
            return
        self.read.append(rel)
        folder = str(PurePosixPath(rel).parent)
        for line in _logical_lines(text):
            self._line(line, folder, rel)

    def _line(self, line: str, folder: str, source: str) -> None:
        words = line.split()
        option = words[0].split("=", 1)[0]
        value = words[0].split("=", 1)[1] if "=" in words[0] else " ".join(words[1:2])
        if option in _INCLUDE_OPTIONS or option in _CONSTRAINT_OPTIONS:
            # Constraint files pin versions; they install nothing, so they add no names.
            if option in _INCLUDE_OPTIONS and value and "://" not in value:
                try:
                    self.files.path(join(folder, value))
                except ValueError:
                    return
                self.add(_normal(join(folder, value)), included_by=source)
            return
        if option in ("-e", "--editable"):
            target = value
            name = _egg_name(target)
            if name:
                self.names.add(_canonical(name))
            elif "://" not in target:
                self.local_paths.append(target)
            return
        if option.startswith("-"):
            return  # index and build options, --hash lines, --pre, --require-hashes, ...
        spec = re.split(r"\s+--", line, maxsplit=1)[0].strip()  # per-line --hash options
        if re.match(r"^[a-z][a-z0-9+.-]*://", spec, re.I) or spec.startswith(("git+", "hg+")):
            name = _egg_name(spec)
            if name:
                self.names.add(_canonical(name))
            return
        direct = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*@", spec)
        if not direct and (
            spec.startswith((".", "/")) or spec.endswith((".whl", ".tar.gz", ".zip"))
        ):
            self.local_paths.append(spec)
            return
        spec = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "0", spec)
        try:
            self.names.add(_canonical(Requirement(spec).name))
        except InvalidRequirement:
            return

    def install_files(self, base: str) -> list[str]:
        """The files to `pip install -r` (relative to `base`): those no other file includes,
        production-only files left out when another one exists."""
        # Files that include each other: the first one read brings the others.
        top = [r for r in self.read if r not in self.included] or self.read[:1]
        dev = [r for r in top if not re.search(r"prod", PurePosixPath(r).name)]
        chosen = dev or top
        prefix = "" if base in ("", ".") else f"{base}/"
        return [r.removeprefix(prefix) for r in chosen]


REQUIREMENT_PATTERNS = (
    "requirements.txt", "requirements-dev.txt", "requirements_dev.txt", "requirements-test.txt",
    "requirements_test.txt", "dev-requirements.txt", "test-requirements.txt",
    "requirements/base.txt", "requirements/dev.txt", "requirements/test.txt",
    "requirements/development.txt", "requirements/local.txt", "requirements/production.txt",
    "requirements/ci.txt", "requirements/tests.txt",
)  # fmt: skip


def requirement_names(files: RepoFiles, base: str) -> RequirementFiles:
    """Every package the usual requirement files of the app directory install."""
    reader = RequirementFiles(files)
    for rel in REQUIREMENT_PATTERNS:
        reader.add(join(base, rel))
    return reader


def requirement_name(spec: str) -> str | None:
    """The package a PEP 508 string names (None when it names none)."""
    try:
        return _canonical(Requirement(spec).name)
    except InvalidRequirement:
        return None


def python_dependencies(files: RepoFiles, base: str) -> tuple[set[str], dict[str, Any], list[str]]:
    """Package names the app depends on (pyproject, Poetry, requirement files with their
    includes), the parsed pyproject, and the requirement files to install from."""
    pyproject = files.toml(join(base, "pyproject.toml")) or {}
    project = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else {}
    assert isinstance(project, dict)
    specs: list[Any] = list(project.get("dependencies") or [])
    for group in (project.get("optional-dependencies") or {}).values():
        specs.extend(group if isinstance(group, list) else [])
    for group in (pyproject.get("dependency-groups") or {}).values():
        specs.extend(group if isinstance(group, list) else [])
    names = {n for s in specs if isinstance(s, str) and (n := requirement_name(s))}
    poetry = (pyproject.get("tool") or {}).get("poetry") or {}
    poetry_sections = [poetry.get("dependencies"), poetry.get("dev-dependencies")]
    poetry_sections += [g.get("dependencies") for g in (poetry.get("group") or {}).values()]
    for section in poetry_sections:
        if isinstance(section, dict):
            names.update(n for k in section if k != "python" and (n := requirement_name(str(k))))
    pipfile = files.toml(join(base, "Pipfile")) or {}
    for key in ("packages", "dev-packages"):
        section = pipfile.get(key)
        if isinstance(section, dict):
            names.update(n for k in section if (n := requirement_name(str(k))))
    requirements = requirement_names(files, base)
    names |= requirements.names
    return names, pyproject, requirements.install_files(base)


def requirement_files(command: str) -> list[str]:
    """The requirement files a pip install command names (`-r FILE`, `-rFILE`,
    `--requirement FILE`, `--requirement=FILE`), in order, each once; none for an unparsable
    command or one that names none."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return []
    found: list[str] = []
    for i, word in enumerate(words):
        if word in ("-r", "--requirement"):
            name = words[i + 1] if i + 1 < len(words) else ""
        elif word.startswith("--requirement="):
            name = word.partition("=")[2]
        elif word.startswith("-r") and not word.startswith("--") and len(word) > 2:
            name = word[2:]
        else:
            continue
        if name and not name.startswith("-") and name not in found:
            found.append(name)
    return found
