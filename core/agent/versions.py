"""Toolchain versions a repository declares, resolved with real constraint parsers to the newest
image version the generator knows that satisfies them.

Python constraints go through `packaging` (PEP 440, Poetry's ^/~ forms translated first); Node
ranges and composer's PHP constraints through node-semver. A constraint nothing satisfies falls
back to the default and says so, rather than guessing a version the repository refused."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import nodesemver  # type: ignore[import-untyped]
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from core.agent.ci_node import newest_ci_node
from core.agent.ci_versions import ci_setup_version
from core.agent.repo_files import RepoFiles, join

# Image versions the generator may choose, oldest first. The newest one is the default.
PYTHON_VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
DEFAULT_PYTHON = "3.12"
NODE_MAJORS = (16, 18, 20, 22, 24)
DEFAULT_NODE = 20
NODE_LTS_CODENAMES = {
    "gallium": 16, "hydrogen": 18, "iron": 20, "jod": 22, "krypton": 24,
}  # fmt: skip
PHP_VERSIONS = ("7.4", "8.0", "8.1", "8.2", "8.3", "8.4")
JDK_LTS = (8, 11, 17, 21, 25)
DEFAULT_JDK = 21
# Newest JDK each Gradle release runs on (docs.gradle.org compatibility matrix), newest first.
GRADLE_MAX_JDK = (
    ((9, 1), 25), ((8, 14), 24), ((8, 10), 23), ((8, 8), 22), ((8, 5), 21), ((8, 3), 20),
    ((7, 6), 19), ((7, 5), 18), ((7, 3), 17), ((7, 0), 16), ((6, 7), 15), ((6, 3), 14),
    ((6, 0), 13), ((5, 4), 12), ((5, 0), 11), ((4, 7), 10), ((0, 0), 8),
)  # fmt: skip
DEFAULT_GO = "1.23"
DEFAULT_RUBY = "3.3"
MAX_CONSTRAINT_CHARS = 200


@dataclass(frozen=True)
class VersionChoice:
    """The version picked and what declared it ("" when nothing did: the default)."""

    version: str
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- Python --------------------------------------------------------------------------------------


def _poetry_clause(clause: str) -> str:
    """One Poetry/npm-style clause as PEP 440: ^3.10 -> >=3.10,<4.0; ~3.10 -> >=3.10,<3.11."""
    clause = clause.strip()
    caret = re.fullmatch(r"\^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", clause)
    if caret:
        major, minor, patch = caret.group(1), caret.group(2), caret.group(3)
        low = ".".join(p for p in (major, minor, patch) if p is not None)
        if int(major) > 0 or minor is None:
            return f">={low},<{int(major) + 1}.0"
        return f">={low},<0.{int(minor) + 1}"
    tilde = re.fullmatch(r"~(?!=)\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", clause)
    if tilde:
        major, minor, patch = tilde.group(1), tilde.group(2), tilde.group(3)
        low = ".".join(p for p in (major, minor, patch) if p is not None)
        upper = f"{int(major) + 1}.0" if minor is None else f"{major}.{int(minor) + 1}"
        return f">={low},<{upper}"
    if re.fullmatch(r"\d+(\.\d+)*(\.\*)?", clause):
        return f"=={clause}"
    if clause in ("*", ""):
        return ""
    return clause


def python_specifiers(constraint: str) -> list[SpecifierSet]:
    """Alternatives (`||` in Poetry) of a Python constraint, each a PEP 440 specifier set."""
    out: list[SpecifierSet] = []
    for alternative in constraint[:MAX_CONSTRAINT_CHARS].split("||"):
        parts = [p for p in re.split(r"[,\s]+(?=[<>=!~^\d])", alternative.strip()) if p.strip()]
        try:
            out.append(SpecifierSet(",".join(filter(None, (_poetry_clause(p) for p in parts)))))
        except InvalidSpecifier:
            continue
    return out


def newest_python(constraint: str, versions: tuple[str, ...] = PYTHON_VERSIONS) -> str | None:
    """The newest known Python minor the constraint admits (3.11 is admitted by `<=3.11`)."""
    alternatives = python_specifiers(constraint)
    if not alternatives:
        return None
    for candidate in reversed(versions):
        # Any release of the minor counts: `~3.10.4` admits 3.10 (3.10.4 and later).
        releases = [Version(f"{candidate}.{patch}") for patch in range(0, 30)]
        if any(s.contains(r, prereleases=True) for s in alternatives for r in releases):
            return candidate
    return None


def _pinned_python(raw: str | None) -> str | None:
    """The minor of a pin such as `3.11.4`, `3.12`, `python-3.10.2`, `cpython@3.11`."""
    for line in (raw or "").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"(?:c?python[-@]?)?(3\.\d+)(?:\.\d+)?(?:[a-z]+\d*)?", line)
        if match:
            return match.group(1)
    return None


def _tool_versions(files: RepoFiles, base: str, tool: str) -> str | None:
    """The version asdf/mise's .tool-versions pins for `tool` (python, nodejs, ruby, golang)."""
    for rel in (join(base, ".tool-versions"), ".tool-versions"):
        for line in (files.text(rel) or "").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0] == tool:
                return words[1]
    return None


def python_constraint(files: RepoFiles, base: str) -> tuple[str, str] | None:
    """(constraint, where) from requires-python, Poetry's python dependency or the Pipfile."""
    pyproject = files.toml(join(base, "pyproject.toml")) or {}
    project = pyproject.get("project")
    if isinstance(project, dict) and isinstance(project.get("requires-python"), str):
        return str(project["requires-python"]), "requires-python"
    poetry = (pyproject.get("tool") or {}).get("poetry") or {}
    python = (poetry.get("dependencies") or {}).get("python") if isinstance(poetry, dict) else None
    if isinstance(python, str):
        return python, "tool.poetry.dependencies.python"
    pipfile = files.toml(join(base, "Pipfile")) or {}
    requires = pipfile.get("requires") or {}
    if isinstance(requires, dict):
        for key in ("python_full_version", "python_version"):
            if isinstance(requires.get(key), str):
                return f"=={requires[key]}.*", f"Pipfile {key}"
    setup = files.text(join(base, "setup.py")) or ""
    match = re.search(r"python_requires\s*=\s*['\"]([^'\"]{1,100})['\"]", setup)
    if match:
        return match.group(1), "setup.py python_requires"
    return None


def python_version(files: RepoFiles, base: str) -> VersionChoice:
    """The Python of the CI image: a pin (.python-version, runtime.txt, .tool-versions) the
    constraint admits, else the newest known version the constraint admits, else the default."""
    declared = python_constraint(files, base)
    notes: list[str] = []
    pins = (
        (".python-version", files.text(join(base, ".python-version"))),
        ("runtime.txt", files.text(join(base, "runtime.txt"))),
        (".tool-versions", _tool_versions(files, base, "python")),
        (".python-version", files.text(".python-version") if base not in ("", ".") else None),
        ("the CI's setup-python", ci_setup_version(files, "python-version")),
    )
    for where, raw in pins:
        pinned = _pinned_python(raw)
        if pinned is None:
            continue
        if declared and newest_python(declared[0], (pinned,)) is None:
            notes.append(f"{where} pins {pinned}, outside {declared[1]} {declared[0]!r}")
            continue
        return VersionChoice(pinned, where, tuple(notes))
    if declared:
        newest = newest_python(declared[0])
        if newest is not None:
            return VersionChoice(newest, declared[1], tuple(notes))
        notes.append(f"no known Python satisfies {declared[1]} {declared[0]!r}")
    return VersionChoice(DEFAULT_PYTHON, "", tuple(notes))


# --- Node ----------------------------------------------------------------------------------------


def _node_probes(major: int) -> list[str]:
    return [f"{major}.{minor}.0" for minor in range(0, 40)] + [f"{major}.99.99"]


def node_major_for(range_text: str, majors: tuple[int, ...] = NODE_MAJORS) -> int | None:
    """The newest known Node major with a release inside an npm semver range."""
    text = range_text.strip()[:MAX_CONSTRAINT_CHARS]
    if not text:
        return None
    for major in reversed(majors):
        try:
            if nodesemver.max_satisfying(_node_probes(major), text, loose=True) is not None:
                return major
        except (ValueError, TypeError):
            return None
    return None


def _node_pin(raw: str | None) -> tuple[str, int] | None:
    """(image tag, major) of an .nvmrc/.node-version/volta pin: v18.17.0, 20, lts/*, lts/iron."""
    line = next((ln.split("#", 1)[0].strip() for ln in (raw or "").splitlines() if ln.strip()), "")
    line = line.lower().removeprefix("v")
    if line in ("lts/*", "lts", "node", "latest", "stable", "current"):
        return str(NODE_MAJORS[-1]), NODE_MAJORS[-1]
    if line.startswith("lts/"):
        major = NODE_LTS_CODENAMES.get(line.removeprefix("lts/"))
        return (str(major), major) if major else None
    exact = re.fullmatch(r"(\d{1,2})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?", line)
    if exact and 10 <= int(exact.group(1)) <= 40:
        return line, int(exact.group(1))
    if line:
        major = node_major_for(line)
        return (str(major), major) if major else None
    return None


def node_version(
    files: RepoFiles, base: str, pkg: dict[str, Any], root: str | None = None
) -> VersionChoice:
    """The Node image tag: volta or .nvmrc/.node-version/.tool-versions (of the app, then of its
    workspace root) when `engines.node` admits them, else the newest version the repository's
    CI runs (core/agent/ci_node.py) when engines admits it, else the newest known major
    `engines` admits, else the default."""
    engines = pkg.get("engines")
    engines_node = str(engines.get("node") or "") if isinstance(engines, dict) else ""
    volta = pkg.get("volta")
    places = [base] + ([root] if root not in (None, base) else [])
    if root in (None, base) and base not in ("", "."):
        places.append(".")
    pins: list[tuple[str, str | None]] = [
        ("volta", str(volta.get("node")) if isinstance(volta, dict) and volta.get("node") else None)
    ]
    for place in places:
        for name in (".nvmrc", ".node-version"):
            pins.append((join(place, name), files.text(join(place, name))))
    pins.append((".tool-versions", _tool_versions(files, base, "nodejs")))
    notes: list[str] = []
    for where, raw in pins:
        pinned = _node_pin(raw)
        if pinned is None:
            continue
        tag, major = pinned
        if engines_node and node_major_for(engines_node, (major,)) is None:
            notes.append(f"{where} pins {tag}, outside engines.node {engines_node!r}")
            continue
        return VersionChoice(tag, where, tuple(notes))
    ci = newest_ci_node(files, NODE_MAJORS[-1])
    if ci is not None:
        if not engines_node or node_major_for(engines_node, (int(ci.split(".")[0]),)):
            return VersionChoice(ci, "the CI's newest Node", tuple(notes))
        notes.append(f"the CI runs Node {ci}, outside engines.node {engines_node!r}")
    if engines_node:
        newest = node_major_for(engines_node)
        if newest is not None:
            return VersionChoice(str(newest), "engines.node", tuple(notes))
        notes.append(f"no known Node satisfies engines.node {engines_node!r}")
    return VersionChoice(str(DEFAULT_NODE), "", tuple(notes))


# --- PHP, Java, Go, Rust, Ruby -------------------------------------------------------------------


def php_version(composer: dict[str, Any]) -> VersionChoice:
    """Newest known PHP composer's constraint admits (config.platform.php pins it)."""
    platform = ((composer.get("config") or {}).get("platform") or {}).get("php")
    if isinstance(platform, str) and re.fullmatch(r"\d+\.\d+(\.\d+)?", platform.strip()):
        return VersionChoice(".".join(platform.strip().split(".")[:2]), "config.platform.php")
    constraint = (composer.get("require") or {}).get("php")
    if not isinstance(constraint, str) or not constraint.strip():
        return VersionChoice(PHP_VERSIONS[-1])
    # Composer: `|`/`||` separate alternatives, `,` and spaces join.
    text = re.sub(r"\s*\|\|?\s*", " || ", constraint[:MAX_CONSTRAINT_CHARS]).replace(",", " ")
    for candidate in reversed(PHP_VERSIONS):
        probes = [f"{candidate}.{patch}" for patch in range(0, 40)]
        try:
            if nodesemver.max_satisfying(probes, text, loose=True) is not None:
                return VersionChoice(candidate, "composer.json require.php")
        except (ValueError, TypeError):
            break
    return VersionChoice(PHP_VERSIONS[-1], "", (f"no known PHP satisfies {constraint!r}",))


def gradle_wrapper_version(files: RepoFiles, base: str) -> tuple[int, int] | None:
    raw = files.text(join(base, "gradle/wrapper/gradle-wrapper.properties")) or ""
    match = re.search(r"distributionUrl=.*?gradle-(\d+)\.(\d+)", raw)
    return (int(match.group(1)), int(match.group(2))) if match else None


def gradle_max_jdk(version: tuple[int, int]) -> int:
    return next(jdk for since, jdk in GRADLE_MAX_JDK if version >= since)


def declared_jdk(text: str) -> int | None:
    """The Java release a build file asks for (toolchain, release, source/target, java.version)."""
    patterns = (
        r"JavaLanguageVersion\.of\(\s*(\d+)\s*\)",
        r"<(?:java\.version|maven\.compiler\.release|maven\.compiler\.target|release)>\s*"
        r"(?:1\.)?(\d+)\s*<",
        r"(?:sourceCompatibility|targetCompatibility|jvmTarget)\s*=\s*"
        r"(?:JavaVersion\.VERSION_(?:1_)?(\d+)|['\"]?(?:1\.)?(\d+))",
        r"jvmToolchain\(\s*(\d+)\s*\)",
    )
    found = [
        int(g)
        for pattern in patterns
        for match in re.finditer(pattern, text)
        for g in match.groups()
        if g
    ]
    return max(found) if found else None


def java_version(files: RepoFiles, base: str, build_text: str) -> VersionChoice:
    """The JDK: what the build declares, capped by what the Gradle wrapper runs on; otherwise
    the newest LTS the wrapper supports (or the default)."""
    wrapper = gradle_wrapper_version(files, base)
    ceiling = gradle_max_jdk(wrapper) if wrapper else None
    wanted = declared_jdk(build_text)
    pinned = _tool_versions(files, base, "java")
    if wanted is None and pinned:
        match = re.search(r"(\d+)", pinned.split("-")[-1])
        wanted = int(match.group(1)) if match else None
    notes: list[str] = []
    if wanted is not None:
        if ceiling is not None and wanted > ceiling:
            notes.append(f"JDK {wanted} is newer than Gradle {wrapper} runs on ({ceiling})")
        else:
            # The build runs on the declared release or the next LTS after it.
            lts = next((j for j in JDK_LTS if j >= wanted and (not ceiling or j <= ceiling)), None)
            return VersionChoice(str(lts or wanted), "build file", tuple(notes))
    if ceiling is not None:
        best = max(j for j in JDK_LTS if j <= ceiling)
        return VersionChoice(str(best), "gradle wrapper", tuple(notes))
    return VersionChoice(str(DEFAULT_JDK), "", tuple(notes))


def go_version(go_mod: str) -> VersionChoice:
    """go.mod's toolchain directive, else its go directive (major.minor)."""
    toolchain = re.search(r"^toolchain\s+go(\d+\.\d+)", go_mod, re.M)
    if toolchain:
        return VersionChoice(toolchain.group(1), "go.mod toolchain")
    directive = re.search(r"^go\s+(\d+\.\d+)", go_mod, re.M)
    if directive:
        return VersionChoice(directive.group(1), "go.mod go directive")
    return VersionChoice(DEFAULT_GO)


def _rust_channel(files: RepoFiles, place: str) -> tuple[str, str] | None:
    """(channel, file) of rust-toolchain.toml or the legacy rust-toolchain file (plain or TOML)."""
    for name in ("rust-toolchain.toml", "rust-toolchain"):
        rel = join(place, name)
        raw = (files.text(rel) or "").strip()
        if not raw:
            continue
        if "[toolchain]" in raw:
            channel = ((files.toml(rel) or {}).get("toolchain") or {}).get("channel")
            if isinstance(channel, str) and channel.strip():
                return channel.strip(), rel
            continue
        return raw.splitlines()[0].strip(), rel
    return None


def rust_toolchain(files: RepoFiles, base: str) -> VersionChoice:
    """rust-toolchain(.toml)'s channel: stable, a release (1.75.0) or a (dated) nightly/beta."""
    for place in dict.fromkeys((base, ".")):
        found = _rust_channel(files, place)
        if found is None:
            continue
        channel, where = found
        if re.fullmatch(r"1\.\d+(\.\d+)?", channel):
            return VersionChoice(channel, where)
        if channel.startswith(("nightly", "beta")):
            return VersionChoice(channel.split("-", 1)[0], where)
        if channel == "stable":
            return VersionChoice("1", where)
    return VersionChoice("1")


def ruby_version(files: RepoFiles, base: str, gemfile: str) -> VersionChoice:
    """.ruby-version, .tool-versions or the Gemfile's `ruby` line (major.minor)."""
    sources = (
        (".ruby-version", files.text(join(base, ".ruby-version"))),
        (".tool-versions", _tool_versions(files, base, "ruby")),
        (
            "Gemfile",
            (re.search(r"^\s*ruby\s+['\"]([^'\"]+)['\"]", gemfile, re.M) or [None, None])[1],
        ),
    )
    for where, raw in sources:
        match = re.search(r"(\d+\.\d+)", (raw or "").strip().removeprefix("ruby-"))
        if match:
            return VersionChoice(match.group(1), where)
    return VersionChoice(DEFAULT_RUBY)


def python_minor_of(version: str) -> str | None:
    """`3.11` of `3.11.4` (None for anything that is no Python 3 version)."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return None
    return f"{parsed.major}.{parsed.minor}" if parsed.major == 3 else None
