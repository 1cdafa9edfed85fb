"""Go modules (go.mod)."""

from __future__ import annotations

import re

from core.agent.images import cache_paths, go_image
from core.agent.repo_files import RepoFiles, join
from core.agent.versions import go_version
from workflows.agent_models import AppDetection


class GoDetector:
    ecosystem = "go"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        raw = files.text(join(base, "go.mod"))
        if raw is None:
            return None
        module = re.search(r"^module\s+(\S+)", raw, re.M)
        version = go_version(raw)
        image = go_image(version.version)
        return AppDetection(
            path=base or ".",
            name=(module.group(1).rsplit("/", 1)[-1] if module else "app"),
            language="go",
            framework="go",
            confidence=0.95,
            package_manager="go modules",
            install_command="go mod download",
            lint_command="go vet ./...",
            test_command="go test ./...",
            build_command="go build -o bin/ ./...",
            output_directory="bin",
            image=image,
            cache_paths=cache_paths(image, "go"),
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=60,
            evidence=["go.mod"]
            + (["go.sum"] if files.exists(join(base, "go.sum")) else [])
            + ([f"Go {version.version} from {version.source}"] if version.source else []),
        )
