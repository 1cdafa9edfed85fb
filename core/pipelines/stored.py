"""A stored pipeline (its `pipelines` row and `pipeline_stages`) as a pipeline document, and a
document written onto those rows. Stages keep their row (and ID) across edits by name, so the
executions of earlier runs stay linked to the stage they ran."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from core.pipelines.document import PipelineDocument, StageDocument
from db.models.pipelines import Pipeline, PipelineStage
from forgeline.errors import ValidationFailed
from forgeline.pipeline_spec import step_name

# `config` keys the document owns; everything else in `config` (framework, limits, resources)
# is the generator's or the operator's and survives an edit.
DOCUMENT_CONFIG_KEYS = ("variables", "default_image")
# Document fields kept together in the `runtime` column.
RUNTIME_KEYS = ("services", "matrix", "cache_key")


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _conditions(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if branches := _strings(raw.get("branches") or raw.get("branch")):
        out["branches"] = branches
    if paths := _strings(raw.get("paths") or raw.get("files_changed")):
        out["paths"] = paths
    if raw.get("previous_stage_status") in ("failure", "always"):
        out["previous_stage_status"] = raw["previous_stage_status"]
    if raw.get("deploy_environment_id"):
        out["deploy_environment_id"] = str(raw["deploy_environment_id"])
    return out


def _commands(raw: list[Any]) -> list[str]:
    runs = (step.get("run") if isinstance(step, dict) else step for step in raw or [])
    return [str(run) for run in runs if run]


def stage_document(row: PipelineStage) -> dict[str, Any]:
    return {
        "name": row.name,
        "type": row.stage_type,
        "image": row.image,
        "commands": _commands(row.commands) or ["true"],
        "working_directory": row.working_directory or ".",
        "depends_on": list(row.depends_on or []),
        "timeout_seconds": min(row.timeout_seconds, 6 * 3600),
        "retries": min(row.retry_count, 10),
        "retryable_exit_codes": list(row.retryable_exit_codes or []),
        "allow_failure": bool(row.allow_failure),
        "network": bool(row.network_enabled),
        "when": _conditions(row.conditions or {}),
        "artifacts": list(row.artifact_paths or []),
        "cache": list(row.cache_paths or []),
        "environment": {str(k): str(v) for k, v in (row.environment or {}).items()},
        **{k: v for k, v in (row.runtime or {}).items() if k in RUNTIME_KEYS},
    }


def document_of(pipeline: Pipeline, stages: list[PipelineStage]) -> PipelineDocument:
    """The stored pipeline in the document format (a pipeline stored before the format with a
    value it cannot hold is a 422 naming the value)."""
    config = pipeline.config or {}
    data = {
        "name": pipeline.name,
        "description": pipeline.description,
        "type": pipeline.pipeline_type,
        "image": config.get("default_image") or None,
        "triggers": pipeline.triggers or {},
        "variables": {str(k): str(v) for k, v in (config.get("variables") or {}).items()},
        "stages": [stage_document(s) for s in stages],
    }
    try:
        return PipelineDocument.model_validate(data, strict=False)
    except ValidationError as exc:
        raise ValidationFailed(
            "the stored pipeline cannot be expressed as a pipeline document",
            errors=[
                {"path": "/" + "/".join(map(str, e["loc"])), "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None


def _conditions_column(stage: StageDocument) -> dict[str, Any]:
    when = stage.when.model_dump(mode="json", exclude_defaults=True)
    return dict(when)


def stage_columns(stage: StageDocument, position: int) -> dict[str, Any]:
    return {
        "position": position,
        "stage_type": stage.type,
        "image": stage.image,
        "commands": [{"name": step_name(c, 80), "run": c} for c in stage.commands],
        "conditions": _conditions_column(stage),
        "timeout_seconds": stage.timeout_seconds,
        "depends_on": list(stage.depends_on),
        "retry_count": stage.retries,
        "retryable_exit_codes": list(stage.retryable_exit_codes),
        "allow_failure": stage.allow_failure,
        "artifact_paths": list(stage.artifacts),
        "cache_paths": list(stage.cache),
        "network_enabled": stage.network,
        "working_directory": None if stage.working_directory == "." else stage.working_directory,
        "environment": dict(stage.environment),
        "runtime": stage.model_dump(mode="json", include=set(RUNTIME_KEYS), exclude_defaults=True),
    }


def document_config(config: dict[str, Any] | None, document: PipelineDocument) -> dict[str, Any]:
    """A pipeline's `config` with the document's variables and default image in place."""
    out = {k: v for k, v in (config or {}).items() if k not in DOCUMENT_CONFIG_KEYS}
    if document.variables:
        out["variables"] = dict(document.variables)
    if document.image:
        out["default_image"] = document.image
    return out


async def write_document(
    session: AsyncSession,
    pipeline: Pipeline,
    stages: list[PipelineStage],
    document: PipelineDocument,
) -> None:
    """Make the rows say what the document says (in the caller's transaction)."""
    pipeline.name = document.name
    pipeline.description = document.description
    pipeline.pipeline_type = document.type
    pipeline.triggers = document.triggers.normalized()
    pipeline.config = document_config(pipeline.config, document)
    # Exports stored at generation describe the old definition: rebuilt from the rows now.
    pipeline.github_actions_yaml = None
    pipeline.gitlab_ci_yaml = None
    by_name = {s.name: s for s in stages}
    wanted = {s.name for s in document.stages}
    gone = [s.id for s in stages if s.name not in wanted]
    if gone:
        await session.execute(delete(PipelineStage).where(PipelineStage.id.in_(gone)))
    for position, stage in enumerate(document.stages):
        columns = stage_columns(stage, position)
        row = by_name.get(stage.name)
        if row is None:
            session.add(
                PipelineStage(id=uuid.uuid4(), pipeline_id=pipeline.id, name=stage.name, **columns)
            )
        else:
            for key, value in columns.items():
                setattr(row, key, value)
    await session.flush()
