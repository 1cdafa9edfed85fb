"""Which Python a sandboxed stage gets: the image read as a Python version, the host's
installations found (never a virtualenv), the nearest version when the exact one is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from infra.runners.python_toolchain import (
    PythonInstall,
    PythonRequest,
    choose_python,
    discover_pythons,
    requested_python,
)

HOST = (
    PythonInstall("3.10.13", Path("/opt/python/3.10.13/bin/python3"), Path("/opt/python/3.10.13")),
    PythonInstall("3.11.2", Path("/usr/bin/python3.11")),
    PythonInstall("3.12.1", Path("/opt/python/3.12.1/bin/python3"), Path("/opt/python/3.12.1")),
)


@pytest.mark.parametrize(
    ("image", "major", "minor"),
    [
        ("python:3.12", 3, 12),
        ("python:3.11-slim-bookworm", 3, 11),
        ("docker.io/library/python:3.10.4-alpine", 3, 10),
        ("registry.local:5000/python:3.9@sha256:abc", 3, 9),
        ("cimg/python:3.12.1", 3, 12),
        ("python:3", 3, None),
        ("python", None, None),
        ("python:latest", None, None),
        ("ghcr.io/astral-sh/uv:python3.12-bookworm-slim", 3, 12),
        # Only ever read, never run: what follows the version is no command.
        ("python:3.11 $(touch pwned); `id`", 3, 11),
    ],
)
def test_python_images_are_read_as_versions(
    image: str, major: int | None, minor: int | None
) -> None:
    assert requested_python(image) == PythonRequest(image, major, minor)


@pytest.mark.parametrize(
    "image", [None, "", "node:20", "golang:1.22", "debian:bookworm", "pythonic/tool:3.12", "uv:0.4"]
)
def test_other_images_are_not_python(image: str | None) -> None:
    assert requested_python(image) is None


@pytest.mark.parametrize(
    ("image", "version", "noted"),
    [
        ("python:3.11", "3.11.2", False),
        ("python:3.12-slim", "3.12.1", False),
        ("python:3", "3.12.1", False),
        ("python", "3.12.1", False),
        ("python:3.13", "3.12.1", True),
        ("python:3.8", "3.10.13", True),
        ("python:2.7", "3.12.1", True),
    ],
)
def test_the_exact_version_else_the_nearest_with_a_note(
    image: str, version: str, noted: bool
) -> None:
    request = requested_python(image)
    assert request is not None
    choice = choose_python(request, HOST)
    assert choice.install is not None and choice.install.version == version
    if noted:
        assert choice.note is not None
        assert f"runs with Python {version} instead" in choice.note
        assert "it has 3.10, 3.11, 3.12" in choice.note
    else:
        assert choice.note is None


def test_a_host_without_python_says_so() -> None:
    choice = choose_python(PythonRequest("python:3.12", 3, 12), ())
    assert choice.install is None
    assert choice.note is not None and "no Python that can make a virtualenv" in choice.note


def test_discovery_finds_the_hosts_python_and_refuses_virtualenvs(tmp_path: Path) -> None:
    """The worker's own virtualenv, offered as a root, is never taken; a prefix whose python
    cannot make virtualenvs (here: not Python at all) is left out; /usr's own is found."""
    broken = tmp_path / "roots" / "3.99.0" / "bin"
    broken.mkdir(parents=True)
    (broken / "python3").write_text("#!/bin/sh\nexit 1\n")
    (broken / "python3").chmod(0o755)
    venv_root = Path(sys.prefix)
    assert (venv_root / "pyvenv.cfg").exists(), "the tests run in a virtualenv"
    installs = discover_pythons((venv_root, venv_root.parent, tmp_path / "roots"))
    executables = [str(i.executable) for i in installs]
    assert not any(e.startswith(str(venv_root)) for e in executables)
    assert not any(e.startswith(str(tmp_path)) for e in executables)
    assert any(e.startswith("/usr/") for e in executables), executables
    minors = [i.minor for i in installs]
    assert minors == sorted(set(minors))  # one per minor version, oldest first
