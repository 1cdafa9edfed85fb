"""Agent repository tools: capped reads, no escape from the checkout, drafts and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.tools import AgentToolbox, ToolInputError
from infra.storage import LocalObjectStore
from tests.agent.corpus import CORPUS, write_repo
from workflows.agent_models import AgentTaskInputData


@pytest.fixture
def toolbox(tmp_path: Path) -> AgentToolbox:
    repo = write_repo(next(s for s in CORPUS if s.name == "nextjs-npm"), tmp_path)
    (repo / "big.txt").write_text("x" * 100_000)
    (repo / "blob.bin").write_bytes(b"\x00\x01" * 100)
    (repo / "escape").symlink_to("/etc/passwd")
    store = LocalObjectStore(tmp_path / "objects")
    return AgentToolbox(repo, store, "task-1", AgentTaskInputData())


def test_read_file_is_capped_and_refuses_escapes(toolbox: AgentToolbox) -> None:
    big = toolbox.run("read_file", {"path": "big.txt"})
    assert big.ok and "truncated at 32 KB" in big.content
    assert not toolbox.run("read_file", {"path": "blob.bin"}).ok
    assert not toolbox.run("read_file", {"path": "missing.txt"}).ok
    for path in ("../../etc/passwd", "/etc/passwd", "escape"):
        with pytest.raises(ToolInputError):
            toolbox.run("read_file", {"path": path})
    with pytest.raises(ToolInputError):
        toolbox.run("read_file", {})
    with pytest.raises(ToolInputError):
        toolbox.run("rm_rf", {})


def test_list_detect_propose_validate(toolbox: AgentToolbox) -> None:
    listing = toolbox.run("list_files", {"pattern": "*.json"})
    assert listing.content.splitlines() == ["package-lock.json", "package.json"]
    assert toolbox.run("detect_framework", {}).data["framework"] == "nextjs"
    with pytest.raises(ToolInputError):
        toolbox.run("validate_pipeline", {})  # nothing proposed yet
    assert toolbox.run("propose_pipeline", {"preferences": {"include_tests": False}}).ok
    assert toolbox.run("validate_pipeline", {}).valid is True
    validated = toolbox.validated()
    assert validated is not None
    assert "test" not in [s.stage_type for s in validated[0].stages]


def test_model_written_pipeline_is_checked(toolbox: AgentToolbox) -> None:
    with pytest.raises(ToolInputError, match="invalid pipeline"):
        toolbox.run("propose_pipeline", {"pipeline": {"name": "x", "stages": []}})
    bad = {
        "name": "x",
        "stages": [
            {"name": "build", "stage_type": "build", "commands": ["make"], "depends_on": ["nope"]}
        ],
    }
    assert toolbox.run("propose_pipeline", {"pipeline": bad}).ok
    report = toolbox.run("validate_pipeline", {})
    assert report.valid is False and "nope" in report.content
    assert toolbox.validated() is None
