"""The sandbox's own guarantees: an environment built from scratch, a /tmp of each run's own that
a planted link cannot turn into a host path, a checkout left clean, artifacts read from the
workspace only, and the unisolated runner refused in production."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_workspace import run_state_dir
from tests.runs.helpers import Collected
from tests.runs.hostile import (
    MARKER,
    hostile,
)


async def test_environment_is_built_from_scratch(sandbox: SandboxRunner, tmp_path: Path) -> None:
    os.environ["FORGELINE_TEST_LEAK"] = MARKER
    try:
        out = Collected()
        await sandbox.run(
            hostile(sandbox, tmp_path, "env; echo PATH=$PATH", env={"MINE": "1"}), out
        )
    finally:
        del os.environ["FORGELINE_TEST_LEAK"]
    env = dict(line.split("=", 1) for line in out.text.splitlines() if "=" in line)
    assert MARKER not in out.text
    assert env["MINE"] == "1"
    assert env["HOME"] == "/home/build" and env["TMPDIR"] == "/tmp"
    assert ".venv" not in env["PATH"] and sys.prefix not in env["PATH"]
    assert not {k for k in env if "PROXY" in k.upper()}, "no proxy without network"


async def test_concurrent_runs_have_their_own_tmp(sandbox: SandboxRunner, tmp_path: Path) -> None:
    """Fixed paths such as /tmp/req.txt are per run, not shared by concurrent builds."""
    script = 'echo "$WHO" > /tmp/req.txt; sleep 1; cat /tmp/req.txt'
    outs = [Collected(), Collected()]
    await asyncio.gather(
        *(
            sandbox.run(hostile(sandbox, tmp_path, script, env={"WHO": f"run-{i}"}), outs[i])
            for i in range(2)
        )
    )
    assert [o.text.strip() for o in outs] == ["run-0", "run-1"]


def test_sandbox_refused_settings() -> None:
    """The unisolated runner is a development flag, refused in production."""
    from pydantic import ValidationError

    from forgeline.settings import Settings

    with pytest.raises(ValidationError, match="unsafe-local"):
        Settings(
            environment="production",
            container_runner="unsafe-local",
            encryption_keys="x" * 44,
            database_url="postgresql://a@localhost/b",
            temporal_address="localhost:7233",
        )


def test_an_artifact_swapped_for_a_symlink_after_collection_is_not_uploaded(
    tmp_path: Path,
) -> None:
    """A concurrent stage of the same run swaps a collected artifact for a link to a host file
    between collection and upload: the worker (root) reads nothing outside the workspace."""
    from core.runs import artifacts
    from infra.storage import LocalObjectStore

    secret = tmp_path / "host-secret"
    secret.write_text(MARKER)
    workspace = tmp_path / "ws"
    (workspace / "dist").mkdir(parents=True)
    (workspace / "dist" / "app.js").write_text("ok")
    (workspace / "dist" / "keep.txt").write_text("kept")
    files, refused = artifacts.collect(workspace, ["dist/**"])
    assert {f.name for f in files} == {"dist/app.js", "dist/keep.txt"} and not refused
    (workspace / "dist" / "app.js").unlink()
    (workspace / "dist" / "app.js").symlink_to(secret)
    store = LocalObjectStore(tmp_path / "objects")
    uploaded = artifacts.upload(store, "runs/r/artifacts/s/1", files)
    assert [a.name for a in uploaded] == ["dist/keep.txt"]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "objects").rglob("*") if p.is_file())
    assert MARKER.encode() not in stored


@pytest.mark.parametrize("planted", ["tmp", "home"])
async def test_a_link_planted_for_the_next_stage_does_not_mount_a_host_path(
    sandbox: SandboxRunner, tmp_path: Path, planted: str
) -> None:
    """The run's temporary directory (or home) beside the checkout is found a link to a host
    path; the next stage's /tmp and home are still directories of the run's, and the host path
    is untouched."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "secret").write_text(MARKER)
    first = hostile(sandbox, tmp_path, "echo first")
    await sandbox.run(first, Collected())
    link = run_state_dir(first.workspace) / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        import shutil as _shutil

        _shutil.rmtree(link) if link.is_dir() and not link.is_symlink() else link.unlink()
    link.symlink_to(host_dir)  # as the stage would have (outside its view of the path)
    out = Collected()
    second = StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-hostile-2",
        script="cat /tmp/secret ~/secret 2>&1; echo written > /tmp/dropped; ls /tmp ~",
        workspace=first.workspace,
        root=first.root,
        timeout_seconds=30,
    )
    result = await sandbox.run(second, out)
    assert result.exit_code == 0, out.text
    assert MARKER not in out.text
    assert sorted(p.name for p in host_dir.iterdir()) == ["secret"]
    assert (run_state_dir(first.workspace) / "tmp" / "dropped").is_file()


async def test_the_sandbox_directory_does_not_dirty_a_checkout(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """A pipeline checking for a clean tree sees none of the sandbox's home or /tmp, and a
    declared artifact glob does not pick them up."""
    process = hostile(sandbox, tmp_path, "echo cache > $HOME/c; echo t > /tmp/t; git status -s")
    root = process.workspace
    root.mkdir(parents=True)
    git = ["git", "-C", str(root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (root / "app.txt").write_text("app")
    subprocess.run([*git, "add", "app.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    out = Collected()
    result = await sandbox.run(process, out)
    assert result.exit_code == 0, out.text
    assert out.text == "", out.text
    from core.runs import artifacts

    files, _ = artifacts.collect(root, ["**"])
    names = [f.name for f in files]
    assert [n for n in names if not n.startswith(".git/")] == ["app.txt"], names
    assert sorted(p.name for p in root.iterdir()) == [".git", "app.txt"]
