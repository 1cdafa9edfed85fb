"""Cache key files are named from the repository's root, as the generator writes them and as
`hashFiles()` reads them in the exported workflows, whatever the stage's working directory: a
lockfile change in a workspace member is a new key, and a key file outside the workspace is
never read."""

from __future__ import annotations

import uuid
from pathlib import Path

from core.runs import stage_cache
from workflows.stage_runtime_models import StageCache


def _cache(*files: str) -> StageCache:
    return StageCache(paths=["node_modules"], scope=str(uuid.uuid4()), key_files=list(files))


def test_a_members_lockfile_keys_its_stage_from_the_root(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "packages" / "web").mkdir(parents=True)
    lock = root / "packages" / "web" / "package-lock.json"
    lock.write_text('{"lockfileVersion": 3}')
    cache = _cache("packages/web/package-lock.json", "pnpm-lock.yaml")
    before = stage_cache.cache_key(cache, root)
    assert before == stage_cache.cache_key(cache, root.resolve())
    lock.write_text('{"lockfileVersion": 3, "packages": {"a": {}}}')
    assert stage_cache.cache_key(cache, root) != before
    (root / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    assert len({before, stage_cache.cache_key(cache, root)}) == 2


def test_key_files_outside_the_workspace_are_never_read(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    secret = tmp_path / "secret.lock"
    secret.write_text("one")
    (root / "link.lock").symlink_to(secret)
    cache = _cache("../secret.lock", "/etc/hostname", "link.lock")
    before = stage_cache.cache_key(cache, root)
    secret.write_text("two")
    assert stage_cache.cache_key(cache, root) == before
