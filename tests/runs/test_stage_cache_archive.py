"""Cache archives against hostile content: members leaving the workspace (`..`, absolute names,
links pointing out, device files) refuse the whole archive before a byte is written; packing
never follows a symlink out of the workspace and stops at its size cap."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from core.runs.cache_archive import (
    CacheTooLarge,
    UnsafeCacheArchive,
    pack,
    resolve_cache_paths,
    unpack,
)


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_round_trip_keeps_files_and_inner_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "node_modules" / "pkg").mkdir(parents=True)
    (src / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n")
    os.symlink("pkg/index.js", src / "node_modules" / "main.js")
    archive = tmp_path / "c.tar.gz"
    packed = pack(src, resolve_cache_paths(src, src, ["node_modules"]), archive)
    assert packed == len("module.exports = 1\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(archive, dest)
    assert (dest / "node_modules" / "main.js").read_text() == "module.exports = 1\n"
    assert os.readlink(dest / "node_modules" / "main.js") == "pkg/index.js"


@pytest.mark.parametrize(
    "member",
    [
        _file("../escaped"),
        _file("deps/../../escaped"),
        _file("/tmp/escaped"),
        _link("deps/out", "../../escaped"),
        _link("deps/abs", "/etc/passwd"),
        _link("deps/hard", "/etc/passwd", tarfile.LNKTYPE),
        _link("deps/hard2", "../../etc/passwd", tarfile.LNKTYPE),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink-out",
        "symlink-abs",
        "hardlink-abs",
        "hardlink-dotdot",
    ],
)
def test_hostile_members_refuse_the_whole_archive(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None]
) -> None:
    archive = _archive(tmp_path / "bad.tar.gz", _file("deps/ok", b"fine"), member)
    dest = tmp_path / "ws" / "run"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeCacheArchive):
        unpack(archive, dest)
    assert list(dest.iterdir()) == []  # nothing written, not even the harmless member
    assert not (tmp_path / "ws" / "escaped").exists()


def test_device_and_fifo_members_are_refused(tmp_path: Path) -> None:
    for kind in (tarfile.CHRTYPE, tarfile.FIFOTYPE):
        info = tarfile.TarInfo("deps/dev")
        info.type = kind
        archive = _archive(tmp_path / f"dev{kind!r}.tar.gz", (info, None))
        with pytest.raises(UnsafeCacheArchive, match="not a file"):
            unpack(archive, tmp_path)


def test_a_symlink_planted_in_the_workspace_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(outside, ws / "deps")  # the repository's own checkout plants it
    archive = _archive(tmp_path / "c.tar.gz", _file("deps/payload", b"owned"))
    with pytest.raises(UnsafeCacheArchive):
        unpack(archive, ws)
    assert list(outside.iterdir()) == []


def test_packing_never_follows_symlinks_out_of_the_workspace(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    (ws / "deps" / "ok.txt").write_text("ok")
    os.symlink(secret, ws / "deps" / "leak")
    os.symlink(tmp_path, ws / "deps" / "leakdir")
    os.symlink(tmp_path, ws / "linked-cache")
    sources = resolve_cache_paths(ws, ws, ["deps", "linked-cache", "../secret.txt", "/etc"])
    assert sources == [ws / "deps"]
    archive = tmp_path / "c.tar.gz"
    pack(ws, sources, archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names == ["deps", "deps/ok.txt"]


def test_size_caps_both_ways(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    (ws / "deps" / "big").write_bytes(b"0" * 4096)
    with pytest.raises(CacheTooLarge):
        pack(ws, [ws / "deps"], tmp_path / "c.tar.gz", max_bytes=1000)
    assert not (tmp_path / "c.tar.gz").exists()
    info, _ = _file("deps/bomb")
    info.size = 1 << 20
    archive = _archive(tmp_path / "bomb.tar.gz", (info, b"\0" * (1 << 20)))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(CacheTooLarge):
        unpack(archive, dest, max_bytes=1000)
    assert list(dest.iterdir()) == []
