"""A clone reaches only the transport its URL was checked for: real git against local hostile
remotes and submodules (ext::, file://, ssh when the URL is https)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from forgeline.url_safety import CloneTarget, UnsafeRepositoryUrl, resolve_for_clone
from infra.git import ASKPASS_SCRIPT, clone_config, clone_environment, clone_repository

PUBLIC = "140.82.112.3"
IDENTITY = ["-c", "user.email=t@example.com", "-c", "user.name=t"]


async def _public(host: str, port: int) -> Sequence[str]:
    if host != "git.example.com":
        raise UnsafeRepositoryUrl(f"host {host!r} does not resolve")
    return [PUBLIC]


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def plain_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "plain"
    repo.mkdir()
    _git("init", "-q", "-b", "main", str(repo))
    (repo / "README").write_text("inner\n")
    _git("-C", str(repo), "add", "README")
    _git("-C", str(repo), "commit", "-q", "-m", "inner")
    return repo


def _repo_with_submodules(root: Path, marker: Path, inner: Path) -> Path:
    """A repository whose submodules point at a command (ext::) and a local path (file://)."""
    outer = root / "outer"
    outer.mkdir()
    _git("init", "-q", "-b", "main", str(outer))
    sha = _git("-C", str(inner), "rev-parse", "HEAD")
    (outer / ".gitmodules").write_text(
        '[submodule "cmd"]\n'
        "\tpath = cmd\n"
        f"\turl = ext::sh -c touch% {marker}\n"
        '[submodule "local"]\n'
        "\tpath = local\n"
        f"\turl = file://{inner}\n"
    )
    _git("-C", str(outer), "add", ".gitmodules")
    for path in ("cmd", "local"):
        _git("-C", str(outer), "update-index", "--add", "--cacheinfo", f"160000,{sha},{path}")
    _git("-C", str(outer), "commit", "-q", "-m", "submodules")
    return outer


def _env(target: CloneTarget, tmp_path: Path, marker: Path) -> dict[str, str]:
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(ASKPASS_SCRIPT)
    askpass.chmod(0o700)
    env = clone_environment(target, home=tmp_path, askpass=askpass)
    # Were ssh ever started, this command would leave the marker instead of connecting anywhere.
    ssh = tmp_path / "fake-ssh"
    ssh.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    ssh.chmod(0o700)
    env["GIT_SSH_COMMAND"] = str(ssh)
    return env


async def _https_target() -> CloneTarget:
    return await resolve_for_clone(
        "https://git.example.com/team/app.git", allow_local=False, resolver=_public
    )


async def test_one_decision_for_each_kind(plain_repo: Path) -> None:
    https = await _https_target()
    assert https.env["GIT_ALLOW_PROTOCOL"] == "https"
    assert "protocol.https.allow=always" in https.git_config
    assert not any("ssh" in item or "file" in item for item in https.git_config)
    ssh = await resolve_for_clone(
        "git@git.example.com:team/app.git", allow_local=False, resolver=_public
    )
    assert ssh.env["GIT_ALLOW_PROTOCOL"] == "ssh"
    local = await resolve_for_clone(str(plain_repo), allow_local=True)
    assert local.env["GIT_ALLOW_PROTOCOL"] == "file"
    for target in (https, ssh, local):
        env = clone_environment(target, home=Path("/nonexistent"), askpass=Path("/bin/false"))
        # git.py adds nothing of its own to the protocol decision.
        assert env["GIT_ALLOW_PROTOCOL"] == target.env["GIT_ALLOW_PROTOCOL"]
        assert "protocol.allow=never" in clone_config(target)


@pytest.mark.parametrize(
    "remote",
    [
        "ext::sh -c touch% {marker}",
        "file://{plain}",
        "{plain}",
        "ssh://127.0.0.1/srv/app.git",
        "git@127.0.0.1:srv/app.git",
    ],
)
async def test_https_clone_environment_refuses_other_transports(
    remote: str, plain_repo: Path, tmp_path: Path
) -> None:
    """The environment an https clone runs in cannot be talked into another transport."""
    marker = tmp_path / "ran"
    target = await _https_target()
    env = _env(target, tmp_path, marker)
    url = remote.format(marker=marker, plain=plain_repo)
    dest = tmp_path / "dest"
    done = subprocess.run(
        ["git", *clone_config(target), "clone", "-q", "--", url, str(dest)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "not allowed" in done.stderr
    assert not marker.exists()
    assert not (dest / "README").exists()


async def test_submodules_never_reach_ext_or_file(plain_repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    outer = _repo_with_submodules(tmp_path, marker, plain_repo)
    cloned = await clone_repository(str(outer), tmp_path / "checkout", allow_local=True)
    # The clone itself never recurses into submodules.
    assert not marker.exists()
    assert not any((cloned.path / "cmd").iterdir())
    assert not any((cloned.path / "local").iterdir())
    # Even an explicit submodule update under an https clone's rules reaches neither.
    target = await _https_target()
    env = _env(target, tmp_path, marker)
    update = ["-C", str(cloned.path), "submodule", "update", "--init", "--"]
    for name in ("cmd", "local"):
        done = subprocess.run(
            ["git", *clone_config(target), *update, name],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0, done.stdout
        assert "not allowed" in done.stderr
    assert not marker.exists()
    assert not (cloned.path / "local" / "README").exists()


async def test_local_clone_environment_still_refuses_ext(plain_repo: Path, tmp_path: Path) -> None:
    """Local repositories (an operator switch) allow file:// and nothing else."""
    marker = tmp_path / "ran"
    target = await resolve_for_clone(str(plain_repo), allow_local=True)
    env = _env(target, tmp_path, marker)
    for url in (f"ext::sh -c touch% {marker}", "ssh://127.0.0.1/srv/app.git"):
        done = subprocess.run(
            ["git", *clone_config(target), "clone", "-q", "--", url, str(tmp_path / "d")],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0 and "not allowed" in done.stderr
    assert not marker.exists()
