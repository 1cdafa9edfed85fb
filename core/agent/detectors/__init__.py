"""Ecosystem detectors behind one protocol, and the choice of the app a directory holds.

Order matters: language manifests first; a static site or a bare Dockerfile only when nothing
else matches.
"""

from __future__ import annotations

from core.agent.detectors.base import Detector
from core.agent.detectors.docker import DockerfileDetector
from core.agent.detectors.go import GoDetector
from core.agent.detectors.java import JavaDetector
from core.agent.detectors.node import NodeDetector
from core.agent.detectors.php import PhpDetector
from core.agent.detectors.python import PythonDetector
from core.agent.detectors.ruby import RubyDetector
from core.agent.detectors.rust import RustDetector
from core.agent.detectors.static import StaticSiteDetector
from core.agent.matrix import declared_matrix
from core.agent.repo_files import RepoFiles, join
from core.agent.services import service_plan
from workflows.agent_models import AppDetection

DETECTORS: tuple[Detector, ...] = (
    NodeDetector(),
    PythonDetector(),
    GoDetector(),
    RustDetector(),
    JavaDetector(),
    RubyDetector(),
    PhpDetector(),
    StaticSiteDetector(),
    DockerfileDetector(),
)

# The JavaScript package managers' lockfiles (a workspace root's too), then every other's.
JS_LOCKFILES = (
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "bun.lock",
)
LOCKFILE_NAMES = (
    *JS_LOCKFILES,
    "poetry.lock",
    "uv.lock",
    "requirements.txt",
    "go.sum",
    "Cargo.lock",
    "Gemfile.lock",
    "composer.lock",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
)


def detect_app(files: RepoFiles, base: str) -> AppDetection | None:
    found = [d for d in (det.detect(files, base) for det in DETECTORS) if d is not None]
    if not found:
        return None
    for app in found:
        app.lockfiles = [join(base, n) for n in LOCKFILE_NAMES if files.exists(join(base, n))]
    # Laravel/Rails repos ship a package.json for assets: the backend framework wins.
    best = max(
        found, key=lambda d: (d.framework not in ("node", "static", "dockerfile"), d.confidence)
    )
    if best.framework == "node" and any(d.framework not in ("node",) for d in found[1:]):
        others = [d for d in found if d.framework not in ("node", "static", "dockerfile")]
        if others:
            best = others[0]
    if best.test_command:
        plan = service_plan(files, base)
        best.services, best.service_env = plan.images, plan.env
        best.evidence.extend(plan.evidence)
        best.version_matrix = declared_matrix(files, base, best.language)
    return best
