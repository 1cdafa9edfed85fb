"""The stage graph's layout: columns by dependency depth, direct edges only, hostile stored
dependencies (cycles, unknown or self references) drawn without hanging."""

from __future__ import annotations

from api.console.graph import StageShape, duration_text, layout
from api.console.run_stages import with_matrix_legs


def _edges(stages: list[StageShape]) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in layout(stages).edges}


def test_explicit_needs_win_and_implicit_order_follows_positions() -> None:
    stages = [
        StageShape("build", 0),
        StageShape("lint", 1, ["build"]),
        StageShape("test", 1, ["build"]),
        StageShape("deploy", 2),  # no needs: every earlier stage
    ]
    graph = layout(stages, {"build": "success"}, {"build": 61_500})
    assert _edges(stages) == {
        ("build", "lint"), ("build", "test"), ("lint", "deploy"), ("test", "deploy")
    }  # fmt: skip  # build -> deploy is implied through lint and test
    columns = {n.name: n.x for n in graph.nodes}
    assert columns["build"] < columns["lint"] == columns["test"] < columns["deploy"]
    build = next(n for n in graph.nodes if n.name == "build")
    assert build.status == "success" and build.duration == "1 min 1 s"
    assert next(n for n in graph.nodes if n.name == "deploy").status == "not_started"
    assert graph.width > 0 and graph.height > 0


def test_cycles_unknown_and_self_references_are_drawn_without_hanging() -> None:
    stages = [
        StageShape("a", 0, ["b"]),
        StageShape("b", 1, ["a", "b", "ghost"]),
        StageShape("<script>", 2, ["a"]),
    ]
    graph = layout(stages)
    assert {n.name for n in graph.nodes} == {"a", "b", "<script>"}
    assert ("ghost", "b") not in _edges(stages) and ("b", "b") not in _edges(stages)
    assert layout([]).nodes == []


def test_durations_read_like_a_person_would_say_them() -> None:
    assert duration_text(None) == ""
    assert duration_text(1500) == "1.5 s"
    assert duration_text(3_600_000) == "60 min 0 s"


def test_a_matrix_stage_is_drawn_as_the_legs_that_ran() -> None:
    shapes = [
        StageShape("build", 0),
        StageShape("test", 1, ["build"]),
        StageShape("deploy", 2, ["test"]),
    ]
    legs = ["test (3.11)", "test (3.12)"]
    drawn = with_matrix_legs(shapes, ["build", *legs, "testing (x)"])
    assert [s.name for s in drawn] == ["build", *legs, "deploy"]
    edges = {(e.source, e.target) for e in layout(drawn).edges}
    assert edges == {
        ("build", "test (3.11)"), ("build", "test (3.12)"),
        ("test (3.11)", "deploy"), ("test (3.12)", "deploy"),
    }  # fmt: skip
    assert with_matrix_legs(shapes, ["build"]) == shapes
