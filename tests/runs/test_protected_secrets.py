"""A protected environment's secrets pass its approval gate first: a run that names it (or a
stage that deploys to it) gets its plain variables, never its secrets; an unprotected
environment's secrets still reach the stages."""

from __future__ import annotations

import uuid
from pathlib import Path

from activities.runs.run_variables import stage_variables
from db.models.pipelines import Pipeline
from db.models.projects import Environment
from db.session import session_scope
from forgeline import environment_variables as env_vars
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, pipeline_worker, stage, start
from tests.runs.sandbox import sandbox_runner
from tests.runs.test_run_variables import stage_logs

PROBE = [
    'echo "plain=$REGION"',
    'if [ -n "${DB_PASSWORD:-}" ]; then echo secret=present; else echo secret=absent; fi',
]


async def environment(session_maker, settings, project_id, *, protected: bool) -> uuid.UUID:
    async with session_scope(session_maker) as session:
        env = Environment(
            id=uuid.uuid4(),
            project_id=project_id,
            name=f"prod-{uuid.uuid4().hex[:6]}",
            env_type="production",
            provider="static",
            is_protected=protected,
            required_approvals=1 if protected else 0,
            config={
                "environment_variables": env_vars.seal(
                    [
                        {"name": "REGION", "value": "eu"},
                        {"name": "DB_PASSWORD", "value": "hunter2-prod", "secret": True},
                    ],
                    settings=settings,
                )
            },
        )
        session.add(env)
    return env.id


async def test_a_run_naming_a_protected_environment_gets_no_secret(
    session_maker, settings, temporal_client, task_queue, tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("probe", PROBE, 0)])
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        project_id = pipeline.project_id
    protected = await environment(session_maker, settings, project_id, protected=True)
    open_env = await environment(session_maker, settings, project_id, protected=False)
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        runs = {}
        for name, env_id in (("protected", protected), ("open", open_env)):
            run = await create_run(
                session_maker, settings, org.org_id, pipeline_id, environment_id=str(env_id)
            )
            assert (await (await start(temporal_client, run, task_queue)).result()).status == (
                "success"
            )
            runs[name] = run
    withheld = (await stage_logs(session_maker, runs["protected"].id))["probe"]
    assert "plain=eu" in withheld and "secret=absent" in withheld, withheld
    delivered = (await stage_logs(session_maker, runs["open"].id))["probe"]
    assert "plain=eu" in delivered and "secret=present" in delivered, delivered


def test_a_deploy_stage_of_a_protected_environment_gets_no_secret(settings) -> None:
    """Hostile: the secret is flagged on a variable whose name shadows a project variable."""
    env_id = str(uuid.uuid4())
    sealed = env_vars.seal(
        [
            {"name": "TOKEN", "value": "env-secret", "secret": True},
            {"name": "MODE", "value": "prod"},
        ],
        settings=settings,
    )
    project = env_vars.seal([{"name": "TOKEN", "value": "project"}], settings=settings)
    snapshot = {"project": project, "environments": {env_id: sealed}, "protected": [env_id]}
    resolved = stage_variables(settings, snapshot, env_id)
    assert resolved.env == {"TOKEN": "project", "MODE": "prod"}
    assert "env-secret" not in resolved.secrets
    snapshot["protected"] = []
    assert stage_variables(settings, snapshot, env_id).env["TOKEN"] == "env-secret"
