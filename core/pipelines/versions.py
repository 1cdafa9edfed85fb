"""Pipeline versions: a change is written as the next immutable version and applied to the
pipeline's rows in one transaction, under the pipeline's row lock, so concurrent edits get
consecutive numbers and a crash leaves either both or neither."""

from __future__ import annotations

import contextlib
import difflib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.pipelines import repository
from core.pipelines.document import PipelineDocument, canonical_data, canonical_yaml
from core.pipelines.stored import document_of, write_document
from db.models.accounts import ApiKey
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import Pipeline
from forgeline.errors import Conflict, NotFound, ValidationFailed


@dataclass(frozen=True)
class Author:
    """Who made a change: a user, an API key (its creator counts as the user), an agent task."""

    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    agent_task_id: uuid.UUID | None = None


class StaleVersion(Conflict):
    """The change was made against a version that is no longer the current one."""


async def lock(
    session: AsyncSession, organization_id: uuid.UUID | None, pipeline_id: uuid.UUID
) -> Pipeline:
    """The live (not archived) pipeline, locked for the rest of the transaction."""
    stmt = select(Pipeline).where(Pipeline.id == pipeline_id, Pipeline.archived_at.is_(None))
    if organization_id is not None:
        stmt = stmt.where(Pipeline.organization_id == organization_id)
    pipeline = await session.scalar(
        stmt.with_for_update().execution_options(populate_existing=True)
    )
    if pipeline is None:
        raise NotFound("pipeline not found", resource_type="pipeline")
    return pipeline


async def _author_user(session: AsyncSession, author: Author) -> uuid.UUID | None:
    if author.user_id is not None or author.api_key_id is None:
        return author.user_id
    creator: uuid.UUID | None = await session.scalar(
        select(ApiKey.created_by_user_id).where(ApiKey.id == author.api_key_id)
    )
    return creator


def _row(
    pipeline: Pipeline,
    version: int,
    change: str,
    author: Author,
    user: uuid.UUID | None,
    document: PipelineDocument,
) -> PipelineVersion:
    return PipelineVersion(
        id=uuid.uuid4(),
        pipeline_id=pipeline.id,
        organization_id=pipeline.organization_id,
        version=version,
        change=change,
        author_user_id=user,
        author_api_key_id=author.api_key_id,
        agent_task_id=author.agent_task_id,
        spec=canonical_data(document),
    )


async def record_initial(
    session: AsyncSession, pipeline: Pipeline, author: Author, change: str = "create"
) -> PipelineVersion:
    """The version row of a pipeline as it stands (a new pipeline, or one from before versions:
    its history then starts at its current number)."""
    document = document_of(pipeline, await repository.stages_of(session, pipeline.id))
    row = _row(
        pipeline, pipeline.version, change, author, await _author_user(session, author), document
    )
    session.add(row)
    await session.flush()
    return row


async def commit_change(
    session: AsyncSession,
    pipeline: Pipeline,
    document: PipelineDocument,
    *,
    change: str,
    author: Author,
    expected_version: int | None = None,
) -> PipelineVersion:
    """Write `document` as the next version of the locked `pipeline` and apply it to its rows.
    `expected_version`: the version the change was made against (If-Match); another one is a
    409 and nothing is written."""
    if expected_version is not None and expected_version != pipeline.version:
        raise StaleVersion(
            f"the pipeline is at version {pipeline.version}, not {expected_version}",
            current_version=pipeline.version,
        )
    stages = await repository.stages_of(session, pipeline.id)
    has_current = await session.scalar(
        select(func.count()).where(
            PipelineVersion.pipeline_id == pipeline.id,
            PipelineVersion.version == pipeline.version,
        )
    )
    if not has_current:
        # A pipeline from before versions: its current state becomes its first recorded one
        # (unless the format cannot hold it; its history then starts with this change).
        with contextlib.suppress(ValidationFailed):
            current = document_of(pipeline, stages)
            session.add(_row(pipeline, pipeline.version, "create", Author(), None, current))
    row = _row(
        pipeline,
        pipeline.version + 1,
        change,
        author,
        await _author_user(session, author),
        document,
    )
    session.add(row)
    await session.flush()
    await write_document(session, pipeline, stages, document)
    pipeline.version = row.version
    await session.flush()
    return row


def _unrecorded(pipeline: Pipeline, document: PipelineDocument) -> PipelineVersion:
    """The current version of a pipeline from before versions were recorded (not stored: the
    next change records it)."""
    row = _row(pipeline, pipeline.version, "create", Author(), None, document)
    row.created_at = pipeline.updated_at
    return row


async def list_versions(
    session: AsyncSession, pipeline: Pipeline, *, before: int | None, limit: int
) -> Sequence[PipelineVersion]:
    """Newest first; `before` pages on (limit + 1 rows tell whether there is more)."""
    stmt = select(PipelineVersion).where(PipelineVersion.pipeline_id == pipeline.id)
    if before is not None:
        stmt = stmt.where(PipelineVersion.version < before)
    rows = await session.scalars(stmt.order_by(PipelineVersion.version.desc()).limit(limit + 1))
    found = rows.all()
    if not found and before is None:
        current = document_of(pipeline, await repository.stages_of(session, pipeline.id))
        return [_unrecorded(pipeline, current)]
    return found


async def get_version(session: AsyncSession, pipeline: Pipeline, version: int) -> PipelineVersion:
    row = await session.scalar(
        select(PipelineVersion).where(
            PipelineVersion.pipeline_id == pipeline.id, PipelineVersion.version == version
        )
    )
    if row is None and version == pipeline.version:
        current = document_of(pipeline, await repository.stages_of(session, pipeline.id))
        return _unrecorded(pipeline, current)
    if row is None:
        raise NotFound(f"version {version} not found", resource_type="pipeline_version")
    return row


def version_document(row: PipelineVersion) -> PipelineDocument:
    # JSONB keeps no key order: the model puts the fields back in theirs.
    return PipelineDocument.model_validate(row.spec, strict=False)


def version_yaml(row: PipelineVersion) -> str:
    return canonical_yaml(version_document(row))


def unified_diff(old: PipelineVersion, new: PipelineVersion, name: str = "pipeline") -> str:
    """The change from `old` to `new` as a unified diff of their canonical YAML."""
    return "".join(
        difflib.unified_diff(
            version_yaml(old).splitlines(keepends=True),
            version_yaml(new).splitlines(keepends=True),
            fromfile=f"{name}@v{old.version}",
            tofile=f"{name}@v{new.version}",
        )
    )
