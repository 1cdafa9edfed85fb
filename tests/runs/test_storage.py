"""ObjectStore on the local directory and on S3 (moto's threaded server): same behaviour."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from infra.storage import (
    InvalidObjectKey,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    sanitize_key,
)


def make_s3_store(endpoint: str, bucket: str) -> S3ObjectStore:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=bucket)
    return S3ObjectStore(client, bucket)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    endpoint = request.getfixturevalue("moto_endpoint")
    return make_s3_store(endpoint, f"b-{tmp_path.name.lower().replace('_', '-')[:40]}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "etc/passwd"),
        ("runs/1/./a b/..", "runs/1/a_b"),
        ("/abs/path", "abs/path"),
        ("a\\..\\b", "a/b"),
        ("x/$(rm -rf)/;y", "x/__rm_-rf_/_y"),
    ],
)
def test_sanitize_key(raw: str, expected: str) -> None:
    assert sanitize_key(raw) == expected


def test_sanitize_key_rejects_empty() -> None:
    with pytest.raises(InvalidObjectKey):
        sanitize_key("../..//.")


def test_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    key = store.put_bytes("runs/r1/logs/build.log", b"hello\n")
    assert key == "runs/r1/logs/build.log"
    assert store.exists(key)
    assert store.get_bytes(key) == b"hello\n"
    assert store.size(key) == 6
    src = tmp_path / "artifact.bin"
    src.write_bytes(b"\x00" * 300_000)
    store.put_file("runs/r1/artifacts/../../../etc/passwd", src)
    assert "runs/r1/artifacts/etc/passwd" in store.list("runs/r1")
    assert b"".join(store.iter_chunks("runs/r1/artifacts/etc/passwd")) == src.read_bytes()
    with store.open(key) as stream:
        assert stream.read() == b"hello\n"
    assert store.list("runs/r1/logs") == ["runs/r1/logs/build.log"]
    assert store.url(key).endswith("runs/r1/logs/build.log")
    store.delete(key)
    store.delete(key)  # idempotent
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.get_bytes(key)
    assert store.list("nothing/here") == []


def test_local_store_stays_inside_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("../../escape.txt", b"x")
    assert not (tmp_path / "escape.txt").exists()
    assert (tmp_path / "objects" / "escape.txt").exists()
