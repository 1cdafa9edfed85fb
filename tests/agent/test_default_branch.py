"""Triggers follow the repository's real default branch as its checkout records it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from core.agent.git_checkout import default_branch
from core.agent.tools import AgentToolbox
from infra.storage import LocalObjectStore
from tests.agent.corpus import CORPUS, write_repo
from workflows.agent_models import AgentTaskInputData

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def _git(*args: str) -> None:
    subprocess.run([*GIT, *args], check=True, capture_output=True)


def _repo_on(tmp_path: Path, branch: str) -> Path:
    sample = next(s for s in CORPUS if s.name == "nextjs-npm")
    repo = write_repo(sample, tmp_path)
    _git("init", "-q", "-b", branch, str(repo))
    _git("-C", str(repo), "add", "-A")
    _git("-C", str(repo), "commit", "-q", "-m", "sample")
    return repo


def test_the_checked_out_branch_and_the_remote_head(tmp_path: Path) -> None:
    repo = _repo_on(tmp_path / "origin", "master")
    assert default_branch(repo) == "master"
    clone = tmp_path / "clone"
    _git("clone", "-q", str(repo), str(clone))
    _git("-C", str(clone), "checkout", "-q", "-b", "feature/x")
    # The clone is on a feature branch; the remote's HEAD still says master.
    assert default_branch(clone) == "master"
    assert default_branch(tmp_path / "nowhere") is None


def test_a_detached_or_hostile_head_names_no_branch(tmp_path: Path) -> None:
    repo = _repo_on(tmp_path, "trunk")
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    _git("-C", str(repo), "checkout", "-q", sha)
    assert default_branch(repo) is None
    head = repo / ".git" / "HEAD"
    for hostile in (
        "ref: refs/heads/$(id)",
        "ref: refs/heads/-rf",
        "ref: refs/heads/a..b",
        "x" * 9000,
    ):
        head.write_text(hostile)
        assert default_branch(repo) is None
    head.unlink()
    head.symlink_to("/etc/hostname")
    assert default_branch(repo) is None


def test_generated_triggers_use_the_checkout_default_branch(tmp_path: Path) -> None:
    repo = _repo_on(tmp_path, "master")
    toolbox = AgentToolbox(repo, LocalObjectStore(tmp_path / "objects"), "t", AgentTaskInputData())
    result = toolbox.run("propose_pipeline", {})
    assert result.ok
    proposal = json.loads((tmp_path / "objects").rglob("draft.json").__next__().read_text())
    assert proposal["triggers"]["on_push"]["branches"] == ["master"]
    deploy = next(s for s in proposal["stages"] if s["stage_type"] == "deploy")
    assert deploy["conditions"]["branch"] == ["master"]
