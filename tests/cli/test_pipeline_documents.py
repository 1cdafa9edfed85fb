"""`forgeline pipelines create|edit|export|versions|delete` on pipeline documents, against the
real API: $EDITOR and --file edits as new versions, a stale edit refused (and kept), schema
errors as one line, diffs, archive, another tenant's pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.agent.support import make_project
from tests.cli.conftest import invoke
from tests.factories import make_org
from tests.pipelines.support import CANONICAL

EDITOR = """\
import os, subprocess, sys
path = sys.argv[1]
text = open(path).read()
if os.environ.get("SNEAK_IN"):
    # Someone else saves a version while this editor is open.
    subprocess.run(
        [sys.executable, "-c", "from forgeline.cli import app; app()", "pipelines", "edit",
         os.environ["PIPELINE"], "--file", os.environ["SNEAK_IN"], "--api-url",
         os.environ["API_URL"]],
        check=True, capture_output=True,
    )
old, new = os.environ["EDIT_FROM"], os.environ["EDIT_TO"]
open(path, "w").write(text.replace(old, new))
"""


@pytest.fixture
def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    return script


async def test_edit_documents_and_versions(
    api_url, session_maker, tmp_path, editor, monkeypatch
) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    args = ("--api-url", api_url)
    doc = tmp_path / "pipeline.yml"
    doc.write_text(CANONICAL)

    code, out, err = await invoke(
        "pipelines",
        "create",
        str(project_id),
        "--file",
        str(doc),
        "--json",
        *args,
        key=org.api_key,
    )
    assert code == 0, err
    created = json.loads(out)
    pipeline = created["id"]
    assert created["name"] == "web" and created["version"] == 1

    code, out, err = await invoke(
        "pipelines", "export", pipeline, "--format", "forgeline", *args, key=org.api_key
    )
    assert code == 0 and out == CANONICAL, err

    # From a file.
    doc.write_text(CANONICAL.replace("timeout_seconds: 900", "timeout_seconds: 1200"))
    code, out, err = await invoke(
        "pipelines", "edit", pipeline, "--file", str(doc), *args, key=org.api_key
    )
    assert code == 0 and "version 2" in out, err

    # In $EDITOR.
    monkeypatch.setenv("EDIT_FROM", "npm test")
    monkeypatch.setenv("EDIT_TO", "npm run test:ci")
    code, out, err = await invoke("pipelines", "edit", pipeline, *args, key=org.api_key)
    assert code == 0 and "version 3" in out, err
    code, _, err = await invoke("pipelines", "edit", pipeline, *args, key=org.api_key)
    assert code == 0 and "No changes" in err  # the text is already there: nothing sent

    # A schema error: one line naming the path, the edit kept for another try.
    monkeypatch.setenv("EDIT_FROM", "retries: 2")
    monkeypatch.setenv("EDIT_TO", "retries: many")
    code, _, err = await invoke("pipelines", "edit", pipeline, *args, key=org.api_key)
    assert code == 1 and "HTTP 422" in err and "/stages/1/retries" in err
    kept = Path(err.split("Your edit is kept in ", 1)[1].split()[0])
    assert "retries: many" in kept.read_text()

    # Someone saves while the editor is open: this edit is refused, not written over theirs.
    other_doc = tmp_path / "other.yml"
    other_doc.write_text(CANONICAL.replace("name: web\n", "name: theirs\n"))
    monkeypatch.setenv("SNEAK_IN", str(other_doc))
    monkeypatch.setenv("PIPELINE", pipeline)
    monkeypatch.setenv("API_URL", api_url)
    monkeypatch.setenv("FORGELINE_API_KEY", org.api_key)
    monkeypatch.setenv("EDIT_FROM", "retries: 2")
    monkeypatch.setenv("EDIT_TO", "retries: 3")
    code, _, err = await invoke("pipelines", "edit", pipeline, *args, key=org.api_key)
    assert code == 1 and "HTTP 409" in err and err.count("Error:") == 1
    monkeypatch.delenv("SNEAK_IN")

    code, out, err = await invoke(
        "pipelines", "versions", pipeline, "-o", "json", *args, key=org.api_key
    )
    assert code == 0, err
    assert [(v["version"], v["change"]) for v in json.loads(out)] == [
        (4, "update"),
        (3, "update"),
        (2, "update"),
        (1, "create"),
    ]
    code, out, err = await invoke(
        "pipelines", "versions", pipeline, "--diff", "2", "3", *args, key=org.api_key
    )
    assert code == 0, err
    assert "-  - npm test\n+  - npm run test:ci\n" in out
    code, _, err = await invoke(
        "pipelines", "versions", pipeline, "--diff", "1", "99", *args, key=org.api_key
    )
    assert code == 1 and "HTTP 404" in err

    # Hostile input refused before any request: not UTF-8, too large.
    doc.write_bytes(b"name: \xff\n")
    code, _, err = await invoke(
        "pipelines", "edit", pipeline, "-f", str(doc), *args, key=org.api_key
    )
    assert code == 2 and "UTF-8" in err
    doc.write_text("# " + "x" * (2 * 1024 * 1024))
    code, _, err = await invoke(
        "pipelines", "edit", pipeline, "-f", str(doc), *args, key=org.api_key
    )
    assert code == 2 and "larger than" in err

    # Another organization sees none of it.
    stranger = await make_org(session_maker)
    for command in (("versions", pipeline), ("export", pipeline, "--format", "forgeline")):
        code, _, err = await invoke("pipelines", *command, *args, key=stranger.api_key)
        assert code == 1 and "HTTP 404" in err

    code, out, err = await invoke("pipelines", "delete", pipeline, "-y", *args, key=org.api_key)
    assert code == 0 and "archived" in out, err
    code, _, err = await invoke("pipelines", "show", pipeline, *args, key=org.api_key)
    assert code == 1 and "HTTP 404" in err
    code, out, err = await invoke(
        "pipelines", "versions", pipeline, "--json", *args, key=org.api_key
    )
    assert code == 0 and len(json.loads(out)) == 4, err
