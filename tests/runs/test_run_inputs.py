"""What a run hands its stages, end to end over both runners: secrets masked in the stored log,
a hostile branch name inert, project and environment variables in order, and no environment of
another project."""

from __future__ import annotations

import uuid

import pytest

from tests.runs.helpers import (
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    run_pipeline,
    stage,
    start,
)


async def test_secrets_masked_in_logs(ctx) -> None:
    secret = "multi-line-secret-AAAA\nsecond-line-BBBB"
    run, result = await run_pipeline(
        ctx,
        [
            stage(
                "leak",
                [
                    'echo "raw: $TOKEN"',
                    'printf %s "$TOKEN" | base64',
                    "echo \"b64: $(printf %s 'multi-line-secret-AAAA' | base64)\"",
                ],
            )
        ],
        variables=[{"name": "TOKEN", "value": secret, "secret": True}],
    )
    assert result.status == "success"
    rows = await executions(ctx["session_maker"], run.id)
    text = await log_text(ctx["session_maker"], rows[0].id)
    assert "multi-line-secret-AAAA" not in text and "second-line-BBBB" not in text
    assert "bXVsdGktbGluZS1zZWNyZXQtQUFBQQ" not in text
    assert "***" in text


async def test_branch_metacharacters_are_inert(ctx) -> None:
    branch = "feat/$(touch${IFS}pwned);echo${IFS}`id`|x&y"
    run, result = await run_pipeline(
        ctx,
        [stage("show", ['printf "%s\\n" "$FORGELINE_BRANCH"', "ls"], 0)],
        branch=branch,
    )
    assert result.status == "success"
    (row,) = await executions(ctx["session_maker"], run.id)
    text = await log_text(ctx["session_maker"], row.id)
    assert branch in text.splitlines()
    assert "pwned" not in text.splitlines()


@pytest.mark.parametrize("runner", ["sandbox"], indirect=True)
async def test_project_and_environment_variables(ctx) -> None:
    """Project and environment config variables reach the stage (run > environment > project);
    a secret reaches the command but never the stored log nor any workflow payload."""
    from db.models.pipelines import Pipeline
    from db.models.projects import Environment, Project
    from db.session import session_scope
    from forgeline import environment_variables as env_vars
    from workflows.runs_models import pipeline_run_workflow_id

    secret, env_secret = "proj-s3cr3t-7c1f9e", "env-s3cr3t-42ab88"
    sm = ctx["session_maker"]
    pipeline_id = await make_pipeline(
        sm,
        ctx["org"].org_id,
        [
            stage(
                "show",
                [
                    'echo "plain=$PLAIN level=$LEVEL who=$WHO"',
                    'test "$PSECRET" = "proj-s3cr3t-7c1f9e" && echo project-secret-ok',
                    'test "$ESECRET" = "env-s3cr3t-42ab88" && echo env-secret-ok',
                    'echo "leak: $PSECRET $ESECRET"',
                ],
            )
        ],
        image=ctx["image"],
    )
    async with session_scope(sm) as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        project = await session.get(Project, pipeline.project_id)
        assert project is not None
        project.config = {
            **(project.config or {}),
            "environment_variables": env_vars.seal(
                [
                    {"name": "PLAIN", "value": "from-project"},
                    {"name": "LEVEL", "value": "project"},
                    {"name": "WHO", "value": "project"},
                    {"name": "PSECRET", "value": secret, "secret": True},
                ],
                settings=ctx["settings"],
            ),
        }
        environment = Environment(
            id=uuid.uuid4(),
            project_id=project.id,
            name="staging",
            env_type="staging",
            provider="static",
            config={
                "environment_variables": env_vars.seal(
                    [
                        {"name": "LEVEL", "value": "environment"},
                        {"name": "WHO", "value": "environment"},
                        {"name": "ESECRET", "value": env_secret, "secret": True},
                    ],
                    settings=ctx["settings"],
                )
            },
        )
        session.add(environment)
    run = await create_run(
        sm,
        ctx["settings"],
        ctx["org"].org_id,
        pipeline_id,
        environment_id=str(environment.id),
        variables=[{"name": "WHO", "value": "run"}],
    )
    async with pipeline_worker(
        ctx["client"], ctx["task_queue"], ctx["settings"], sm, ctx["runner"]
    ):
        handle = await start(ctx["client"], run, ctx["task_queue"])
        result = await handle.result()
    assert result.status == "success"
    (row,) = await executions(sm, run.id)
    text = await log_text(sm, row.id)
    assert "plain=from-project level=environment who=run" in text
    assert "project-secret-ok" in text and "env-secret-ok" in text
    assert secret not in text and env_secret not in text
    assert "leak: ***" in text
    history = await (
        ctx["client"].get_workflow_handle(pipeline_run_workflow_id(str(run.id))).fetch_history()
    )
    dumped = history.to_json()
    assert secret not in dumped and env_secret not in dumped
    assert "proj-s3cr3t" not in dumped and "env-s3cr3t" not in dumped


async def test_environment_of_another_project_is_not_found(ctx) -> None:
    from forgeline.errors import NotFound

    pipeline_id = await make_pipeline(
        ctx["session_maker"], ctx["org"].org_id, [stage("a", "true")], image=ctx["image"]
    )
    with pytest.raises(NotFound):
        await create_run(
            ctx["session_maker"],
            ctx["settings"],
            ctx["org"].org_id,
            pipeline_id,
            environment_id=str(uuid.uuid4()),
        )
