"""/v1 routes of pipelines as documents: create and replace from Forgeline's pipeline format
(JSON, or YAML through the bounded loader), versions with their diffs, the published schema."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from api.audit import origin_of
from api.deps import PipelinesReader, PipelinesWriter, SessionDep, SettingsDep, TemporalDep
from api.pipelines.schemas import PipelineVersionOut, VersionDiffOut, VersionPage
from core.audit.service import write_audit
from core.pipelines import service, versions
from core.pipelines.document import (
    DocumentInvalid,
    PipelineDocument,
    canonical_yaml,
    json_schema,
    parse_yaml,
    validate_document,
)
from db.models.pipeline_versions import PipelineVersion
from forgeline.errors import ValidationFailed
from forgeline.safe_parsing import UnsafeDocument, load_json

router = APIRouter(tags=["pipelines"])

YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml")
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not found (or owned by another organization)"},
    409: {"description": "The pipeline changed since the version named in If-Match"},
    413: {"description": "The document is larger than the request limit"},
    422: {"description": "The document does not match the schema (each error with its path)"},
}
_DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "A pipeline document (schema: /v1/schemas/pipeline.json)",
                }
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def wants_yaml(accept: str | None) -> bool:
    return any(t in (accept or "").lower() for t in YAML_TYPES)


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    """The version an edit was made against: `"3"` (as an ETag), `W/"3"` or `3`; `*` is any."""
    if value is None or value.strip() == "*":
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit() or len(raw) > 9:
        raise ValidationFailed("If-Match must name a pipeline version (its ETag)", field="If-Match")
    return int(raw)


async def read_document(request: Request) -> PipelineDocument:
    """The body as a pipeline document: YAML by its Content-Type, JSON otherwise."""
    body = await request.body()
    content_type = request.headers.get("content-type", "application/json").lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("the document is not UTF-8 text") from None
    try:
        if any(t in content_type for t in YAML_TYPES):
            return parse_yaml(text)
        try:
            data = load_json(text)
        except UnsafeDocument as exc:
            raise DocumentInvalid([{"path": "/", "message": str(exc)}]) from None
        return validate_document(data)
    except DocumentInvalid as exc:
        raise ValidationFailed(
            "the document does not match the pipeline schema", errors=exc.errors
        ) from None


def document_response(document: PipelineDocument, version: int, *, code: int = 200) -> Response:
    return Response(
        content=canonical_yaml(document),
        status_code=code,
        media_type="application/yaml",
        headers={"ETag": etag(version)},
    )


@router.get("/schemas/pipeline.json", tags=["schemas"])
async def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema of Forgeline's pipeline format (for editors: `# yaml-language-server:
    $schema=<server>/v1/schemas/pipeline.json`)."""
    return json_schema()


@router.post(
    "/projects/{project_id}/pipelines",
    status_code=status.HTTP_201_CREATED,
    responses=_PROBLEMS,
    openapi_extra=_DOCUMENT_BODY,
    response_class=Response,
)
async def create_pipeline(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: PipelinesWriter,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    """A pipeline from a document (version 1); the answer is its canonical YAML."""
    document = await read_document(request)
    pipeline = await service.create_pipeline(
        session,
        temporal,
        principal,
        project_id,
        document,
        schedule_task_queue=settings.integrations_task_queue,
    )
    await write_audit(
        session, principal, origin_of(request), "pipeline.create", "pipeline", pipeline.id
    )
    response = document_response(document, pipeline.version, code=status.HTTP_201_CREATED)
    response.headers["Location"] = f"/v1/pipelines/{pipeline.id}"
    return response


@router.put(
    "/pipelines/{pipeline_id}",
    responses=_PROBLEMS,
    openapi_extra=_DOCUMENT_BODY,
    response_class=Response,
)
async def put_pipeline(
    pipeline_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: PipelinesWriter,
    temporal: TemporalDep,
    settings: SettingsDep,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Replace the definition: a new version unless nothing changed. With `If-Match` (the ETag
    of a GET), a pipeline changed since is a 409 and nothing is written."""
    expected = parse_if_match(if_match)
    document = await read_document(request)
    version = await service.put_document(
        session,
        temporal,
        principal,
        pipeline_id,
        document,
        expected_version=expected,
        schedule_task_queue=settings.integrations_task_queue,
    )
    await write_audit(
        session,
        principal,
        origin_of(request),
        "pipeline.update",
        "pipeline",
        pipeline_id,
        new={"version": version},
    )
    return document_response(document, version)


def version_out(row: PipelineVersion, *, with_spec: bool = False) -> PipelineVersionOut:
    out = PipelineVersionOut.model_validate(row)
    if not with_spec:
        out.spec = None
    return out


@router.get("/pipelines/{pipeline_id}/versions", responses=_PROBLEMS)
async def list_versions(
    pipeline_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> VersionPage:
    """Newest first; `before=<version>` pages on."""
    pipeline = await service.get_pipeline(session, principal, pipeline_id, include_archived=True)
    rows = await versions.list_versions(session, pipeline, before=before, limit=limit)
    items = [version_out(r) for r in rows[:limit]]
    more = len(rows) > limit
    return VersionPage(items=items, next_before=items[-1].version if more and items else None)


@router.get(
    "/pipelines/{pipeline_id}/versions/{version}",
    response_model=PipelineVersionOut,
    responses={**_PROBLEMS, 200: {"content": {"application/yaml": {}}}},
)
async def get_version(
    pipeline_id: uuid.UUID,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    principal: PipelinesReader,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """One version with its whole document (YAML with `Accept: application/yaml`)."""
    pipeline = await service.get_pipeline(session, principal, pipeline_id, include_archived=True)
    row = await versions.get_version(session, pipeline, version)
    if wants_yaml(accept):
        return document_response(versions.version_document(row), row.version)
    return version_out(row, with_spec=True)


@router.get("/pipelines/{pipeline_id}/diff", responses=_PROBLEMS)
async def diff_versions(
    pipeline_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    from_version: Annotated[int | None, Query(alias="from", ge=1, le=2**31 - 1)] = None,
    to_version: Annotated[int | None, Query(alias="to", ge=1, le=2**31 - 1)] = None,
) -> VersionDiffOut:
    """What changed from one version to another, as a unified diff of their YAML; `to`
    defaults to the current version, `from` to the one before `to` (the last change)."""
    pipeline = await service.get_pipeline(session, principal, pipeline_id, include_archived=True)
    to_version = to_version or pipeline.version
    from_version = from_version or max(1, to_version - 1)
    old = await versions.get_version(session, pipeline, from_version)
    new = await versions.get_version(session, pipeline, to_version)
    return VersionDiffOut(
        from_version=old.version,
        to_version=new.version,
        diff=versions.unified_diff(old, new, pipeline.name),
    )
