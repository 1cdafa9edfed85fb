"""Which stages a run's graph shows: those of the pipeline version the run was created under, or,
for a run that executed its commit's `.forgeline.yml`, the stages it ran (the file is not kept,
so no needs are drawn); the current definition when the version is not recorded."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from api.console.graph import StageShape
from core.pipelines import repository as pipelines
from core.pipelines import versions
from db.models.pipelines import PipelineRun
from forgeline.errors import NotFound


async def run_stage_shapes(
    session: AsyncSession, run: PipelineRun, executed: Sequence[str]
) -> list[StageShape]:
    shapes: list[StageShape] = []
    if run.pipeline_source != "repository" and run.organization_id is not None:
        shapes = await _defined(session, run)
    known = {s.name for s in shapes}
    if run.pipeline_source == "repository":
        # Side by side: what ran, without guessing at the order the file gave it.
        return [StageShape(name, 0, ()) for name in executed]
    shapes = with_matrix_legs(shapes, executed)
    known = {s.name for s in shapes}
    last = max((s.position for s in shapes), default=0)
    extra = [n for n in executed if n not in known]
    return shapes + [StageShape(n, last + 1 + i) for i, n in enumerate(extra)]


def with_matrix_legs(shapes: list[StageShape], executed: Sequence[str]) -> list[StageShape]:
    """A matrix stage's node becomes one node per leg that ran (`test (3.11, ubuntu)`), with the
    stage's needs; a stage that needs it needs every leg (as the run plan has it)."""
    legs_of = {
        s.name: [n for n in executed if n.startswith(f"{s.name} (") and n.endswith(")")]
        for s in shapes
    }
    legs_of = {name: legs for name, legs in legs_of.items() if legs}
    if not legs_of:
        return shapes
    out: list[StageShape] = []
    for shape in shapes:
        needs = [leg for dep in shape.depends_on for leg in legs_of.get(dep, [dep])]
        for name in legs_of.get(shape.name, [shape.name]):
            out.append(StageShape(name, shape.position, needs))
    return out


async def _defined(session: AsyncSession, run: PipelineRun) -> list[StageShape]:
    assert run.organization_id is not None
    pipeline = await pipelines.get(
        session, run.organization_id, run.pipeline_id, include_archived=True
    )
    if pipeline is None:
        return []
    if run.pipeline_version is not None:
        try:
            row = await versions.get_version(session, pipeline, run.pipeline_version)
        except NotFound:
            row = None
        if row is not None:
            document = versions.version_document(row)
            return [
                StageShape(stage.name, index, list(stage.depends_on))
                for index, stage in enumerate(document.stages)
            ]
    stages = await pipelines.stages_of(session, pipeline.id)
    return [StageShape(s.name, s.position, list(s.depends_on or [])) for s in stages]
