"""The `static` provider: a site's files published under an object-store prefix, served by the
API's static host at a stable URL (`{public_base_url}/v1/sites/{deployment_id}/`)."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path, PurePosixPath
from typing import Protocol

MANIFEST = ".forgeline-manifest.json"


class SiteStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> object: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...


def site_prefix(deployment_id: str) -> str:
    return f"deployments/{deployment_id}/site"


def site_url(public_base_url: str, deployment_id: str) -> str:
    return f"{public_base_url.rstrip('/')}/v1/sites/{deployment_id}/"


def content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def publish_directory(store: SiteStore, root: Path, prefix: str) -> list[str]:
    """Upload every file under root to `{prefix}/{relative path}` plus a manifest of them.

    Keys are a pure function of deployment and path: a retry overwrites, never duplicates.
    """
    files: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or ".git" in path.relative_to(root).parts:
            continue
        relative = path.relative_to(root).as_posix()
        store.put_bytes(f"{prefix}/{relative}", path.read_bytes(), content_type(relative))
        files.append(relative)
    if "index.html" not in files:
        raise FileNotFoundError("the static output has no index.html")
    store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(files).encode(), "application/json")
    return files


def manifest(store: SiteStore, prefix: str) -> list[str]:
    return list(json.loads(store.get_bytes(f"{prefix}/{MANIFEST}")))


def resolve_site_key(prefix: str, path: str) -> str | None:
    """Object key for a request path (directory → index.html); None for escapes like `..`."""
    pure = PurePosixPath("/" + path)
    if ".." in pure.parts:
        return None
    relative = str(pure)[1:]
    if relative == "" or path.endswith("/"):
        relative = f"{relative.rstrip('/')}/index.html".lstrip("/")
    if relative == MANIFEST:
        return None
    return f"{prefix}/{relative}"
