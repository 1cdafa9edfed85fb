"""Build a deployment artifact: an image from the repository's Dockerfile, or a generated one for
static sites and the frameworks the planner knows, tagged with the commit SHA."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import BuildError

from forgeline.errors import ValidationFailed
from forgeline.safe_parsing import UnsafeDocument, load_json, read_document

BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
STATIC_FRAMEWORKS = {"static", "html", "hugo", "jekyll", "eleventy", "gatsby", "astro"}
SPA_OUTPUT_DIRS = ("dist", "build", "out", "public", "_site")

# Static sites need no base image from a registry: a static busybox serves the files.
STATIC_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY site /www
EXPOSE 8080
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
"""

NODE_DOCKERFILE = """\
FROM node:20-alpine AS build
WORKDIR /app
COPY . .
RUN if [ -f package-lock.json ]; then npm ci; else npm install; fi && npm run build --if-present
FROM node:20-alpine
WORKDIR /app
COPY --from=build /app /app
ENV PORT=8080
EXPOSE 8080
CMD ["npm", "start"]
"""

PYTHON_DOCKERFILE = """\
FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . || pip install --no-cache-dir -r requirements.txt
ENV PORT=8080
EXPOSE 8080
CMD ["python", "-m", "app"]
"""

GO_DOCKERFILE = """\
FROM golang:1.22-alpine AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -o /out/app .
FROM scratch
COPY --from=build /out/app /app
EXPOSE 8080
ENTRYPOINT ["/app"]
"""


class BuildFailed(Exception):
    """The Dockerfile did not build: retrying the same inputs will not help."""


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    generated_dockerfile: bool
    log_lines: int


def image_tag(project_id: str, version: str, commit_sha: str | None) -> str:
    ref = (commit_sha or version).lower()
    ref = re.sub(r"[^a-z0-9_.-]", "-", ref)[:128] or "latest"
    return f"forgeline/{project_id}:{ref}"


def find_static_root(context: Path, output_dir: str | None) -> Path | None:
    """Where the built static files are: the declared output dir, a usual one, or the root."""
    if output_dir:
        candidate = (context / output_dir).resolve()
        if not candidate.is_relative_to(context.resolve()) or not candidate.is_dir():
            raise ValidationFailed(f"output directory {output_dir!r} not found in the build")
        return candidate
    for name in SPA_OUTPUT_DIRS:
        if (context / name / "index.html").is_file():
            return context / name
    if (context / "index.html").is_file():
        return context
    return None


def generated_dockerfile(context: Path, framework: str | None) -> str | None:
    """A Dockerfile for a repository without one, from its framework or marker files."""
    if (framework or "").lower() in STATIC_FRAMEWORKS:
        return STATIC_DOCKERFILE
    if (context / "package.json").is_file():
        if "start" in _package_scripts(context / "package.json"):
            return NODE_DOCKERFILE
        return None  # a front-end without a server: served as static output
    if (context / "pyproject.toml").is_file() or (context / "requirements.txt").is_file():
        return PYTHON_DOCKERFILE
    if (context / "go.mod").is_file():
        return GO_DOCKERFILE
    return None


def _package_scripts(path: Path) -> dict[str, object]:
    """The `scripts` of the repository's package.json, through the bounded loader: a huge,
    deeply nested or broken manifest fails the build with its reason."""
    try:
        data = load_json(read_document(path, "JSON") or "{}")
    except UnsafeDocument as exc:
        raise BuildFailed(f"package.json: {exc}") from exc
    scripts = data.get("scripts") if isinstance(data, dict) else None
    return scripts if isinstance(scripts, dict) else {}


def _busybox() -> Path:
    for path in BUSYBOX_CANDIDATES:
        if path.is_file():
            return path
    raise BuildFailed("static busybox not installed on the build host (busybox-static)")


class ImageBuilder:
    def __init__(self, client: docker.DockerClient) -> None:
        self._docker = client

    def build(
        self,
        context: Path,
        *,
        tag: str,
        dockerfile: str | None,
        output_dir: str | None,
        framework: str | None,
        on_line: Callable[[str], None],
        labels: dict[str, str] | None = None,
    ) -> BuiltImage:
        """Build without registry pulls when the Dockerfile needs none (FROM scratch)."""
        declared = context / (dockerfile or "Dockerfile")
        if dockerfile and not declared.is_file():
            raise ValidationFailed(f"Dockerfile {dockerfile!r} not found in the repository")
        if declared.is_file():
            lines = self._run_build(context, declared.name, tag, on_line, labels)
            return BuiltImage(tag, False, lines)
        text = generated_dockerfile(context, framework)
        static_root = find_static_root(context, output_dir)
        if text is None and static_root is not None:
            text = STATIC_DOCKERFILE
        if text is None:
            raise BuildFailed(
                "no Dockerfile, known framework or static output (index.html) in the repository"
            )
        with tempfile.TemporaryDirectory(prefix="fl-build-") as tmp:
            staged = Path(tmp)
            if text == STATIC_DOCKERFILE:
                if static_root is None:
                    raise BuildFailed("static site without index.html")
                shutil.copytree(static_root, staged / "site", ignore=_ignore_vcs)
                shutil.copy2(_busybox(), staged / "busybox")
            else:
                shutil.copytree(context, staged, dirs_exist_ok=True, ignore=_ignore_vcs)
            (staged / "Dockerfile.forgeline").write_text(text)
            on_line("forgeline: no Dockerfile in the repository, using a generated one")
            lines = self._run_build(staged, "Dockerfile.forgeline", tag, on_line, labels)
        return BuiltImage(tag, True, lines + 1)

    def _run_build(
        self,
        context: Path,
        dockerfile: str,
        tag: str,
        on_line: Callable[[str], None],
        labels: dict[str, str] | None,
    ) -> int:
        count = 0
        try:
            for chunk in self._docker.api.build(
                path=str(context),
                dockerfile=dockerfile,
                tag=tag,
                rm=True,
                forcerm=True,
                decode=True,
                labels=labels or {},
            ):
                if "error" in chunk:
                    on_line(str(chunk["error"]).rstrip())
                    raise BuildFailed(str(chunk["error"]).strip())
                for line in str(chunk.get("stream", "")).splitlines():
                    if line.strip():
                        count += 1
                        on_line(line)
        except BuildError as exc:
            raise BuildFailed(str(exc)) from exc
        return count

    def has_image(self, tag: str) -> bool:
        try:
            self._docker.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True


def _ignore_vcs(_dir: str, names: list[str]) -> set[str]:
    return {name for name in names if name in {".git", "node_modules", ".venv"}}
