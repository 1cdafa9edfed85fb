"""Export validation refuses unsafe YAML, broken workflows and broken stage graphs."""

from __future__ import annotations

import pytest

from forgeline.pipeline_spec import PipelineProposal, ProposedStage
from forgeline.pipeline_validation import check_graph, validate_proposal, validate_yaml
from forgeline.safe_parsing import UnsafeDocument, load_yaml

BOMB = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n"


def _proposal(*stages: ProposedStage) -> PipelineProposal:
    return PipelineProposal(
        name="p", stages=list(stages), triggers={"on_push": {"branches": ["main"]}}
    )


def test_alias_bomb_is_refused() -> None:
    with pytest.raises(UnsafeDocument):
        load_yaml(BOMB)
    assert validate_yaml(BOMB, "gitlab-ci") == ["YAML anchors and aliases are not accepted"]


def test_oversized_and_unparsable_yaml_are_refused() -> None:
    with pytest.raises(UnsafeDocument):
        load_yaml("a: " + "x" * 1_100_000)
    with pytest.raises(UnsafeDocument):
        load_yaml("a: [unclosed")


def test_actionlint_reports_a_broken_workflow() -> None:
    text = (
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ bogus.x }}\n"
    )
    errors = validate_yaml(text, "github-actions")
    assert errors and "bogus" in errors[0]


def test_gitlab_schema_reports_a_broken_job() -> None:
    errors = validate_yaml("build:\n  stage: build\n  script: 42\n  timeout: []\n", "gitlab-ci")
    assert errors


def test_unknown_dependency_and_cycle_are_graph_errors() -> None:
    a = ProposedStage(name="a", stage_type="build", commands=["x"], depends_on=["b"])
    b = ProposedStage(name="b", stage_type="test", commands=["y"], depends_on=["a"])
    assert any("cycle" in e for e in check_graph(_proposal(a, b)))
    c = ProposedStage(name="c", stage_type="build", commands=["x"], depends_on=["zz"])
    report = validate_proposal(_proposal(c))
    assert not report.valid and "unknown stage 'zz'" in report.errors[0]


def test_working_directory_outside_repo_is_refused() -> None:
    s = ProposedStage(name="a", stage_type="build", commands=["x"], working_directory="../etc")
    assert check_graph(_proposal(s))


def test_conditions_map_to_both_formats() -> None:
    s = ProposedStage(
        name="notify",
        stage_type="deploy",
        commands=["echo done"],
        image="alpine:3.20",
        conditions={"previous_stage_status": "always", "files_changed": ["src/**"]},
    )
    report = validate_proposal(_proposal(s))
    assert report.valid, report.errors
    assert "always()" in (report.github_actions_yaml or "")
    assert "changes:" in (report.gitlab_ci_yaml or "")
