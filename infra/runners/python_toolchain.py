"""The Python interpreters a build host offers its sandboxed stages, and which one a stage's
image gets: the host's own (/usr) and those of the usual install roots (pyenv, uv-managed,
/opt/python), each able to make a virtualenv with pip (venv + ensurepip), never a virtualenv."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Interpreters already inside every sandbox (its read-only /usr).
SYSTEM_BIN_DIRS = (Path("/usr/bin"), Path("/usr/local/bin"))
_SYSTEM_EXE = re.compile(r"python3\.(\d+)")
# Run by each candidate: it makes virtualenvs with pip, it is no virtualenv itself.
_PROBE = (
    "import sys, venv, ensurepip\n"
    "assert sys.prefix == sys.base_prefix, 'a virtualenv'\n"
    "print('%d.%d.%d' % sys.version_info[:3])\n"
)
_PROBE_SECONDS = 15.0
_TAG_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")
# Images of other tools that carry a Python in their tag (ghcr.io/astral-sh/uv:python3.12-...).
_TAG_PYTHON = re.compile(r"(?:^|[-_])python(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PythonInstall:
    version: str  # "3.11.2"
    executable: Path  # the same path inside the sandbox
    # An installation prefix outside /usr, bound read-only into every sandbox; None: in /usr.
    mount: Path | None = None

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)


@dataclass(frozen=True)
class PythonRequest:
    """The Python a stage's image stands for: major and minor when the tag names them."""

    image: str
    major: int | None = None
    minor: int | None = None

    @property
    def wanted(self) -> str:
        if self.major is None:
            return "Python (any version)"
        return f"Python {self.major}" + (f".{self.minor}" if self.minor is not None else "")


@dataclass(frozen=True)
class PythonChoice:
    install: PythonInstall | None
    # Set when the stage does not get what its image asks for: said at the start of its log
    # and recorded with its result.
    note: str | None = None


def default_roots() -> tuple[Path, ...]:
    """Where Python installations usually live on a build host besides /usr."""
    home = Path.home()
    pyenv = Path(os.environ.get("PYENV_ROOT") or home / ".pyenv") / "versions"
    uv = Path(os.environ.get("UV_PYTHON_INSTALL_DIR") or home / ".local/share/uv/python")
    return (Path("/opt/python"), pyenv, uv)


def _candidates(roots: tuple[Path, ...]) -> list[tuple[Path, Path | None]]:
    found: list[tuple[Path, Path | None]] = []
    for bin_dir in SYSTEM_BIN_DIRS:
        if bin_dir.is_dir():
            found += [(p, None) for p in sorted(bin_dir.iterdir()) if _SYSTEM_EXE.fullmatch(p.name)]
    for root in roots:
        prefixes = [root] if (root / "bin" / "python3").exists() else []
        if not prefixes and root.is_dir():
            prefixes = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
        for prefix in prefixes:
            exe = prefix / "bin" / "python3"
            if exe.exists() and not (prefix / "pyvenv.cfg").exists():
                found.append((exe, prefix.resolve()))
    return found


def _probe(executable: Path) -> str | None:
    try:
        result = subprocess.run(
            [str(executable), "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=_PROBE_SECONDS,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version = result.stdout.strip()
    return version if result.returncode == 0 and re.fullmatch(r"3\.\d+\.\d+", version) else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@functools.lru_cache(maxsize=8)
def discover_pythons(roots: tuple[Path, ...] | None = None) -> tuple[PythonInstall, ...]:
    """One installation per minor version, oldest first: the host's own (/usr) where it has
    that version, else the newest patch release of the roots (`default_roots()` for None)."""
    chosen: dict[tuple[int, int], PythonInstall] = {}
    for executable, prefix in _candidates(default_roots() if roots is None else roots):
        version = _probe(executable)
        if version is None:
            continue
        install = PythonInstall(version, executable, prefix)
        held = chosen.get(install.minor)
        if held is None or (
            held.mount is not None
            and prefix is not None
            and _version_key(version) > _version_key(held.version)
        ):
            chosen[install.minor] = install
    return tuple(chosen[minor] for minor in sorted(chosen))


def install_mounts(installs: tuple[PythonInstall, ...]) -> tuple[Path, ...]:
    return tuple(i.mount for i in installs if i.mount is not None)


def requested_python(image: str | None) -> PythonRequest | None:
    """The Python an image stands for (python:3.12-slim, docker.io/library/python, cimg/python,
    a uv image tagged python3.12-...), or None for an image of something else."""
    if not image:
        return None
    reference = image.split("@", 1)[0].strip()
    repository, _, tag = reference.rsplit("/", 1)[-1].partition(":")
    tag = tag.lower()
    if repository.lower() == "python":
        match = _TAG_VERSION.match(tag)
    else:
        match = _TAG_PYTHON.search(tag)
        if match is None:
            return None
    if match is None:  # python, python:latest, python:slim, python:alpine
        return PythonRequest(image)
    minor = int(match.group(2)) if match.group(2) is not None else None
    return PythonRequest(image, int(match.group(1)), minor)


def choose_python(request: PythonRequest, installs: tuple[PythonInstall, ...]) -> PythonChoice:
    """The exact minor version when the host has it; else the nearest one (the newer of two
    equally near), with a note saying so. `installs` is oldest first."""
    if not installs:
        return PythonChoice(
            None,
            f"image {request.image} asks for {request.wanted}, but this build host has no "
            "Python that can make a virtualenv: the stage runs without one",
        )
    same_major = [i for i in installs if request.major is None or i.minor[0] == request.major]
    pool = same_major or list(installs)
    if request.minor is None:
        if same_major:
            return PythonChoice(pool[-1])
    else:
        exact = [i for i in pool if i.minor[1] == request.minor and same_major]
        if exact:
            return PythonChoice(exact[0])
    wanted_minor = request.minor if request.minor is not None and same_major else 10**6
    install = min(pool, key=lambda i: (abs(i.minor[1] - wanted_minor), -i.minor[1]))
    offered = ", ".join(f"{i.minor[0]}.{i.minor[1]}" for i in installs)
    return PythonChoice(
        install,
        f"image {request.image} asks for {request.wanted}, which this build host does not "
        f"have (it has {offered}): the stage runs with Python {install.version} instead",
    )
