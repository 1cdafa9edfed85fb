"""What a stage needs around its commands: service containers beside it, a build matrix that
fans it out into legs, and a dependency cache keyed like actions/cache.

Part of the pipeline document (core/pipelines/document.py: `StageDocument.services`, `.matrix`,
`.cache_key`), stored in the `pipeline_stages.runtime` column; the run plan turns a matrix into
one leg per combination.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# A matrix may expand to at most this many legs (GitHub Actions allows 256 per job).
MAX_MATRIX_LEGS = 256
MAX_SERVICES = 10
MAX_LEG_NAME = 100
# The product of the axes (before `exclude`) may be at most this many times the leg limit.
PRODUCT_FACTOR = 16

ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
AxisName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")]
AxisValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._+-]{1,60}$")]
CachePath = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
CacheKeyPrefix = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._${}/-]{1,200}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ServiceDocument(_Strict):
    """A container started beside the stage, reachable by `name` on the run's own network."""

    name: ServiceName
    image: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    environment: Annotated[
        dict[AxisName, Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=50)
    ] = Field(default_factory=dict)
    # Run inside the service until it exits 0 (else the image's own HEALTHCHECK, else started).
    health_command: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
    health_timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 60


class MatrixDocument(_Strict):
    """GitHub Actions semantics: the product of `axes`, minus every combination an `exclude`
    entry matches (all its keys equal), plus each `include` entry (merged into the combinations
    it matches on the axes it names, else added as a leg of its own)."""

    axes: Annotated[
        dict[AxisName, Annotated[list[AxisValue], Field(min_length=1, max_length=256)]],
        Field(min_length=1, max_length=8),
    ]
    include: Annotated[list[dict[AxisName, AxisValue]], Field(max_length=256)] = Field(
        default_factory=list
    )
    exclude: Annotated[list[dict[AxisName, AxisValue]], Field(max_length=256)] = Field(
        default_factory=list
    )
    # One leg failing cancels the legs still running (the stage fails either way).
    fail_fast: bool = True


class CacheKeyDocument(_Strict):
    """`key`: a prefix plus the hash of `files` (lockfiles); `restore_keys`: prefixes tried in
    order when the exact key misses (the newest entry under a prefix wins)."""

    prefix: CacheKeyPrefix = "deps"
    files: Annotated[list[CachePath], Field(max_length=50)] = Field(default_factory=list)
    restore_keys: Annotated[list[CacheKeyPrefix], Field(max_length=10)] = Field(
        default_factory=list
    )


class MatrixTooLarge(ValueError):
    pass


def _matches(combination: dict[str, str], entry: dict[str, str]) -> bool:
    return all(combination.get(k) == v for k, v in entry.items())


def expand_matrix(matrix: MatrixDocument, limit: int = MAX_MATRIX_LEGS) -> list[dict[str, str]]:
    """The legs, in axis order; MatrixTooLarge past `limit` (checked before building them)."""
    product = 1
    for values in matrix.axes.values():
        product *= len(values)
    if product > limit * PRODUCT_FACTOR:  # never built: excludes may trim it, but only so far
        raise MatrixTooLarge(f"the matrix has {product} combinations (at most {limit})")
    names = list(matrix.axes)
    legs = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(matrix.axes[n] for n in names))
    ]
    legs = [leg for leg in legs if not any(_matches(leg, e) for e in matrix.exclude)]
    for entry in matrix.include:
        on_axes = {k: v for k, v in entry.items() if k in matrix.axes}
        extra = {k: v for k, v in entry.items() if k not in matrix.axes}
        hits = [leg for leg in legs if _matches(leg, on_axes)] if on_axes else []
        if hits and extra and all(_matches(leg, on_axes) for leg in hits):
            for leg in hits:
                leg.update(extra)
        elif not any(leg == entry for leg in legs):
            legs.append(dict(entry))
    if len(legs) > limit:
        raise MatrixTooLarge(f"the matrix has {len(legs)} combinations (at most {limit})")
    return legs


def leg_name(stage: str, leg: dict[str, str]) -> str:
    """A leg's stage-execution name: `test (3.11, ubuntu)`, unique per combination; a long one
    ends in a hash of the combination instead (names are at most 100 characters)."""
    name = f"{stage} ({', '.join(leg.values())})"
    if len(name) <= MAX_LEG_NAME:
        return name
    digest = hashlib.sha256(json.dumps(leg, sort_keys=True).encode()).hexdigest()[:12]
    return f"{name[: MAX_LEG_NAME - 16]}.. {digest})"


def runtime_errors(
    at: str,
    services: list[ServiceDocument],
    matrix: MatrixDocument | None,
    cache_key: CacheKeyDocument | None,
) -> list[dict[str, Any]]:
    """What the schema cannot say about a stage's runtime: unique service names, a matrix within
    bounds, cache key files inside the repository."""
    errors: list[dict[str, Any]] = []
    names = [s.name for s in services]
    if len(names) != len(set(names)):
        errors.append({"path": f"{at}/services", "message": "duplicate service name"})
    if len(services) > MAX_SERVICES:
        errors.append({"path": f"{at}/services", "message": f"at most {MAX_SERVICES} services"})
    if matrix is not None:
        try:
            expand_matrix(matrix)
        except MatrixTooLarge as exc:
            errors.append({"path": f"{at}/matrix", "message": str(exc)})
    if cache_key is not None and any(
        p.startswith("/") or ".." in p.split("/") or "\x00" in p for p in cache_key.files
    ):
        errors.append(
            {"path": f"{at}/cache_key/files", "message": "must stay inside the repository"}
        )
    return errors


def proposal_runtime(
    services: list[str],
    matrix: dict[str, list[str]],
    cache_key_files: list[str],
    env: dict[str, str],
) -> dict[str, Any]:
    """A generated stage's services (by image), matrix and cache key files as the `runtime` of
    its stored row: catalogued services get their name, health check and prefixed variables."""
    from forgeline.service_containers import service_env, service_of

    out: dict[str, Any] = {}
    documents: list[dict[str, Any]] = []
    for image in services:
        known = service_of(image)
        name = known.repository if known else image.rsplit("/", 1)[-1].split(":", 1)[0]
        if any(d["name"] == name for d in documents):
            continue
        document: dict[str, Any] = {"name": name, "image": image}
        if known is not None:
            document["health_command"] = known.health_command
            if variables := service_env(known, env):
                document["environment"] = variables
        documents.append(document)
    if documents:
        out["services"] = documents
    if matrix:
        # The exports' strategy: every leg runs to its end.
        out["matrix"] = {"axes": {k: list(v) for k, v in matrix.items()}, "fail_fast": False}
    if cache_key_files:
        out["cache_key"] = {"prefix": "deps", "files": list(cache_key_files)}
    return out


def export_runtime(runtime: dict[str, Any]) -> dict[str, Any]:
    """A stored `runtime` as the exportable stage's `services` (images) and `matrix` (axes;
    left out when the export's narrower form cannot hold it)."""
    out: dict[str, Any] = {}
    images = [s.get("image") for s in runtime.get("services") or [] if isinstance(s, dict)]
    if images := [str(i) for i in images if i]:
        out["services"] = images
    axes = (runtime.get("matrix") or {}).get("axes")
    if isinstance(axes, dict) and axes:
        out["matrix"] = {str(k): [str(v) for v in vs] for k, vs in axes.items()}
    return out
