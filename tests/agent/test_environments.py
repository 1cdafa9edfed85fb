"""The environment-matching layouts of the corpus: each app gets the image, install, caches,
services and matrix its repository declares, and its pipeline validates in both formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus import ENVIRONMENTS, SampleRepo, write_repo


@pytest.mark.parametrize("sample", ENVIRONMENTS, ids=[s.name for s in ENVIRONMENTS])
def test_layouts_get_the_environment_they_declare(sample: SampleRepo, tmp_path: Path) -> None:
    analysis = analyze_repository(write_repo(sample, tmp_path))
    app = analysis.primary
    assert app.framework == sample.framework, app.evidence
    for attribute, expected in sample.expect.items():
        assert getattr(app, attribute) == expected, (attribute, app.evidence)
    proposal = propose_pipeline(analysis)
    report = validate_proposal(proposal)
    assert report.valid, report.errors
