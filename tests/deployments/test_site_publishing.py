"""Static publishing of a hostile build output: links out of the tree (to /etc/passwd, the data
dir's key, another tenant's workspace), symlinked directories, FIFOs, hard links, dotfiles and
`.git`; a concurrent duplicate publish and a crash in the middle of laying a site out."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from infra.sites import (
    MANIFEST,
    SitePublishRefused,
    materialize_site,
    publish_directory,
    remove_site,
)
from infra.storage import LocalObjectStore

DEP = "6f1b2a3c-0000-4000-8000-000000000001"
OTHER = "6f1b2a3c-0000-4000-8000-000000000002"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "tenant-a" / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "assets" / "app.js").write_text("console.log(1)")
    return root


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


def published(store: LocalObjectStore, root: Path, **kwargs: bool) -> list[str]:
    return sorted(publish_directory(store, root, "p", **kwargs))


@pytest.mark.parametrize(
    "target",
    [
        "/etc/passwd",
        "secret-key",  # the data dir's encryption key (outside the tree)
        "tenant-b/.env.production",  # another tenant's checkout
        "tenant-a/.env.production",  # the site's own repository, above the published dir
    ],
)
def test_links_out_of_the_tree_are_refused(site: Path, store, tmp_path: Path, target: str):
    (tmp_path / "secret-key").write_text("fernet-key")
    (tmp_path / "tenant-b").mkdir()
    (tmp_path / "tenant-b" / ".env.production").write_text("DB_PASSWORD=x")
    (tmp_path / "tenant-a" / ".env.production").write_text("DB_PASSWORD=y")
    path = Path(target) if target.startswith("/") else tmp_path / target
    (site / "assets" / "leak.txt").symlink_to(path)
    with pytest.raises(SitePublishRefused, match=r"assets/leak\.txt is a symbolic link to a path"):
        publish_directory(store, site, "p")
    assert not store.exists(f"p/{MANIFEST}") and not store.exists("p/assets/leak.txt")


def test_symlinked_directories_are_refused_inside_or_out(site: Path, store, tmp_path: Path):
    (tmp_path / "tenant-b" / "workspace").mkdir(parents=True)
    (site / "other").symlink_to(tmp_path / "tenant-b" / "workspace")
    with pytest.raises(SitePublishRefused, match="other is a symbolic link to a path outside"):
        publish_directory(store, site, "p")
    (site / "other").unlink()
    (site / "loop").symlink_to(site)
    with pytest.raises(SitePublishRefused, match="loop is a symbolic link to a directory"):
        publish_directory(store, site, "p")


def test_a_link_that_stays_inside_is_published_as_its_file(site: Path, store):
    (site / "latest.js").symlink_to("assets/app.js")
    assert published(store, site) == ["assets/app.js", "index.html", "latest.js"]
    assert store.get_bytes("p/latest.js") == b"console.log(1)"


def test_a_link_inside_to_a_hidden_file_is_refused(site: Path, store):
    (site / ".env").write_text("TOKEN=1")
    (site / "env.txt").symlink_to(".env")
    with pytest.raises(SitePublishRefused, match=r"env\.txt is a symbolic link to a hidden file"):
        publish_directory(store, site, "p")


def test_a_fifo_is_refused_without_blocking(site: Path, store):
    os.mkfifo(site / "pipe")
    with pytest.raises(SitePublishRefused, match="pipe is a FIFO"):
        publish_directory(store, site, "p")


def test_hard_links_out_of_the_tree_are_refused_inside_ones_published(
    site: Path, store, tmp_path: Path
):
    outside = tmp_path / "encryption.key"
    outside.write_text("fernet-key")
    os.link(site / "index.html", site / "copy.html")
    assert published(store, site) == ["assets/app.js", "copy.html", "index.html"]
    os.link(outside, site / "key.txt")
    with pytest.raises(SitePublishRefused, match=r"key\.txt is a hard link to a file outside"):
        publish_directory(store, site, "q")


def test_dotfiles_only_when_asked_and_git_never(site: Path, store):
    (site / ".env.production").write_text("SECRET=1")
    (site / ".git").mkdir()
    (site / ".git" / "config").write_text("[core]")
    (site / "assets" / ".DS_Store").write_text("x")
    (site / ".well-known").mkdir()
    (site / ".well-known" / "security.txt").write_text("Contact: a@b")
    assert published(store, site) == [
        ".well-known/security.txt",
        "assets/app.js",
        "index.html",
    ]
    assert not store.exists("p/.env.production")
    assert published(store, site, publish_dotfiles=True) == [
        ".env.production",
        ".well-known/security.txt",
        "assets/.DS_Store",
        "assets/app.js",
        "index.html",
    ]
    assert not store.exists("p/.git/config")


def test_concurrent_duplicate_layouts_leave_one_complete_site(site: Path, store, tmp_path: Path):
    publish_directory(store, site, "p")
    sites = tmp_path / "sites"
    barrier = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def lay_out() -> None:
        barrier.wait()
        try:
            results.append(materialize_site(store, "p", sites, DEP))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=lay_out) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert sorted(p.name for p in sites.iterdir()) == [DEP]
    assert (sites / DEP / "assets" / "app.js").read_text() == "console.log(1)"


class FailingStore:
    """The store dies after `budget` reads, like a worker killed in the middle of a layout."""

    def __init__(self, inner: LocalObjectStore, budget: int) -> None:
        self.inner, self.budget = inner, budget

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> object:
        return self.inner.put_bytes(key, data, content_type)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def get_bytes(self, key: str) -> bytes:
        if not key.endswith(MANIFEST):
            if self.budget == 0:
                raise ConnectionError("store went away")
            self.budget -= 1
        return self.inner.get_bytes(key)


def test_a_crash_mid_layout_leaves_nothing_served_then_a_retry_completes(
    site: Path, store, tmp_path: Path
):
    sites = tmp_path / "sites"
    publish_directory(store, site, "old")
    previous = materialize_site(store, "old", sites, OTHER)
    (site / "index.html").write_text("<h1>new</h1>")
    publish_directory(store, site, "p")
    with pytest.raises(ConnectionError):
        materialize_site(FailingStore(store, 1), "p", sites, DEP)
    # Only the previous site exists (what the environment's route still points at).
    assert sorted(p.name for p in sites.iterdir()) == [OTHER]
    assert (previous / "index.html").read_text() == "<h1>home</h1>"
    done = materialize_site(store, "p", sites, DEP)
    assert (done / "index.html").read_text() == "<h1>new</h1>"
    remove_site(sites, DEP)
    assert sorted(p.name for p in sites.iterdir()) == [OTHER]


def test_a_manifest_that_escapes_is_refused(store, tmp_path: Path):
    store.put_bytes(f"p/{MANIFEST}", b'["../../etc/cron.d/x"]')
    with pytest.raises(SitePublishRefused, match="unsafe path"):
        materialize_site(store, "p", tmp_path / "sites", DEP)
    assert list((tmp_path / "sites").iterdir()) == []
