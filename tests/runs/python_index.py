"""A package index for sandboxed Python stages, on a host of a network namespace the test creates
(198.51.100.7 on that namespace's loopback, never a real address), reached only through an
egress proxy running inside the same namespace: wheels repacked from this test environment's
own installed distributions, plus tiny wheels written here."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import importlib.metadata as metadata
import io
import re
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

INDEX_HOST = "198.51.100.7"
INDEX_URL = f"http://{INDEX_HOST}/simple/"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Metadata an installer writes for its own use: not part of a wheel.
_INSTALLER_FILES = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD", "uv_cache.json")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_line(arcname: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [arcname, f"sha256={digest}", str(len(data))]


def _write_wheel(path: Path, files: dict[str, bytes], dist_info: str) -> Path:
    rows = [_record_line(name, data) for name, data in files.items()]
    rows.append([f"{dist_info}/RECORD", "", ""])
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows(rows)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist_info}/RECORD", record.getvalue())
    return path


def repack(name: str, out_dir: Path) -> Path:
    """A wheel of the installed distribution `name` (its files as installed, no bytecode)."""
    dist = metadata.distribution(name)
    version = dist.version
    dist_info = next(
        str(f).split("/")[0] for f in dist.files or [] if str(f).endswith(".dist-info/METADATA")
    )
    files: dict[str, bytes] = {}
    for entry in dist.files or []:
        arcname = str(entry)
        if arcname.startswith("..") or "__pycache__" in arcname or arcname.endswith(".pyc"):
            continue
        if arcname.startswith(f"{dist_info}/") and arcname.split("/")[-1] in _INSTALLER_FILES:
            continue
        files[arcname] = Path(str(entry.locate())).read_bytes()
    tag = (dist.read_text("WHEEL") or "Tag: py3-none-any").split("Tag:")[1].split()[0]
    stem = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    return _write_wheel(out_dir / f"{stem}-{version}-{tag}.whl", files, dist_info)


def tiny_wheel(
    out_dir: Path, name: str, version: str, module: str, *, console: str | None = None
) -> Path:
    """A pure-Python wheel of one module `name` (with a `name = name:main` script if asked)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: forgeline-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if console:
        files[f"{dist_info}/entry_points.txt"] = (
            f"[console_scripts]\n{console} = {name}:main\n".encode()
        )
    return _write_wheel(out_dir / f"{name}-{version}-py3-none-any.whl", files, dist_info)


def closure(names: Iterable[str]) -> list[str]:
    """The distributions `names` need, as installed here (markers of this Python, no extras)."""
    seen: dict[str, str] = {}
    todo = list(names)
    while todo:
        dist = metadata.distribution(todo.pop())
        key = _normal(dist.metadata["Name"])
        if key in seen:
            continue
        seen[key] = dist.metadata["Name"]
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values())


def write_index(root: Path, wheels: Iterable[Path]) -> None:
    """A PEP 503 simple index of `wheels` under root/simple, the files under root/files."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    by_project: dict[str, list[str]] = {}
    for wheel in wheels:
        (files / wheel.name).write_bytes(wheel.read_bytes())
        by_project.setdefault(_normal(wheel.name.split("-")[0]), []).append(wheel.name)
    for project, names in by_project.items():
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="../../files/{n}">{n}</a>\n' for n in names)
        (page / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class PackageIndex:
    url: str
    proxy_socket: Path
    hits: Path  # one requested path per line


@asynccontextmanager
async def package_index(work: Path, wheels: Iterable[Path]) -> AsyncIterator[PackageIndex]:
    """The index served inside a namespace of this test's own, with an egress proxy there: the
    sandbox reaches it through the proxy's socket, as it would reach a registry."""
    root = work / "index"
    write_index(root, wheels)
    hits = work / "index-hits.log"
    hits.write_text("")
    name = f"flpy-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{INDEX_HOST}/32", "dev", "lo")
        server = (
            "import functools, http.server, sys\n"
            "class H(http.server.SimpleHTTPRequestHandler):\n"
            "    def log_message(self, fmt, *args):\n"
            "        open(sys.argv[2], 'a').write(self.path + '\\n')\n"
            "handler = functools.partial(H, directory=sys.argv[1])\n"
            f"http.server.ThreadingHTTPServer(('{INDEX_HOST}', 80), handler).serve_forever()\n"
        )
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-c", server, str(root), str(hits)]
            )
        )
        socket_path = work / "egress.sock"
        proxy = [sys.executable, "-m", "infra.runners.egress_proxy", "--socket", str(socket_path)]
        procs.append(subprocess.Popen(["ip", "netns", "exec", name, *proxy], cwd=REPO_ROOT))
        for _ in range(200):
            if socket_path.exists():
                break
            await asyncio.sleep(0.05)
        assert socket_path.exists(), "the egress proxy of the test namespace did not start"
        probe = ["ip", "netns", "exec", name, "curl", "-sf", "-o", "/dev/null", INDEX_URL]
        for _ in range(200):
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                break
            await asyncio.sleep(0.05)
        hits.write_text("")
        yield PackageIndex(INDEX_URL, socket_path, hits)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        _ip("netns", "delete", name, check=False)
