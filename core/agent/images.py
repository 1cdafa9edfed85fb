"""The container images the generator chooses: what each contains, where its package managers
keep their caches, and which tools a stage's commands call (so a stage never calls a tool its
image lacks unless one of its own steps installs it first)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# What every image's shell offers (POSIX sh builtins and coreutils/busybox).
SHELL = frozenset(
    {
        "sh", "cd", "echo", "printf", "test", "[", "true", "false", "exit", "export", "set",
        "cp", "mv", "rm", "mkdir", "cat", "ls", "env", "touch", "chmod", "sed", "grep", "find",
        "tar", "gzip", "head", "tail", "tee", "xargs", "sleep", "wc", "sort", "uniq", "tr",
        "date", "mktemp", "basename", "dirname", "awk", "command", "exec", "eval", "read",
        "unset", "shift", "trap", "wait", "id", "uname", "pwd", "ln", "readlink", "cut", "[[",
    }
)  # fmt: skip
# Official Debian images built on buildpack-deps (node, python, golang, rust, ruby) carry these.
BUILDPACK = frozenset(
    {"bash", "git", "curl", "wget", "make", "gcc", "g++", "cc", "unzip", "ssh", "apt-get"}
)


@dataclass(frozen=True)
class ImageFamily:
    """Images of one repository (`node:*`) and the tools all of its tags contain."""

    repository: str
    tools: frozenset[str]
    # Where the package managers used in it keep their download caches (tool -> paths).
    caches: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _family(
    repository: str,
    tools: Iterable[str],
    base: frozenset[str] = BUILDPACK,
    caches: Mapping[str, tuple[str, ...]] | None = None,
) -> ImageFamily:
    return ImageFamily(repository, SHELL | base | frozenset(tools), tuple((caches or {}).items()))


NODE_CACHES = {
    "npm": ("~/.npm",),
    # pnpm 7+ on Linux: $XDG_DATA_HOME/pnpm/store.
    "pnpm": ("~/.local/share/pnpm/store",),
    "yarn": ("~/.cache/yarn",),
    # Yarn 2+ (Berry) keeps a global cache unless enableGlobalCache is false.
    "yarn-berry": ("~/.yarn/berry/cache",),
    "bun": ("~/.bun/install/cache",),
}
PYTHON_CACHES = {
    "pip": ("~/.cache/pip",),
    "poetry": ("~/.cache/pypoetry",),
    "uv": ("~/.cache/uv",),
    "pipenv": ("~/.cache/pipenv", "~/.cache/pip"),
}
CARGO_CACHES = {"cargo": ("/usr/local/cargo/registry", "/usr/local/cargo/git")}
GRADLE_CACHES = {"gradle": ("~/.gradle/caches", "~/.gradle/wrapper")}
MAVEN_CACHES = {"maven": ("~/.m2/repository",)}
CATALOG: tuple[ImageFamily, ...] = (
    _family("node", ("node", "npm", "npx", "corepack", "python3", "yarn"), caches=NODE_CACHES),
    _family("python", ("python", "python3", "pip", "pip3"), caches=PYTHON_CACHES),
    # GOPATH=/go in the golang images.
    _family("golang", ("go", "gofmt"), caches={"go": ("/go/pkg/mod", "~/.cache/go-build")}),
    # rustup's minimal profile: clippy and rustfmt are components added on demand.
    _family("rust", ("cargo", "rustc", "rustup"), caches=CARGO_CACHES),
    _family("rustlang/rust", ("cargo", "rustc", "rustup"), caches=CARGO_CACHES),
    # GEM_HOME and BUNDLE_APP_CONFIG are /usr/local/bundle in the ruby images.
    _family(
        "ruby",
        ("ruby", "gem", "bundle", "bundler", "irb", "rake"),
        caches={"bundler": ("/usr/local/bundle",)},
    ),
    # composer:2 is Alpine with PHP and Composer (COMPOSER_HOME=/tmp), no Node.
    _family(
        "composer",
        ("php", "composer", "git", "unzip", "zip", "bash", "make", "curl"),
        base=frozenset(),
        caches={"composer": ("/tmp/cache",)},  # noqa: S108 - the image's COMPOSER_HOME
    ),
    # php:*-cli is Debian without git or unzip: Composer is installed by a step when needed.
    _family(
        "php",
        ("php", "curl", "apt-get", "bash"),
        base=frozenset(),
        caches={"composer": ("~/.cache/composer",)},
    ),
    _family(
        "maven",
        ("java", "javac", "mvn", "bash", "git", "curl"),
        base=frozenset(),
        caches=MAVEN_CACHES,
    ),
    _family(
        "gradle",
        ("java", "javac", "gradle", "bash", "git", "curl", "unzip"),
        base=frozenset(),
        caches=GRADLE_CACHES,
    ),
    # The Gradle and Maven wrappers bring their own build tool.
    _family(
        "eclipse-temurin",
        ("java", "javac", "bash", "curl", "unzip"),
        base=frozenset(),
        caches={**GRADLE_CACHES, **MAVEN_CACHES},
    ),
    _family(
        "oven/bun",
        ("bun", "bunx"),
        base=frozenset({"bash"}),
        caches={"bun": ("~/.bun/install/cache",)},
    ),
    _family("alpine", (), base=frozenset({"apk", "wget"})),
    _family("curlimages/curl", ("curl",), base=frozenset()),
    _family("hadolint/hadolint", ("hadolint",), base=frozenset()),
    _family("docker", ("docker",), base=frozenset({"apk", "git"})),
)
_BY_REPOSITORY = {f.repository: f for f in CATALOG}


def repository_of(image: str) -> str:
    """`node` of `node:20-alpine`, `oven/bun` of `docker.io/oven/bun:1`."""
    name = image.split("@", 1)[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    name = name.split("@", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        name = name.removeprefix(prefix)
    return name


def family_of(image: str | None) -> ImageFamily | None:
    return _BY_REPOSITORY.get(repository_of(image)) if image else None


def image_tools(image: str | None) -> frozenset[str] | None:
    """The tools the image contains, or None when the image is not in the catalog."""
    family = family_of(image)
    if family is None:
        return None
    if image and family.repository in ("node", "python") and "alpine" in image:
        return family.tools - BUILDPACK - {"python3"} | {"apk"}
    return family.tools


def cache_paths(image: str | None, *managers: str) -> list[str]:
    """Where the image's package managers really keep their caches."""
    family = family_of(image)
    caches = dict(family.caches) if family else {}
    out: list[str] = []
    for manager in managers:
        out.extend(caches.get(manager, ()))
    return list(dict.fromkeys(out))


# --- the images chosen for a toolchain version ----------------------------------------------------

COMPOSER_IMAGE_PHP = "8.4"  # the PHP that composer:2 ships
COMPOSER_SETUP = (
    "apt-get update -qq && apt-get install -y -qq git unzip > /dev/null && "
    "curl -fsSL https://getcomposer.org/installer | php -- --install-dir=/usr/local/bin "
    "--filename=composer"
)


def python_image(version: str) -> str:
    return f"python:{version}"


def node_image(tag: str) -> str:
    return f"node:{tag}"


def go_image(version: str) -> str:
    return f"golang:{version}"


def rust_image(channel: str) -> str:
    if channel in ("nightly", "beta"):
        return f"rustlang/rust:{channel}"
    return f"rust:{channel}"


def ruby_image(version: str) -> str:
    return f"ruby:{version}"


def php_image(version: str) -> str:
    """composer:2 when its PHP is the one wanted; php:<version>-cli (plus a setup step) else."""
    return "composer:2" if version == COMPOSER_IMAGE_PHP else f"php:{version}-cli"


def java_image(jdk: str, build_tool: str, wrapper: bool) -> str:
    if wrapper:
        return f"eclipse-temurin:{jdk}"
    if build_tool == "maven":
        return f"maven:3.9-eclipse-temurin-{jdk}"
    return f"gradle:{9 if int(jdk) >= 25 else 8}-jdk{jdk}"


# --- the tools a command calls, and what its steps install ---------------------------------------

# `cargo <sub>` needs the component or crate that provides the subcommand.
CARGO_SUBCOMMANDS = {"clippy": "cargo-clippy", "fmt": "cargo-fmt", "audit": "cargo-audit"}
# Steps that install a tool for the commands after them.
RUSTUP_COMPONENTS = {"clippy": "cargo-clippy", "rustfmt": "cargo-fmt"}
# Executables a package puts on PATH under another name.
PACKAGE_EXECUTABLES = {
    "uv": ("uv", "uvx"), "bundler-audit": ("bundle-audit",), "build": (),
    "pip-audit": ("pip-audit",), "poetry": ("poetry",), "pipenv": ("pipenv",),
}  # fmt: skip
# pnpm/yarn through corepack. Its shims go beside node, which only root may write; a build user
# with a read-only toolchain (Forgeline's sandbox, rootless runners) gets them in ~/.local/bin,
# on its PATH there, instead.
COREPACK_ENABLE = (
    "(corepack enable 2>/dev/null || "
    '(mkdir -p "$HOME/.local/bin" && corepack enable --install-directory "$HOME/.local/bin"))'
)
INSTALLERS = {
    "cargo-clippy": "rustup component add clippy",
    "cargo-fmt": "rustup component add rustfmt",
    "pnpm": COREPACK_ENABLE,
    "composer": COMPOSER_SETUP,
}
_SEPARATORS = re.compile(r"\s*(?:&&|\|\||;|\||\n)\s*")


def _segments(command: str) -> list[list[str]]:
    out: list[list[str]] = []
    for part in _SEPARATORS.split(command):
        part = part.strip().lstrip("(").rstrip(")").strip()
        if not part:
            continue
        try:
            words = shlex.split(part, comments=False)
        except ValueError:
            words = part.split()
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # FOO=bar cmd
        if words and words[0].startswith("("):
            words = [words[0].lstrip("("), *words[1:]] if words[0] != "(" else words[1:]
        if words:
            out.append(words)
    return out


def _called(words: list[str]) -> str | None:
    tool = words[0]
    if "/" in tool or tool.startswith("$"):
        return None  # ./gradlew, vendor/bin/phpunit, bin/rails: files of the checkout
    if tool == "cargo" and len(words) > 1 and words[1] in CARGO_SUBCOMMANDS:
        return CARGO_SUBCOMMANDS[words[1]]
    return tool


def called_tools(command: str) -> list[str]:
    """Executables a shell command calls (repository scripts such as ./gradlew excluded)."""
    return [tool for words in _segments(command) if (tool := _called(words))]


def _installed(words: list[str]) -> set[str]:
    """Tools one simple command puts on PATH for the commands after it."""
    out: set[str] = set()
    tool, args = words[0], [w for w in words[1:] if not w.startswith("-")]
    if tool in ("python", "python3") and words[1:3] == ["-m", "pip"]:
        tool, args = "pip", [w for w in words[3:] if not w.startswith("-")]
    if tool in ("pip", "pip3") and args[:1] == ["install"]:
        for package in args[1:]:
            name = re.split(r"[<>=!~\[ ;@]", package, maxsplit=1)[0].lower()
            out.update(PACKAGE_EXECUTABLES.get(name, (name,)))
    elif tool == "corepack" and args[:1] == ["enable"]:
        # Its operands are package managers; a redirection or an option's value is not one.
        named = [a for a in args[1:] if a in ("pnpm", "yarn", "npm")]
        out.update(named or ("pnpm", "yarn"))
    elif tool in ("npm", "pnpm", "yarn", "bun") and ("-g" in words or "global" in words):
        out.update(re.sub(r"(?<=.)@.*$", "", a).rsplit("/", 1)[-1] for a in args[1:])
    elif tool == "gem" and args[:1] == ["install"]:
        for gem in args[1:]:
            out.update(PACKAGE_EXECUTABLES.get(gem, (gem,)))
    elif tool == "go" and args[:1] == ["install"]:
        out.update(a.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1] for a in args[1:])
    elif tool == "cargo" and args[:1] == ["install"]:
        out.update(args[1:])
    elif tool == "rustup" and args[:2] == ["component", "add"]:
        out.update(RUSTUP_COMPONENTS.get(c, c) for c in args[2:])
    elif tool in ("apt-get", "apk") and args[:1] in (["install"], ["add"]):
        out.update(args[1:])
    elif "--filename=composer" in words:
        out.add("composer")
    return out


def installed_tools(command: str) -> set[str]:
    """Tools a command puts on PATH for the commands after it."""
    return {tool for words in _segments(command) for tool in _installed(words)}


def missing_tools(
    image: str | None, commands: list[str], provided: Iterable[str] = ()
) -> list[str]:
    """Tools the commands call that neither the image, an earlier step nor the project's own
    install (`provided`) puts on PATH ([] when the image is not in the catalog)."""
    available = image_tools(image)
    if available is None:
        return []
    have = set(available) | set(provided)
    missing: list[str] = []
    for words in (w for command in commands for w in _segments(command)):
        tool = _called(words)
        if tool is not None and tool not in have and tool not in missing:
            missing.append(tool)
        have |= _installed(words)
    return missing


def install_steps(
    image: str | None, commands: list[str], provided: Iterable[str] = ()
) -> list[str]:
    """Steps to run first so that every tool the commands call is there (known installers only)."""
    steps: list[str] = []
    for tool in missing_tools(image, commands, provided):
        step = INSTALLERS.get(tool)
        if step and step not in steps:
            steps.append(step)
    return steps
