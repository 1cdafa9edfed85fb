"""A stage row's runtime (services, matrix, cache key) in the run plan: its cache and services
on the spec, and a matrix stage fanned out into one spec per leg, with the stages that depend on
it waiting for every leg."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from forgeline.stage_runtime import (
    CacheKeyDocument,
    MatrixDocument,
    ServiceDocument,
    expand_matrix,
    leg_name,
)
from workflows.runs_models import StageSpec
from workflows.stage_runtime_models import MatrixLeg, ServiceSpec, StageCache

_PLACEHOLDER = re.compile(r"\$\{\{\s*matrix\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\$\{([A-Za-z_]\w*)\}")


def stage_cache(stage: Mapping[str, Any]) -> StageCache | None:
    paths = [str(p) for p in stage.get("cache_paths") or []]
    if not paths or not stage.get("pipeline_id"):
        return None  # entries belong to one pipeline: none without its ID
    raw = (stage.get("runtime") or {}).get("cache_key")
    key = CacheKeyDocument()
    if isinstance(raw, dict):
        with contextlib.suppress(ValidationError):
            key = CacheKeyDocument.model_validate(raw, strict=False)
    prefix = key.prefix if raw else f"{stage.get('name', 'stage')}"
    return StageCache(
        paths=paths,
        scope=str(stage["pipeline_id"]),
        prefix=prefix,
        key_files=list(key.files),
        restore_keys=list(key.restore_keys),
    )


def stage_services(stage: Mapping[str, Any]) -> list[ServiceSpec]:
    out: list[ServiceSpec] = []
    for raw in (stage.get("runtime") or {}).get("services") or []:
        try:
            service = ServiceDocument.model_validate(raw, strict=False)
        except ValidationError:
            continue  # validated when stored; a row edited by hand loses the bad entry only
        out.append(ServiceSpec.model_validate(service.model_dump()))
    return out


def stage_matrix(stage: Mapping[str, Any]) -> MatrixDocument | None:
    raw = (stage.get("runtime") or {}).get("matrix")
    if not isinstance(raw, dict):
        return None
    try:
        return MatrixDocument.model_validate(raw, strict=False)
    except ValidationError:
        return None


def _substitute(text: str | None, values: dict[str, str]) -> str | None:
    if text is None:
        return None
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def fan_out(spec: StageSpec, matrix: MatrixDocument, hasher: Any) -> list[StageSpec]:
    """One spec per leg: the leg's values as variables (and `${NAME}` in the image)."""
    legs: list[StageSpec] = []
    for values in expand_matrix(matrix):
        leg = spec.model_copy(
            deep=True,
            update={
                "name": leg_name(spec.name, values),
                "image": _substitute(spec.image, values),
                "environment": {**spec.environment, **values},
                "matrix_leg": MatrixLeg(stage=spec.name, values=values, fail_fast=matrix.fail_fast),
            },
        )
        leg.spec_hash = hasher(leg)
        legs.append(leg)
    return legs


def expand_legs(
    specs: list[StageSpec], matrices: dict[str, MatrixDocument], hasher: Any
) -> list[StageSpec]:
    """Matrix stages replaced by their legs; `depends_on` on a matrix stage names every leg."""
    if not matrices:
        return specs
    legs_of: dict[str, list[str]] = {}
    out: list[StageSpec] = []
    for spec in specs:
        matrix = matrices.get(spec.name)
        if matrix is None:
            out.append(spec)
            continue
        legs = fan_out(spec, matrix, hasher)
        legs_of[spec.name] = [leg.name for leg in legs]
        out.extend(legs)
    for spec in out:
        if any(dep in legs_of for dep in spec.depends_on):
            spec.depends_on = [n for dep in spec.depends_on for n in legs_of.get(dep, [dep])]
            spec.spec_hash = hasher(spec)
    return out
