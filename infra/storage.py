"""The object store for logs, artifacts and snapshots: a local directory by default, S3 via boto3.

Methods are synchronous (boto3 is); call them through `asyncio.to_thread` from async code.
Every key passes through `sanitize_key`, so user-supplied names can never escape their prefix.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from forgeline.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")
_MAX_SEGMENT = 200
_MAX_KEY = 1000


class InvalidObjectKey(ValueError):
    """A key that sanitises to nothing (e.g. only dots and slashes)."""


class ObjectNotFound(KeyError):
    pass


def sanitize_segment(segment: str) -> str:
    """One path segment: unsafe characters become `_`; `.`/`..`/empty disappear."""
    cleaned = _UNSAFE.sub("_", segment.strip())[:_MAX_SEGMENT]
    if cleaned.strip(".") == "":
        return ""
    return cleaned


def sanitize_key(key: str) -> str:
    """A relative, traversal-free key: `../../etc/passwd` becomes `etc/passwd`."""
    parts = [sanitize_segment(p) for p in key.replace("\\", "/").split("/")]
    cleaned = "/".join(p for p in parts if p)
    if not cleaned:
        raise InvalidObjectKey(f"object key {key!r} is empty after sanitising")
    return cleaned[:_MAX_KEY]


def join_key(*parts: str) -> str:
    return sanitize_key("/".join(parts))


class ObjectStore(ABC):
    """Keys are sanitised on every call; listing returns sanitised keys under a prefix."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str: ...

    @abstractmethod
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> str: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A readable binary stream; the caller closes it."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Deleting a missing key is not an error (idempotent)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def url(self, key: str) -> str:
        """A reference for operators (file:// or s3://); downloads go through the API."""

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        with self.open(key) as stream:
            while chunk := stream.read(chunk_size):
                yield chunk


class LocalObjectStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / sanitize_key(key)).resolve()
        # Sanitising already removes traversal; this guards symlinks planted inside the root.
        if not path.is_relative_to(self.root):
            raise InvalidObjectKey(f"object key {key!r} escapes the store")
        return path

    def _write_atomically(self, path: Path, writer: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                writer(out)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        self._write_atomically(self._path(key), lambda out: out.write(data))
        return sanitize_key(key)

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> str:
        def copy(out: IO[bytes]) -> None:
            with path.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)

        self._write_atomically(self._path(key), copy)
        return sanitize_key(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def open(self, key: str) -> IO[bytes]:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix.strip("/") else self.root
        if base.is_file():
            return [base.relative_to(self.root).as_posix()]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def url(self, key: str) -> str:
        return self._path(key).as_uri()


class S3ObjectStore(ObjectStore):
    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        k = sanitize_key(key)
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=k, Body=data, **extra)  # type: ignore[arg-type]
        return k

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> str:
        k = sanitize_key(key)
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(path), self.bucket, k, ExtraArgs=extra)
        return k

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    def open(self, key: str) -> IO[bytes]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=sanitize_key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise ObjectNotFound(key) from exc
        body: IO[bytes] = response["Body"]  # type: ignore[assignment]
        return body

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=sanitize_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return dict(head)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(key)
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=sanitize_key(key))

    def list(self, prefix: str = "") -> list[str]:
        p = sanitize_key(prefix) if prefix.strip("/") else ""
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=p):
            keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
        return sorted(keys)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{sanitize_key(key)}"


def create_s3_client(settings: Settings) -> S3Client:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=(
            settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None
        ),
        aws_secret_access_key=(
            settings.aws_secret_access_key.get_secret_value()
            if settings.aws_secret_access_key
            else None
        ),
    )


def create_object_store(settings: Settings) -> ObjectStore:
    """S3 when a bucket is configured, else the local directory under data_dir."""
    if settings.s3_bucket:
        return S3ObjectStore(create_s3_client(settings), settings.s3_bucket)
    return LocalObjectStore(settings.objects_dir)
