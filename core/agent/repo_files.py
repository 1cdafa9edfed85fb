"""A read-only view of a checked-out repository for the analysers: paths that escape the root are
refused, structured files go through the bounded parsers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from forgeline.safe_parsing import UnsafeDocument, load_json, load_toml, load_yaml

SKIP_DIRS = {".git", "node_modules", "vendor", ".venv", "venv", "target", "dist", "build"}
APP_CONTAINER_DIRS = ("apps", "packages", "services")
MAX_MANIFEST_BYTES = 512 * 1024


class RepoFiles:
    """Read-only view of a checked-out repository, refusing paths that escape the root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Manifests that were present but not read (too large, unsafe or broken), with why.
        self.unread: dict[str, str] = {}

    def path(self, rel: str) -> Path:
        target = (self.root / rel).resolve()
        if target != self.root and self.root not in target.parents:
            raise ValueError(f"path escapes the repository: {rel}")
        return target

    def exists(self, rel: str) -> bool:
        try:
            return self.path(rel).exists()
        except ValueError:
            return False

    def is_dir(self, rel: str) -> bool:
        return self.exists(rel) and self.path(rel).is_dir()

    def text(self, rel: str) -> str | None:
        if not self.exists(rel):
            return None
        target = self.path(rel)
        if not target.is_file():
            return None
        if target.stat().st_size > MAX_MANIFEST_BYTES:
            self.unread[rel] = f"larger than {MAX_MANIFEST_BYTES} bytes"
            return None
        return target.read_text(encoding="utf-8", errors="replace")

    def json(self, rel: str) -> dict[str, Any] | None:
        data = self._parsed(rel, load_json)
        return data if isinstance(data, dict) else None

    def toml(self, rel: str) -> dict[str, Any] | None:
        data = self._parsed(rel, load_toml)
        return data if isinstance(data, dict) else None

    def yaml(self, rel: str) -> dict[str, Any] | None:
        data = self._parsed(rel, load_yaml)
        return data if isinstance(data, dict) else None

    def _parsed(self, rel: str, load: Callable[[str], Any]) -> Any:
        """Every structured file of the repository goes through the bounded loader."""
        raw = self.text(rel)
        if raw is None:
            return None
        try:
            return load(raw)
        except UnsafeDocument as exc:
            self.unread[rel] = str(exc)
            return None

    def subdirs(self, rel: str) -> list[str]:
        if not self.is_dir(rel):
            return []
        base = PurePosixPath(rel)
        return sorted(
            str(base / child.name) if rel != "." else child.name
            for child in self.path(rel).iterdir()
            if child.is_dir()
            and not child.is_symlink()
            and not child.name.startswith(".")
            and child.name not in SKIP_DIRS
        )

    def walk(self, limit: int = 20_000) -> list[str]:
        """Relative paths of all files (skipping vendored/build directories), sorted."""
        out: list[str] = []
        stack = [self.root]
        while stack and len(out) < limit:
            current = stack.pop()
            for child in sorted(current.iterdir()):
                if child.is_symlink():
                    continue
                if child.is_dir():
                    if child.name not in SKIP_DIRS:
                        stack.append(child)
                else:
                    out.append(child.relative_to(self.root).as_posix())
        return sorted(out)


def join(base: str, name: str) -> str:
    """`name` inside the app directory `base` ("." is the repository root)."""
    return name if base in ("", ".") else f"{base}/{name}"
