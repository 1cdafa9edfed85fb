"""/v1 routes of pipelines: per-project list, detail with stages (or its YAML document), edit of
name, triggers, variables and status, archive, export (documents and versions: documents.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from api.audit import origin_of
from api.deps import PipelinesReader, PipelinesWriter, SessionDep, SettingsDep, TemporalDep
from api.pagination import CursorParam, LimitParam, Page, build_page
from api.pipelines import documents
from api.pipelines.schemas import PipelineDetail, PipelineOut, PipelineStageOut, PipelineUpdate
from core.audit.service import write_audit
from core.pipelines import service
from core.pipelines.stored import document_of
from db.models.pipelines import Pipeline, PipelineStage
from forgeline.pipeline_export import ExportFormat

router = APIRouter(tags=["pipelines"])

_PROBLEMS: dict[int | str, dict[str, str]] = {
    404: {"description": "Not found (or owned by another organization)"},
    409: {"description": "The pipeline has runs in progress (delete)"},
    422: {"description": "Validation failed"},
}
FILENAMES = {"github-actions": "forgeline.yml", "gitlab-ci": ".gitlab-ci.yml"}
# Documents, versions and the schema: one router for the app to include.
router.include_router(documents.router)


def _detail(pipeline: Pipeline, stages: list[PipelineStage]) -> PipelineDetail:
    columns = {c.key: getattr(pipeline, c.key) for c in Pipeline.__table__.columns}
    out = PipelineDetail.model_validate(columns)
    out.stages = [PipelineStageOut.model_validate(s) for s in stages]
    return out


@router.get("/projects/{project_id}/pipelines", responses=_PROBLEMS)
async def list_pipelines(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> Page[PipelineOut]:
    rows = await service.list_for_project(
        session, principal, project_id, cursor=cursor, limit=limit
    )
    return build_page(
        rows,
        limit=limit,
        to_item=PipelineOut.model_validate,
    )


@router.get(
    "/pipelines/{pipeline_id}",
    response_model=PipelineDetail,
    responses={**_PROBLEMS, 200: {"content": {"application/yaml": {}}}},
)
async def get_pipeline(
    pipeline_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    response: Response,
    accept: Annotated[str | None, Header()] = None,
    include_archived: bool = False,
) -> Any:
    """The pipeline with its stages, or (`Accept: application/yaml`) its definition in
    Forgeline's pipeline format; the ETag names its version (for `If-Match`)."""
    pipeline = await service.get_pipeline(
        session, principal, pipeline_id, include_archived=include_archived
    )
    stages = await service.stages_of(session, pipeline.id)
    if documents.wants_yaml(accept):
        return documents.document_response(document_of(pipeline, stages), pipeline.version)
    response.headers["ETag"] = documents.etag(pipeline.version)
    return _detail(pipeline, stages)


@router.patch("/pipelines/{pipeline_id}", responses=_PROBLEMS)
async def update_pipeline(
    pipeline_id: uuid.UUID,
    body: PipelineUpdate,
    session: SessionDep,
    principal: PipelinesWriter,
    temporal: TemporalDep,
    request: Request,
    settings: SettingsDep,
    if_match: Annotated[str | None, Header()] = None,
) -> PipelineDetail:
    """Replace the name, triggers (validated, stored normalized) or variables (each a new
    version) and/or the status; each `schedule` entry becomes a Temporal Schedule, paused while
    the pipeline is. With `If-Match`, a pipeline changed since is a 409."""
    pipeline = await service.update_pipeline(
        session,
        temporal,
        principal,
        pipeline_id,
        triggers=body.triggers,
        status=body.status,
        name=body.name,
        variables=body.variables,
        expected_version=documents.parse_if_match(if_match),
        schedule_task_queue=settings.integrations_task_queue,
    )
    await write_audit(
        session, principal, origin_of(request), "pipeline.update", "pipeline", pipeline.id
    )
    return _detail(pipeline, await service.stages_of(session, pipeline.id))


@router.delete(
    "/pipelines/{pipeline_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_PROBLEMS
)
async def delete_pipeline(
    pipeline_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesWriter,
    temporal: TemporalDep,
    request: Request,
) -> Response:
    """Archive the pipeline: gone from lists and reads (`include_archived=true` still reads
    it), no new runs; its runs and versions are kept."""
    await service.delete_pipeline(session, temporal, principal, pipeline_id)
    await write_audit(
        session, principal, origin_of(request), "pipeline.delete", "pipeline", pipeline_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/pipelines/{pipeline_id}/export",
    responses={**_PROBLEMS, 200: {"content": {"application/yaml": {}}}},
    response_class=Response,
)
async def export_pipeline(
    pipeline_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    export_format: Annotated[ExportFormat, Query(alias="format")] = "github-actions",
) -> Response:
    """The pipeline as GitHub Actions or GitLab CI YAML (validated when it was generated)."""
    text = await service.export(session, principal, pipeline_id, export_format)
    return Response(
        content=text,
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{FILENAMES[export_format]}"'},
    )
