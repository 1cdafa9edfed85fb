"""A bare Dockerfile: the app is whatever the image builds."""

from __future__ import annotations

from pathlib import PurePosixPath

from core.agent.repo_files import RepoFiles, join
from workflows.agent_models import AppDetection


class DockerfileDetector:
    ecosystem = "docker"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        if not files.exists(join(base, "Dockerfile")):
            return None
        name = PurePosixPath(base).name or "app"
        return AppDetection(
            path=base or ".",
            name=name,
            language="docker",
            framework="dockerfile",
            confidence=0.8,
            package_manager=None,
            install_command=None,
            lint_command="hadolint Dockerfile",
            test_command=None,
            build_command='docker build -t "forgeline-app:${COMMIT_SHA:-local}" .',
            output_directory=None,
            image=None,
            has_dockerfile=True,
            estimated_build_seconds=120,
            evidence=[join(base, "Dockerfile")],
        )
