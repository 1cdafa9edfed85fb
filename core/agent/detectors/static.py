"""Static sites: an index.html at the root or in a usual site folder."""

from __future__ import annotations

from pathlib import PurePosixPath

from core.agent.repo_files import RepoFiles, join
from workflows.agent_models import AppDetection


class StaticSiteDetector:
    ecosystem = "static"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        for candidate in ("index.html", "public/index.html", "site/index.html", "docs/index.html"):
            if files.exists(join(base, candidate)):
                out = str(PurePosixPath(candidate).parent)
                return AppDetection(
                    path=base or ".",
                    name=PurePosixPath(base).name or "site",
                    language="html",
                    framework="static",
                    confidence=0.9 if candidate == "index.html" else 0.75,
                    package_manager=None,
                    install_command=None,
                    lint_command='npx --yes html-validate "**/*.html"',
                    test_command=None,
                    build_command=None,
                    output_directory=out,
                    image="node:20",
                    has_dockerfile=files.exists(join(base, "Dockerfile")),
                    estimated_build_seconds=15,
                    evidence=[join(base, candidate)],
                )
        return None
