"""The stage graph of a pipeline or a run, laid out on the server for an inline SVG: stages are
nodes in columns by dependency depth, edges join a stage to the stages it needs.

The dependency rule is the run scheduler's (`workflows.stage_scheduler.stage_dependencies`):
explicit `depends_on` wins, otherwise a stage needs every stage at an earlier position. Only
direct edges are drawn (a transitive reduction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from workflows.stage_scheduler import stage_dependencies

NODE_W = 168
NODE_H = 52
GAP_X = 48
GAP_Y = 16
PAD = 8


@dataclass(frozen=True)
class StageShape:
    """What the graph needs of a stage definition."""

    name: str
    position: int
    depends_on: Sequence[str] = ()


@dataclass(frozen=True)
class Node:
    name: str
    x: int
    y: int
    status: str
    duration: str
    anchor: str


@dataclass(frozen=True)
class Edge:
    path: str
    source: str
    target: str


@dataclass(frozen=True)
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0


def _reachable(deps: Mapping[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps.get(start, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(deps.get(name, ()))
    return seen


def _direct(deps: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Drop an edge a -> c when c is also reached through another dependency of a."""
    direct: dict[str, set[str]] = {}
    for name, needs in deps.items():
        through = set().union(*(_reachable(deps, d) for d in needs)) if needs else set()
        direct[name] = {d for d in needs if d not in through}
    return direct


def _depths(order: Sequence[str], deps: Mapping[str, set[str]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(name: str, trail: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        if name in trail:  # a cycle in stored data: break it rather than recurse forever
            return 0
        parents = deps.get(name, set())
        value = 1 + max((visit(p, trail | {name}) for p in parents), default=-1)
        depth[name] = value
        return value

    for name in order:
        visit(name, frozenset())
    return depth


def duration_text(duration_ms: int | None) -> str:
    if duration_ms is None:
        return ""
    seconds = duration_ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


def layout(
    stages: Sequence[StageShape],
    status: Mapping[str, str] | None = None,
    durations: Mapping[str, int | None] | None = None,
) -> Graph:
    """Columns by depth, rows in position order within a column; edges as cubic curves."""
    if not stages:
        return Graph()
    status = status or {}
    durations = durations or {}
    ordered = sorted(stages, key=lambda s: (s.position, s.name))
    deps = _direct(stage_dependencies(ordered))
    depth = _depths([s.name for s in ordered], deps)
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    nodes: list[Node] = []
    for index, stage in enumerate(ordered):
        column = depth[stage.name]
        row = rows.get(column, 0)
        rows[column] = row + 1
        x = PAD + column * (NODE_W + GAP_X)
        y = PAD + row * (NODE_H + GAP_Y)
        place[stage.name] = (x, y)
        nodes.append(
            Node(
                name=stage.name,
                x=x,
                y=y,
                status=status.get(stage.name, "not_started"),
                duration=duration_text(durations.get(stage.name)),
                anchor=f"stage-{index}",
            )
        )
    edges: list[Edge] = []
    for stage in ordered:
        tx, ty = place[stage.name]
        for need in sorted(deps[stage.name]):
            sx, sy = place[need]
            x1, y1 = sx + NODE_W, sy + NODE_H // 2
            x2, y2 = tx, ty + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append(
                Edge(f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}", source=need, target=stage.name)
            )
    columns = max(depth.values()) + 1
    height_rows = max(rows.values())
    return Graph(
        nodes=nodes,
        edges=edges,
        width=2 * PAD + columns * NODE_W + (columns - 1) * GAP_X,
        height=2 * PAD + height_rows * NODE_H + (height_rows - 1) * GAP_Y,
    )
