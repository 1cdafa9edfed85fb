"""Which Node.js a stage's image or a version spec stands for, and which release of the
registry's answers it (pure: no sandbox, no network)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from infra.runners.node_toolchain import (
    NodeRequest,
    _integrity_ok,
    node_request,
    pick_version,
    requested_node,
)

RELEASES = ["18.20.8", "20.11.0", "20.19.1", "21.7.3", "22.14.0", "22.23.5", "24.1.0", "26.2.0"]
PACKUMENT = {
    "versions": {version: {} for version in RELEASES},
    "time": {
        "created": "2013-01-01T00:00:00Z",
        "18.20.8": "2025-03-27T00:00:00Z",
        "20.11.0": "2024-01-09T00:00:00Z",
        "20.19.1": "2025-04-22T00:00:00Z",
        "21.7.3": "2024-04-10T00:00:00Z",
        "22.0.0": "2024-04-24T00:00:00Z",  # an earlier release of the line
        "22.14.0": "2025-02-11T00:00:00Z",
        "22.23.5": "2026-10-01T00:00:00Z",
        "24.1.0": "2025-05-08T00:00:00Z",
        "26.2.0": "2026-09-01T00:00:00Z",
    },
}
NOW = datetime(2026, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("image", "spec"),
    [
        ("node:22", "22"),
        ("node:22-alpine", "22"),
        ("node:22.14-bookworm-slim", "22.14"),
        ("node:22.14.0", "22.14.0"),
        ("docker.io/library/node:20.11.0-alpine3.19", "20.11.0"),
        ("cimg/node:18.19", "18.19"),
        ("node:lts", "lts"),
        ("node:lts-slim", "lts"),
        ("node:iron-alpine", "20"),
        ("node", "latest"),
        ("node:current-alpine", "latest"),
        ("node:alpine", "latest"),
        ("node:22@sha256:" + "a" * 64, "22"),
    ],
)
def test_image_tags(image: str, spec: str) -> None:
    request = requested_node(image)
    assert request is not None and request.spec == spec


@pytest.mark.parametrize("image", [None, "", "python:3.12", "nodered/node-red:3", "denoland/deno"])
def test_images_of_something_else(image: str | None) -> None:
    assert requested_node(image) is None


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        ("22", "22.23.5"),
        ("20.x", "20.19.1"),
        (">=18 <21", "20.19.1"),  # not 21
        ("^20.11.0", "20.19.1"),
        ("v20.11.0", "20.11.0"),
        ("lts/iron", "20.19.1"),
        ("lts/*", "24.1.0"),  # 26 is not six months old: 24 is the newest LTS line
        ("node", "26.2.0"),
        (">=27", None),
    ],
)
def test_versions_picked(spec: str, version: str | None) -> None:
    request = node_request(spec, ".nvmrc")
    assert request is not None
    assert pick_version(request, PACKUMENT, NOW) == version


@pytest.mark.parametrize("spec", ["banana", "22; rm -rf /", "$(id)", "../../etc"])
def test_specs_that_are_no_version(spec: str) -> None:
    assert node_request(spec, ".nvmrc") is None


def test_lts_needs_a_line_six_months_old() -> None:
    early = datetime(2025, 6, 1, tzinfo=UTC)  # 24 out since May 2025: not yet LTS, 22 is
    assert pick_version(NodeRequest("x", "lts"), PACKUMENT, early) == "22.23.5"


def test_integrity_is_checked_with_the_registrys_hash() -> None:
    data = b"tarball"
    hashes = {"sha512": hashlib.sha512(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest()}
    good = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    bad = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    assert _integrity_ok(hashes, {"integrity": good})
    assert not _integrity_ok(hashes, {"integrity": bad})
    assert _integrity_ok(hashes, {"shasum": hashlib.sha1(data).hexdigest()})
    assert not _integrity_ok(hashes, {})  # no hash at all: refused
