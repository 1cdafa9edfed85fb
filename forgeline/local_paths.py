"""Host paths a tenant may name (local repositories, a deployment's `source_dir`): only inside
its own organization's directory under an allow-listed root, `<root>/<organization id>/`."""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath

from forgeline.errors import ValidationFailed
from forgeline.settings import Settings


class LocalPathRefused(ValidationFailed):
    """A host path outside the organization's local roots (or not a path at all)."""


def organization_roots(settings: Settings, organization_id: uuid.UUID | str) -> list[Path]:
    """The directories this organization's local paths must be inside (may not exist yet)."""
    org = str(uuid.UUID(str(organization_id)))
    return [Path(os.path.realpath(root)) / org for root in settings.local_roots]


def confine_local_path(
    raw: str, settings: Settings, organization_id: uuid.UUID | str, *, field: str = "path"
) -> Path:
    """The resolved path when it lies inside one of the organization's roots; refused otherwise.

    Symlinks are resolved first, so a link inside the root that points elsewhere is refused.
    """
    if not settings.allow_local_repositories:
        raise LocalPathRefused(
            "local paths are disabled (FORGELINE_ALLOW_LOCAL_REPOSITORIES)", field=field
        )
    roots = organization_roots(settings, organization_id)
    if not roots:
        raise LocalPathRefused(
            "no local repository root is configured (FORGELINE_LOCAL_REPOSITORY_ROOTS)",
            field=field,
        )
    text = raw[len("file://") :] if raw.startswith("file://") else raw
    if not text or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise LocalPathRefused("invalid characters in path", field=field)
    if not text.startswith("/"):
        raise LocalPathRefused("a local path must be absolute", field=field)
    if ".." in PurePosixPath(text).parts:
        raise LocalPathRefused("a local path must not contain '..'", field=field)
    resolved = Path(os.path.realpath(text))
    if not any(resolved.is_relative_to(root) for root in roots):
        where = " or ".join(str(root) for root in roots)
        raise LocalPathRefused(
            f"local paths of this organization must be inside {where}", field=field
        )
    return resolved


def is_inside_organization_roots(
    path: Path, settings: Settings, organization_id: uuid.UUID | str
) -> bool:
    resolved = Path(os.path.realpath(path))
    return any(
        resolved.is_relative_to(root) for root in organization_roots(settings, organization_id)
    )
