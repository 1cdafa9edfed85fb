"""`forgeline pipelines ...` and `forgeline billing invoices|plan|usage` against the real API."""

from __future__ import annotations

import json
import uuid

from db.models.pipelines import Pipeline
from db.models.projects import Project
from tests.cli.conftest import invoke
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, stage


async def test_pipelines_list_show_export_edit_delete(
    api_url, session_maker, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("build", "make"), stage("test", "make test", 1, depends_on=["build"])],
    )
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        project = await session.get(Project, pipeline.project_id)
    args = ("--api-url", api_url)

    code, out, err = await invoke(
        "pipelines", "list", project.slug, "-o", "json", *args, key=org.api_key
    )
    assert code == 0, err
    assert [p["id"] for p in json.loads(out)] == [str(pipeline_id)]

    code, out, err = await invoke("pipelines", "show", str(pipeline_id), *args, key=org.api_key)
    assert code == 0, err
    assert "build" in out and "test" in out
    code, out, err = await invoke(
        "pipelines", "show", str(pipeline_id), "--json", *args, key=org.api_key
    )
    assert [s["name"] for s in json.loads(out)["stages"]] == ["build", "test"]

    for fmt, marker in (("github-actions", "jobs:"), ("gitlab-ci", "stages:")):
        code, out, err = await invoke(
            "pipelines", "export", str(pipeline_id), "--format", fmt, *args, key=org.api_key
        )
        assert code == 0, err
        assert marker in out and "make test" in out
    code, _, err = await invoke(
        "pipelines", "export", str(pipeline_id), "--format", "jenkins", *args, key=org.api_key
    )
    assert code == 2

    code, out, err = await invoke(
        "pipelines",
        "edit",
        str(pipeline_id),
        "--status",
        "paused",
        "--json",
        *args,
        key=org.api_key,
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "paused"

    # Hostile edits: not JSON (refused before any request), unknown trigger keys (the API's 422).
    bad = tmp_path / "triggers.json"
    bad.write_text("{not json")
    code, _, err = await invoke(
        "pipelines", "edit", str(pipeline_id), "--triggers-file", str(bad), *args, key=org.api_key
    )
    assert code == 2 and "not JSON" in err
    bad.write_text(json.dumps({"push": {"branches": ["main"]}, "rm -rf": 1}))
    code, _, err = await invoke(
        "pipelines", "edit", str(pipeline_id), "--triggers-file", str(bad), *args, key=org.api_key
    )
    assert code == 1 and err.startswith("Error: HTTP 422") and err.count("\n") == 1
    # No option: the document opens in $EDITOR; a script without one is told what to do.
    code, _, err = await invoke("pipelines", "edit", str(pipeline_id), *args, key=org.api_key)
    assert code == 2 and "no editor" in err

    # Another organization cannot see or delete it.
    other = await make_org(session_maker)
    code, _, err = await invoke(
        "pipelines", "delete", str(pipeline_id), "--yes", *args, key=other.api_key
    )
    assert code == 1 and "HTTP 404" in err
    code, _, _ = await invoke(
        "pipelines", "delete", str(pipeline_id), *args, key=org.api_key, stdin="n\n"
    )
    assert code == 1  # not confirmed: aborted, nothing deleted
    code, out, err = await invoke(
        "pipelines", "delete", str(pipeline_id), "-y", *args, key=org.api_key
    )
    assert code == 0 and "archived" in out, err
    code, _, err = await invoke("pipelines", "show", str(pipeline_id), *args, key=org.api_key)
    assert code == 1 and "HTTP 404" in err


async def test_billing_invoices_plan_usage(api_url, session_maker) -> None:
    org = await make_org(session_maker)
    args = ("--api-url", api_url)
    code, out, err = await invoke("billing", "invoices", "--output", "json", *args, key=org.api_key)
    assert code == 0, err
    assert json.loads(out) == []
    code, out, err = await invoke("billing", "invoices", *args, key=org.api_key)
    assert code == 0 and "Invoices" in out
    code, _, err = await invoke("billing", "invoices", str(uuid.uuid4()), *args, key=org.api_key)
    assert code == 1 and "HTTP 404" in err
    code, _, err = await invoke("billing", "invoices", "INV-1'; --", *args, key=org.api_key)
    assert code == 2 and "is not an ID" in err
    code, out, err = await invoke("billing", "plan", *args, key=org.api_key)
    assert code == 0 and "free" in out.lower()
    code, out, err = await invoke("billing", "usage", "-o", "json", *args, key=org.api_key)
    assert code == 0 and "by_type" in json.loads(out)
