"""Pipeline as code: a commit's `.forgeline.yml` is what its run executes (validated first); an
invalid, hostile or unreadable file fails the run clearly, with the schema error in the run's
error and in the log of its first stage; the run records the source it executed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import update

from core.runs.service import rerun
from db.models.projects import Project
from db.session import session_scope
from forgeline.statuses.runs import RunStatus
from tests.factories import make_org
from tests.integrations.support import commit, connect_project, make_git_repo
from tests.runs.helpers import (
    by_stage,
    create_run,
    executions,
    log_text,
    pipeline_worker,
    run_row,
    start,
)
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(240)

VALID = """\
name: from-the-repository
variables:
  GREETING: hello
stages:
- name: build
  commands:
  - echo "file says $GREETING from $(pwd)"
- name: check
  commands:
  - test "$GREETING" = hello
  depends_on:
  - build
  environment:
    EXTRA: '1'
"""


async def _run(session_maker, settings, temporal_client, task_queue, org, connected, sha, tmp):
    pipeline_id = connected.pipeline_ids[0]
    run = await create_run(session_maker, settings, org.org_id, pipeline_id, commit_sha=sha)
    async with pipeline_worker(
        temporal_client,
        task_queue,
        settings,
        session_maker,
        sandbox_runner(Path(tempfile.mkdtemp(prefix="fl-"))),
    ):
        handle = await start(temporal_client, run, task_queue)
        await handle.result()
    return await run_row(session_maker, run.id), by_stage(await executions(session_maker, run.id))


@pytest.fixture
async def project(session_maker, settings, tmp_path):
    org = await make_org(session_maker)
    repo, first = make_git_repo(tmp_path)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url=str(repo),
        pipelines=[{"manual": True}],
        stages=[{"name": "stored", "run": "echo from the stored pipeline"}],
    )
    return org, repo, first, connected


async def test_the_commits_file_is_what_runs(
    project, session_maker, settings, temporal_client, task_queue, tmp_path
):
    org, repo, first, connected = project
    # No file in the commit: the stored pipeline runs.
    row, stages = await _run(
        session_maker, settings, temporal_client, task_queue, org, connected, first, tmp_path
    )
    assert row.status == RunStatus.SUCCESS and row.pipeline_source == "stored"
    assert list(stages) == ["stored"] and row.pipeline_version == 1

    # A root directory in the project's settings is where stages that name none work.
    (repo / "web").mkdir()
    sha = commit(repo, {".forgeline.yml": VALID, "web/index.html": "hi\n"}, "pipeline as code")
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Project)
            .where(Project.id == connected.project_id)
            .values(config={"root_directory": "web"})
        )
    row, stages = await _run(
        session_maker, settings, temporal_client, task_queue, org, connected, sha, tmp_path
    )
    assert row.status == RunStatus.SUCCESS, row.error
    assert row.pipeline_source == "repository" and row.commit_sha == sha
    assert sorted(stages) == ["build", "check"]
    [build] = stages["build"]
    assert build.stage_id is None
    log = await log_text(session_maker, build.id)
    assert "file says hello from " in log and log.rstrip().endswith("/web")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (VALID.replace("  - echo", "  - 42\n  - echo"), "/stages/0/commands/0"),
        (VALID.replace("  - build\n  environment", "  - deploy\n  environment"), "unknown stage"),
        (VALID + "when: always\n", "/when: Extra inputs are not permitted"),
        ('a: &a ["x","x"]\nb: [*a, *a]\n', "anchors and aliases"),
        ("name: x\nstages: " + "[" * 200 + "]" * 200 + "\n", "nests deeper"),
        ("# " + "x" * (5 * 1024 * 1024) + "\n", "larger than"),
        (b"name: \xff\n", "not UTF-8"),
        ("symlink", "not a regular file"),
    ],
    ids=["wrong-type", "unknown-dep", "extra-field", "alias", "deep", "5mb", "utf8", "symlink"],
)
async def test_an_invalid_file_fails_the_run_clearly(
    project, session_maker, settings, temporal_client, task_queue, tmp_path, content, needle
):
    org, repo, _, connected = project
    target = repo / ".forgeline.yml"
    if content == "symlink":
        # Pointing at a file of the worker's: never read.
        os.symlink("/etc/passwd", target)
        sha = commit(repo, {}, "a symlink")
    elif isinstance(content, bytes):
        target.write_bytes(content)
        sha = commit(repo, {}, "binary")
    else:
        sha = commit(repo, {".forgeline.yml": content}, "broken pipeline")
    row, stages = await _run(
        session_maker, settings, temporal_client, task_queue, org, connected, sha, tmp_path
    )
    assert row.status == RunStatus.FAILED
    assert row.error is not None
    assert row.error.startswith("PipelineFileInvalid: .forgeline.yml is not a valid pipeline: ")
    assert needle in row.error
    assert row.pipeline_source == "repository"
    assert list(stages) == ["pipeline-file"]
    [first] = stages["pipeline-file"]
    assert first.status == "failed" and first.failure_class == "config"
    log = await log_text(session_maker, first.id)
    assert needle in log and "/v1/schemas/pipeline.json" in log
    assert "root:" not in log  # nothing of /etc/passwd


async def test_rerun_from_failed_reuses_the_files_passed_stages(
    project, session_maker, settings, temporal_client, task_queue, tmp_path
):
    org, repo, _, connected = project
    failing = VALID.replace('test "$GREETING" = hello', "exit 3")
    sha = commit(repo, {".forgeline.yml": failing}, "a failing check")
    first, stages = await _run(
        session_maker, settings, temporal_client, task_queue, org, connected, sha, tmp_path
    )
    assert first.status == RunStatus.FAILED and stages["build"][0].status == "success"
    async with session_scope(session_maker) as session:
        again = await rerun(
            session, settings, organization_id=org.org_id, run_id=first.id, from_failed=True
        )
    async with pipeline_worker(
        temporal_client,
        task_queue,
        settings,
        session_maker,
        sandbox_runner(Path(tempfile.mkdtemp(prefix="fl-"))),
    ):
        await (await start(temporal_client, again, task_queue)).result()
    second = by_stage(await executions(session_maker, again.id))
    assert (await run_row(session_maker, again.id)).pipeline_source == "repository"
    assert second["build"][0].reused_from_id == stages["build"][0].id
    assert second["check"][0].reused_from_id is None and second["check"][0].exit_code == 3
