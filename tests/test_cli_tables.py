"""CLI tables keep IDs and slugs whole on a narrow terminal (users copy them)."""

from __future__ import annotations

import io
import uuid

import pytest
from rich.console import Console

import forgeline.cli.common as cli


def test_ids_are_not_truncated_in_an_80_column_table(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80, color_system=None))
    task_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    row = {
        "id": task_id,
        "project_id": project_id,
        "task_type": "generate_pipeline",
        "status": "completed",
        "tokens_used": 0,
        "error": "a long error message that may be shortened by the table layout",
    }
    cli.emit(row, list(row), as_json=False, title="Agent task")
    slug_row = {"id": task_id, "slug": "demo-site-with-a-long-slug", "name": "Demo", "status": "x"}
    cli.emit(slug_row, list(slug_row), as_json=False)
    text = out.getvalue()
    assert task_id in text
    assert project_id in text
    assert "demo-site-with-a-long-slug" in text
