"""A repository's package.json, read when a deployment image is built without a Dockerfile,
goes through the bounded loader: a 50 MB or deeply nested manifest fails the build with its
reason (never read whole, never parsed into the worker's recursion limit); a good one still
builds. Real filesystem and the real Docker engine."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from forgeline.safe_parsing import MAX_DOCUMENT_BYTES
from infra.image_builds import BuildFailed, ImageBuilder
from tests.deployments.images import docker_client


@pytest.fixture(scope="module")
def client():
    client = docker_client()
    yield client
    client.close()


def static_site(root: Path, manifest: bytes) -> Path:
    (root / "dist").mkdir(parents=True)
    (root / "dist" / "index.html").write_text("static")
    (root / "package.json").write_bytes(manifest)
    return root


def build(client, context: Path, lines: list[str]):
    return ImageBuilder(client).build(
        context,
        tag=f"forgeline/test-manifest:{context.name}",
        dockerfile=None,
        output_dir=None,
        framework=None,
        on_line=lines.append,
    )


HOSTILE = {
    # Valid JSON nested past any real manifest, and past Python's recursion limit.
    "nested-object": b'{"scripts": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    "nested-array": b"[" * 500_000 + b"]" * 500_000,
    "just-deep": b'{"scripts": {"start": ' + b"[" * 70 + b"1" + b"]" * 70 + b"}}",
    "not-json": b'{"scripts": {"start": "node server.js"',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_package_json_fails_the_build_with_its_reason(
    client, tmp_path: Path, name: str
) -> None:
    context = static_site(tmp_path / name, HOSTILE[name])
    lines: list[str] = []
    with pytest.raises(BuildFailed) as raised:
        build(client, context, lines)
    assert str(raised.value).startswith("package.json: JSON ")
    assert "nests deeper than" in str(raised.value) or "does not parse" in str(raised.value)
    assert not lines  # refused before anything was built


def test_a_50_mb_package_json_is_refused_without_being_read_whole(client, tmp_path: Path) -> None:
    context = static_site(tmp_path / "huge", b"")
    manifest = context / "package.json"
    with manifest.open("wb") as file:
        file.write(b'{"scripts": {"start": "node s.js"}, "pad": "')
        file.truncate(50 * 1024 * 1024)  # a sparse 50 MB file: only the read could fill it
    tracemalloc.start()
    try:
        with pytest.raises(BuildFailed) as raised:
            build(client, context, [])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    reason = f"package.json: JSON document larger than {MAX_DOCUMENT_BYTES} bytes"
    assert str(raised.value) == reason
    # At most the cap and a byte were read, not the 50 MB.
    assert peak < 4 * MAX_DOCUMENT_BYTES


def test_a_package_json_that_links_elsewhere_is_not_followed(client, tmp_path: Path) -> None:
    secret = tmp_path / "outside.json"
    secret.write_text('{"scripts": {"start": "cat /etc/shadow"}}')
    context = static_site(tmp_path / "linked", b"{}")
    (context / "package.json").unlink()
    os.symlink(secret, context / "package.json")
    with pytest.raises(BuildFailed) as raised:
        build(client, context, [])
    assert str(raised.value).startswith("package.json: JSON cannot be read")


def test_ordinary_manifests_still_decide_the_dockerfile(client, tmp_path: Path) -> None:
    # No start script (or no usable scripts): a front-end served as its static output.
    for name, manifest in (
        ("plain", b'{"name": "web", "scripts": {"build": "vite build"}}'),
        ("list", b"[]"),
        ("odd-scripts", b'{"scripts": ["start"]}'),
        ("empty", b""),
    ):
        lines: list[str] = []
        built = build(client, static_site(tmp_path / name, manifest), lines)
        assert built.generated_dockerfile, name
        assert "forgeline: no Dockerfile in the repository, using a generated one" in lines
        client.images.remove(built.tag, force=True)
