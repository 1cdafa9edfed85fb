"""Forgeline's own pipeline format: the document a user edits (API `PUT`, `.forgeline.yml`), its
JSON Schema, its one canonical YAML form, and its parsing from untrusted text with the path of
every error.

The canonical form is what `GET` returns and what versions store: fields in model order,
defaults left out, block style. A document already in that form survives PUT then GET byte for
byte.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from core.integrations.triggers import Triggers
from forgeline.pipeline_export import dump_yaml
from forgeline.safe_parsing import UnsafeDocument, load_yaml
from forgeline.stage_runtime import (
    CacheKeyDocument,
    MatrixDocument,
    ServiceDocument,
    runtime_errors,
)

SCHEMA_ID = "/v1/schemas/pipeline.json"
MAX_STAGES = 100
StageKind = Literal["install", "lint", "test", "build", "security_scan", "deploy", "custom"]
PipelineKind = Literal["build_only", "test_only", "deploy_only", "full_cicd"]
VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
VariableValue = Annotated[str, StringConstraints(max_length=32_768)]
RelativePath = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Command = Annotated[str, StringConstraints(min_length=1, max_length=65_536)]
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=500)]
ExitCode = Annotated[int, Field(ge=0, le=255)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StageConditions(_Strict):
    """When the stage runs: branch and changed-path globs, and how its dependencies ended."""

    branches: Annotated[list[Pattern], Field(max_length=100)] = Field(default_factory=list)
    paths: Annotated[list[Pattern], Field(max_length=100)] = Field(default_factory=list)
    previous_stage_status: Literal["success", "failure", "always"] = "success"
    # A deploy stage with an environment starts a deployment of it when its commands pass.
    deploy_environment_id: Annotated[str, StringConstraints(max_length=64)] | None = None


class StageDocument(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    type: StageKind = "custom"
    image: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    commands: Annotated[list[Command], Field(min_length=1, max_length=200)]
    working_directory: RelativePath = "."
    depends_on: Annotated[list[str], Field(max_length=100)] = Field(default_factory=list)
    timeout_seconds: Annotated[int, Field(ge=1, le=6 * 3600)] = 600
    retries: Annotated[int, Field(ge=0, le=10)] = 0
    retryable_exit_codes: Annotated[list[ExitCode], Field(max_length=50)] = Field(
        default_factory=list
    )
    allow_failure: bool = False
    # Off: the stage's sandbox has no network at all (installs and deploys need it).
    network: bool = True
    when: StageConditions = Field(default_factory=StageConditions)
    artifacts: Annotated[list[RelativePath], Field(max_length=100)] = Field(default_factory=list)
    cache: Annotated[list[RelativePath], Field(max_length=100)] = Field(default_factory=list)
    environment: Annotated[dict[VariableName, VariableValue], Field(max_length=200)] = Field(
        default_factory=dict
    )
    # Containers beside the stage (Docker runner), reachable by their names.
    services: Annotated[list[ServiceDocument], Field(max_length=20)] = Field(default_factory=list)
    # One leg per combination, each with its own log and status; `depends_on` waits for all.
    matrix: MatrixDocument | None = None
    # How the `cache` paths are keyed (default: the stage's name, no key files).
    cache_key: CacheKeyDocument | None = None


class PipelineDocument(_Strict):
    """A pipeline: stages run in order, in parallel where `depends_on` allows."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "$id": SCHEMA_ID,
            "$schema": "https://json-schema.org/draft/2020-12/schema",
        },
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    type: PipelineKind = "full_cicd"
    # The image of stages that name none.
    image: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    triggers: Triggers = Field(default_factory=Triggers)
    # Every stage sees these (a stage's own environment wins).
    variables: Annotated[dict[VariableName, VariableValue], Field(max_length=200)] = Field(
        default_factory=dict
    )
    stages: Annotated[list[StageDocument], Field(min_length=1, max_length=MAX_STAGES)]


class DocumentInvalid(ValueError):
    """The document does not parse or does not match the schema: one entry per error."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['path']}: {e['message']}" for e in errors[:5]))
        self.errors = errors


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of the format (draft 2020-12), generated from the model."""
    schema = PipelineDocument.model_json_schema(mode="validation")
    return {"$schema": schema.pop("$schema"), "$id": schema.pop("$id"), **schema}


def canonical_yaml(document: PipelineDocument) -> str:
    return dump_yaml(document.model_dump(mode="json", exclude_defaults=True))


def canonical_data(document: PipelineDocument) -> dict[str, Any]:
    data: dict[str, Any] = document.model_dump(mode="json", exclude_defaults=True)
    return data


def _path(loc: tuple[int | str, ...]) -> str:
    return "/" + "/".join(str(part) for part in loc) if loc else "/"


def graph_errors(document: PipelineDocument) -> list[dict[str, Any]]:
    """What the schema cannot say: unique names, known dependencies, no cycle, working
    directories and artifacts inside the repository (caches may live in the home directory)."""
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    names = {s.name for s in document.stages}
    for index, stage in enumerate(document.stages):
        at = f"/stages/{index}"
        if stage.name in seen:
            errors.append({"path": f"{at}/name", "message": f"duplicate stage name {stage.name!r}"})
        seen.add(stage.name)
        errors.extend(runtime_errors(at, stage.services, stage.matrix, stage.cache_key))
        for dep_index, dep in enumerate(stage.depends_on):
            if dep not in names:
                errors.append(
                    {
                        "path": f"{at}/depends_on/{dep_index}",
                        "message": f"unknown stage {dep!r}",
                    }
                )
        for field, paths in (
            ("working_directory", [stage.working_directory]),
            ("artifacts", stage.artifacts),
        ):
            if any(p.startswith("/") or ".." in p.split("/") or "\x00" in p for p in paths):
                errors.append(
                    {"path": f"{at}/{field}", "message": "must stay inside the repository"}
                )
    if not errors:
        try:
            TopologicalSorter({s.name: set(s.depends_on) for s in document.stages}).prepare()
        except CycleError as exc:
            errors.append(
                {"path": "/stages", "message": f"dependencies form a cycle: {exc.args[1]}"}
            )
    return errors


def validate_document(data: Any) -> PipelineDocument:
    """A parsed document (JSON or YAML data) as the model, or DocumentInvalid with paths."""
    if not isinstance(data, dict):
        raise DocumentInvalid([{"path": "/", "message": "the document must be a mapping"}])
    try:
        document = PipelineDocument.model_validate(data)
    except ValidationError as exc:
        raise DocumentInvalid(
            [
                {"path": _path(tuple(e["loc"])), "message": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None
    errors = graph_errors(document)
    if errors:
        raise DocumentInvalid(errors)
    return document


def parse_yaml(text: str) -> PipelineDocument:
    """Untrusted YAML through the bounded loader (no aliases, size and depth capped)."""
    try:
        data = load_yaml(text)
    except UnsafeDocument as exc:
        raise DocumentInvalid([{"path": "/", "message": str(exc)}]) from None
    return validate_document(data)


if __name__ == "__main__":  # `python -m core.pipelines.document > docs/pipeline.schema.json`
    import json
    import sys

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
