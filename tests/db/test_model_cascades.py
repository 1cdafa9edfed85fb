"""What deleting a row does to the rows below it: an organization's delete cascades through its
tree; set-null keeps history when a person or a run goes."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    ApiKey,
    Deployment,
    Environment,
    Organization,
    PipelineRun,
    Project,
    StageExecution,
    StageLogChunk,
    User,
)
from tests.db.support import (
    add_rows,
    new_org,
    new_pipeline_run,
    new_project,
    new_user,
    suffix,
)


async def test_organization_delete_cascades_through_the_tree(db_session: AsyncSession) -> None:
    org = await new_org(db_session)
    project = await new_project(db_session, org)
    env = Environment(project_id=project.id, name="prod", env_type="production", provider="docker")
    await add_rows(db_session, env)
    _, run = await new_pipeline_run(db_session, project)
    execution = StageExecution(run_id=run.id, stage_name="build")
    await add_rows(db_session, execution)
    await add_rows(
        db_session,
        StageLogChunk(
            stage_execution_id=execution.id, seq=0, first_line=0, line_count=1, content="ok\n"
        ),
    )
    await db_session.execute(delete(Organization).where(Organization.id == org.id))
    for model, column, value in [
        (Project, Project.id, project.id),
        (Environment, Environment.id, env.id),
        (PipelineRun, PipelineRun.id, run.id),
        (StageLogChunk, StageLogChunk.stage_execution_id, execution.id),
    ]:
        count = await db_session.scalar(
            select(func.count()).select_from(model).where(column == value)
        )
        assert count == 0, model.__tablename__


async def test_set_null_keeps_history(db_session: AsyncSession) -> None:
    org = await new_org(db_session)
    user = await new_user(db_session)
    key = ApiKey(
        organization_id=org.id,
        created_by_user_id=user.id,
        name="k",
        key_prefix=f"fl_{suffix()}",
        key_hash=uuid.uuid4().hex * 2,
    )
    await add_rows(db_session, key)
    project = await new_project(db_session, org)
    env = Environment(project_id=project.id, name="prod", env_type="production", provider="docker")
    await add_rows(db_session, env)
    _, run = await new_pipeline_run(db_session, project)
    deployment = Deployment(
        environment_id=env.id,
        project_id=project.id,
        organization_id=org.id,
        pipeline_run_id=run.id,
        version="abc123",
        provider="docker",
    )
    await add_rows(db_session, deployment)

    await db_session.execute(delete(PipelineRun).where(PipelineRun.id == run.id))
    await db_session.execute(delete(User).where(User.id == user.id))
    assert (
        await db_session.scalar(
            select(Deployment.pipeline_run_id).where(Deployment.id == deployment.id)
        )
        is None
    )
    assert (
        await db_session.scalar(select(ApiKey.created_by_user_id).where(ApiKey.id == key.id))
        is None
    )
