"""The one interface every ecosystem detector implements."""

from __future__ import annotations

from typing import Protocol

from core.agent.repo_files import RepoFiles
from workflows.agent_models import AppDetection


class Detector(Protocol):
    """Recognises one ecosystem's app in the directory `base` of a checkout ("." is the root)."""

    ecosystem: str

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        """The app found there with its commands and evidence, or None."""
        ...
