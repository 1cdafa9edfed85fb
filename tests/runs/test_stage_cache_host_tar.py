"""Cache archives written by the host's GNU tar (core/runs/cache_tar.py) from the entries the
archive's own walk chose: the same archive Python's tarfile writes, read back by the same
checked unpack; names taken verbatim, never as options; links kept inside their tree."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from core.runs import cache_archive
from core.runs.cache_archive import CacheTooLarge, pack, resolve_cache_paths, unpack
from core.runs.cache_tar import host_tar, tar_pack

pytestmark = pytest.mark.skipif(host_tar() is None, reason="no GNU tar and gzip on this host")


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    root, home = tmp_path / "ws", tmp_path / "ws.sandbox" / "home"
    (root / "node_modules" / "dep").mkdir(parents=True)
    (root / "node_modules" / "dep" / "index.js").write_text("module.exports = 1\n")
    (root / "node_modules" / ".bin").mkdir()
    (root / "node_modules" / ".bin" / "dep").symlink_to("../dep/index.js")
    (home / ".npm" / "_cacache").mkdir(parents=True)
    (home / ".npm" / "_cacache" / "blob").write_bytes(b"\x00" * 4096)
    return root, home


def _names(archive: Path) -> set[str]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name for m in tar.getmembers()}


def test_host_tar_writes_what_the_walk_chose(tmp_path: Path) -> None:
    root, home = _tree(tmp_path)
    sources = resolve_cache_paths(root, root, ["node_modules", "~/.npm"], home)
    archive = tmp_path / "c.tar.gz"
    size = pack(root, sources, archive, home=home)
    assert size == len("module.exports = 1\n") + 4096
    assert _names(archive) == {
        "node_modules",
        "node_modules/dep",
        "node_modules/dep/index.js",
        "node_modules/.bin",
        "node_modules/.bin/dep",
        "~/.npm",
        "~/.npm/_cacache",
        "~/.npm/_cacache/blob",
    }
    into, into_home = tmp_path / "run2", tmp_path / "run2.sandbox" / "home"
    into.mkdir()
    into_home.mkdir(parents=True)
    assert unpack(archive, into, home=into_home) == size
    assert os.readlink(into / "node_modules" / ".bin" / "dep") == "../dep/index.js"
    assert (into_home / ".npm" / "_cacache" / "blob").stat().st_size == 4096


def test_hostile_names_and_links_stay_out(tmp_path: Path) -> None:
    root, home = _tree(tmp_path)
    nm = root / "node_modules"
    (nm / "--checkpoint-action=exec=touch PWNED").write_text("x")
    (nm / "-C").mkdir()
    (nm / "escape").symlink_to("/etc/passwd")
    (nm / "up").symlink_to("../../ws.sandbox/home/.npm")
    os.mkfifo(nm / "fifo")
    (nm / "hard").hardlink_to(home / ".npm" / "_cacache" / "blob")
    archive = tmp_path / "c.tar.gz"
    pack(
        root, resolve_cache_paths(root, root, ["node_modules", "~/.npm"], home), archive, home=home
    )
    names = _names(archive)
    assert "node_modules/--checkpoint-action=exec=touch PWNED" in names
    assert "node_modules/-C" in names
    assert not {"node_modules/escape", "node_modules/up", "node_modules/fifo"} & names
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    with tarfile.open(archive, "r:gz") as tar:
        hard = tar.getmember("node_modules/hard")
    assert hard.isreg()  # stored as a file: no link from the workspace into the home
    into = tmp_path / "run2"
    into.mkdir()
    unpack(archive, into, home=tmp_path / "elsewhere-home")


def test_the_size_cap_holds_before_tar_runs(tmp_path: Path) -> None:
    root, _ = _tree(tmp_path)
    (root / "node_modules" / "big").write_bytes(b"y" * 10_000)
    archive = tmp_path / "c.tar.gz"
    with pytest.raises(CacheTooLarge):
        pack(root, [root / "node_modules"], archive, max_bytes=5_000)
    assert not archive.exists()


def test_a_tar_failing_midway_leaves_no_archive(tmp_path: Path) -> None:
    root, _ = _tree(tmp_path)
    archive = tmp_path / "missing-dir" / "c.tar.gz"  # tar cannot create it
    tools = host_tar()
    assert tools is not None
    with pytest.raises(OSError):
        tar_pack(tools, archive, root, ["node_modules"], None, [])
    assert not archive.exists()
    with pytest.raises(OSError):
        tar_pack(
            ("/nonexistent/tar", "/nonexistent/gzip"), tmp_path / "d.tar.gz", root, [], None, []
        )


def test_without_host_tar_pythons_writer_gives_the_same_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, home = _tree(tmp_path)
    sources = resolve_cache_paths(root, root, ["node_modules", "~/.npm"], home)
    pack(root, sources, tmp_path / "host.tar.gz", home=home)
    monkeypatch.setattr(cache_archive, "host_tar", lambda: None)
    pack(root, sources, tmp_path / "py.tar.gz", home=home)
    assert _names(tmp_path / "host.tar.gz") == _names(tmp_path / "py.tar.gz")


def test_concurrent_packs_of_one_tree(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    root, home = _tree(tmp_path)
    sources = resolve_cache_paths(root, root, ["node_modules", "~/.npm"], home)
    with ThreadPoolExecutor(4) as pool:
        sizes = list(
            pool.map(lambda i: pack(root, sources, tmp_path / f"{i}.tar.gz", home=home), range(4))
        )
    assert len(set(sizes)) == 1
    assert len({frozenset(_names(tmp_path / f"{i}.tar.gz")) for i in range(4)}) == 1
