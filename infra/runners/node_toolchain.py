"""Node.js toolchains for sandboxed stages: the version a stage's image (or a version range)
stands for, resolved against the official Node.js builds the npm registry serves as packages
(node-linux-<arch>), each version installed once per host (node, npm, npx, corepack) into a
shared directory the sandboxes mount read-only. An install is verified by the registry's
integrity hash and renamed into place whole, under a lock: concurrent stages download a version
once, and a failed or killed download leaves nothing a later stage uses."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import platform
import re
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nodesemver  # type: ignore[import-untyped]

from forgeline.safe_parsing import load_json, read_document

DEFAULT_REGISTRY = "https://registry.npmjs.org"
NODE_TOOLCHAINS = "node-toolchains"  # under the runner's state directory
HOST_NODE = Path("/usr/bin/node")
HTTP_SECONDS = 60.0
PACKUMENT_TTL_SECONDS = 600.0
# The full packument of a package with hundreds of releases runs to tens of megabytes.
PACKUMENT_MAX_BYTES = 64 * 1024 * 1024
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
_ARCH.update(ppc64le="ppc64le", s390x="s390x")
# The npm major a Node release line ships (npm 10 up to Node 23, 11 for 24 and 25); a newer
# line takes the newest npm whose `engines` accept it.
_NPM_MAJOR = ((23, 10), (25, 11))
# Docker's codename tags (node:iron, node:jod-alpine) and nvm's `lts/<name>`.
CODENAMES = {
    "argon": 4,
    "boron": 6,
    "carbon": 8,
    "dubnium": 10,
    "erbium": 12,
    "fermium": 14,
    "gallium": 16,
    "hydrogen": 18,
    "iron": 20,
    "jod": 22,
    "krypton": 24,
}
# An even release line becomes LTS about six months after its first release.
LTS_AFTER = timedelta(days=180)
_TAG_VERSION = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?=$|[-_])")
_VERSION = re.compile(r"\d+\.\d+\.\d+")


class NodeToolchainError(Exception):
    """The Node.js a stage asks for cannot be provided; the message says why, for its log."""


@dataclass(frozen=True)
class NodeRequest:
    """What a stage asks for: `spec` is a semver range, `latest` or `lts` (`lts/<codename>`
    is turned into its major)."""

    source: str  # "image node:22-alpine", ".nvmrc", ...
    spec: str

    @property
    def wanted(self) -> str:
        if self.spec == "latest":
            return "the newest Node.js"
        return "the newest LTS Node.js" if self.spec == "lts" else f"Node.js {self.spec}"


@dataclass(frozen=True)
class NodeToolchain:
    version: str  # "22.23.5"
    # The directory holding node, npm, npx and corepack, as the sandbox sees it.
    bin_dir: str
    host: bool = False
    downloaded: bool = False
    note: str | None = None  # said first in the stage's log and recorded with its result


def node_request(spec: str, source: str) -> NodeRequest | None:
    """A version spec as .nvmrc, `engines` or a matrix give it (22, v22.14.0, 20.x, >=18 <21,
    lts/*, lts/iron, node, latest); None for one that is no version at all."""
    text = spec.strip().lower()
    if text in ("", "*", "node", "latest", "current", "stable"):
        return NodeRequest(source, "latest")
    if text in ("lts", "lts/*", "lts/-0"):
        return NodeRequest(source, "lts")
    name = text.removeprefix("lts/")
    if name in CODENAMES:
        return NodeRequest(source, str(CODENAMES[name]))
    if nodesemver.valid_range(text, loose=True) is None:
        return None
    return NodeRequest(source, text)


def requested_node(image: str | None) -> NodeRequest | None:
    """The Node.js an image stands for (node:22, node:22.14-alpine, node:lts-slim, node:iron,
    docker.io/library/node, cimg/node:20.11), or None for an image of something else."""
    if not image:
        return None
    reference = image.split("@", 1)[0].strip()
    repository, _, tag = reference.rsplit("/", 1)[-1].partition(":")
    if repository.lower() != "node":
        return None
    tag = tag.lower()
    source = f"image {image}"
    match = _TAG_VERSION.match(tag)
    if match is not None:
        return NodeRequest(source, ".".join(part for part in match.groups() if part is not None))
    flavour = re.split(r"[-_]", tag, maxsplit=1)[0]
    if flavour == "lts":
        return NodeRequest(source, "lts")
    if flavour in CODENAMES:
        return NodeRequest(source, str(CODENAMES[flavour]))
    return NodeRequest(source, "latest")  # node, node:latest, node:current, node:alpine


def registry_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def pick_version(request: NodeRequest, packument: dict[str, Any], now: datetime) -> str | None:
    """The newest release of the registry's that `request` accepts."""
    versions = [v for v in packument.get("versions", {}) if _VERSION.fullmatch(v)]
    if request.spec == "latest":
        return max(versions, key=_version_key, default=None)
    if request.spec != "lts":
        found = nodesemver.max_satisfying(versions, request.spec, loose=True)
        return str(found) if found is not None else None
    first: dict[int, datetime] = {}  # each release line's first publication
    for version, stamp in packument.get("time", {}).items():
        if _VERSION.fullmatch(version):
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                major = _version_key(version)[0]
                first[major] = min(first.get(major, when), when)
    lts = [m for m, when in first.items() if m % 2 == 0 and now - when >= LTS_AFTER]
    if not lts:
        return None
    line = [v for v in versions if _version_key(v)[0] == max(lts)]
    return max(line, key=_version_key, default=None)


def _integrity_ok(data_hash: dict[str, str], dist: dict[str, Any]) -> bool:
    """The registry's SRI hash (sha512), else its sha1 `shasum`; neither: refused."""
    for entry in str(dist.get("integrity") or "").split():
        algorithm, _, digest = entry.partition("-")
        if algorithm in data_hash:
            return base64.b64decode(digest) == bytes.fromhex(data_hash[algorithm])
    shasum = dist.get("shasum")
    return bool(shasum) and data_hash["sha1"] == str(shasum).lower()


def _make_readable(tree: Path) -> None:
    """Everything readable (and directories and executables enterable) by the build user;
    nothing writable but by root."""
    for path in (tree, *tree.rglob("*")):
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod(0o755 if executable else 0o644)


class NodeToolchains:
    """The host's Node.js toolchains: `provide` one (blocking) for a request."""

    def __init__(self, root: Path, registry_url: str | None = None, mount: str = "") -> None:
        self.root = root  # on the host
        self.mount = mount or str(root)  # the same directory inside the sandbox
        self.registry = (registry_url or DEFAULT_REGISTRY).rstrip("/")
        if not self.registry.startswith(("https://", "http://")):
            raise ValueError(f"the Node.js registry must be an http(s) URL: {self.registry}")
        self.arch = registry_arch()
        self._packuments: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._host_version: str | bool | None = False  # False: not asked yet

    # What is there ---------------------------------------------------------------------------
    def host_version(self) -> str | None:
        if self._host_version is False:
            try:
                out = subprocess.run(
                    [str(HOST_NODE), "--version"], capture_output=True, text=True, timeout=15
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                out = ""
            self._host_version = out[1:] if _VERSION.fullmatch(out[1:]) else None
        return self._host_version if isinstance(self._host_version, str) else None

    def installed(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            (p.name for p in self.root.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()),
            key=_version_key,
        )

    def _toolchain(self, version: str, **extra: Any) -> NodeToolchain:
        return NodeToolchain(version, f"{self.mount}/{version}/bin", **extra)

    # Which version ---------------------------------------------------------------------------
    def _packument(self, name: str, abbreviated: bool = False) -> dict[str, Any]:
        with self._lock:
            held = self._packuments.get(name)
            if held is not None and time.monotonic() - held[0] < PACKUMENT_TTL_SECONDS:
                return held[1]
        accept = "application/vnd.npm.install-v1+json" if abbreviated else "application/json"
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked in __init__)
            f"{self.registry}/{name}", headers={"Accept": accept, "User-Agent": "forgeline"}
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_SECONDS) as response:  # noqa: S310
                body = response.read(PACKUMENT_MAX_BYTES + 1)
            document = load_json(
                body.decode("utf-8", errors="replace"), max_bytes=PACKUMENT_MAX_BYTES
            )
        except urllib.error.HTTPError as exc:
            raise NodeToolchainError(
                f"the registry {self.registry} answered HTTP {exc.code} for {name}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise NodeToolchainError(f"the registry {self.registry} is unreachable: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("versions"), dict):
            raise NodeToolchainError(f"the registry {self.registry} sent no versions of {name}")
        with self._lock:
            self._packuments[name] = (time.monotonic(), document)
        return document

    def provide(self, request: NodeRequest) -> NodeToolchain:
        """The toolchain for `request`: the host's own Node when it is what the request asks
        for, else the registry's newest matching release, downloaded on first use."""
        host = self.host_version()
        ranged = request.spec not in ("latest", "lts")
        if ranged and host and nodesemver.satisfies(host, request.spec, loose=True):
            return NodeToolchain(host, str(HOST_NODE.parent), host=True)
        package = f"node-linux-{self.arch}"
        try:
            packument = self._packument(package)
        except NodeToolchainError as exc:
            local = self.installed()
            found = nodesemver.max_satisfying(local, request.spec, loose=True) if ranged else None
            if found is None:
                raise NodeToolchainError(
                    f"{request.source} asks for {request.wanted}, which this host cannot "
                    f"provide: {exc}"
                ) from exc
            return self._toolchain(
                str(found), note=f"{exc}: Node.js {found}, installed earlier, is used"
            )
        version = pick_version(request, packument, datetime.now(UTC))
        if version is None:
            newest = pick_version(NodeRequest("", "latest"), packument, datetime.now(UTC))
            raise NodeToolchainError(
                f"{request.source} asks for {request.wanted}, which the registry "
                f"{self.registry} does not offer ({package}, newest {newest})"
            )
        if version == host:
            return NodeToolchain(host, str(HOST_NODE.parent), host=True)
        if (self.root / version).is_dir():
            return self._toolchain(version)
        downloaded = self._install(version, packument["versions"][version])
        return self._toolchain(version, downloaded=downloaded)

    # Installing ------------------------------------------------------------------------------
    def _companion(self, name: str, node_version: str) -> dict[str, Any] | None:
        """The release of npm or corepack for this Node: the newest its `engines` accept (npm
        within the major that Node line ships); None when the registry has none."""
        versions = self._packument(name, abbreviated=True)["versions"]
        fits = [
            v
            for v, meta in versions.items()
            if _VERSION.fullmatch(v)
            and nodesemver.satisfies(
                node_version, str((meta.get("engines") or {}).get("node") or "*"), loose=True
            )
        ]
        major = _version_key(node_version)[0]
        if name == "npm":
            cap = next((npm for line, npm in _NPM_MAJOR if major <= line), None)
            capped = [v for v in fits if cap is None or _version_key(v)[0] <= cap]
            fits = capped or fits
        best = max(fits, key=_version_key, default=None)
        return None if best is None else dict(versions[best])

    def _install(self, version: str, node_meta: dict[str, Any]) -> bool:
        """Download, verify and rename into place under the version's lock; False when
        another process installed it while this one waited."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        locks = self.root / ".locks"
        locks.mkdir(mode=0o700, exist_ok=True)
        with open(locks / f"{version}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
            target = self.root / version
            if target.is_dir():
                return False
            for stale in self.root.glob(f".partial-{version}-*"):  # a killed installer's
                shutil.rmtree(stale, ignore_errors=True)
            work = self.root / f".partial-{version}-{uuid.uuid4().hex[:8]}"
            work.mkdir(mode=0o700)
            try:
                tree = self._unpack(node_meta, work, "node")
                for name in ("npm", "corepack"):
                    meta = self._companion(name, version)
                    if meta is not None:
                        modules = tree / "lib" / "node_modules"
                        modules.mkdir(parents=True, exist_ok=True)
                        self._unpack(meta, work, name).rename(modules / name)
                        for command, script in _bins(name, modules / name).items():
                            (tree / "bin" / command).symlink_to(
                                f"../lib/node_modules/{name}/{script}"
                            )
                            (modules / name / script).chmod(0o755)
                _make_readable(tree)
                tree.rename(target)  # whole or not at all
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return True

    def _unpack(self, meta: dict[str, Any], work: Path, name: str) -> Path:
        """The package's tarball, verified, extracted as `work/<name>`."""
        dist = meta.get("dist") or {}
        url = str(dist.get("tarball") or "")
        if not url.startswith(("https://", "http://")):
            raise NodeToolchainError(f"the registry {self.registry} gave no tarball for {name}")
        archive = work / f"{name}.tgz"
        hashes = {"sha512": hashlib.sha512(), "sha1": hashlib.sha1()}  # noqa: S324
        request = urllib.request.Request(url, headers={"User-Agent": "forgeline"})  # noqa: S310
        try:
            with (
                urllib.request.urlopen(request, timeout=HTTP_SECONDS) as response,  # noqa: S310
                open(archive, "wb") as out,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    for digest in hashes.values():
                        digest.update(chunk)
        except urllib.error.HTTPError as exc:
            raise NodeToolchainError(f"downloading {url} failed: HTTP {exc.code}") from exc
        except OSError as exc:
            raise NodeToolchainError(f"downloading {url} failed: {exc}") from exc
        if not _integrity_ok({k: d.hexdigest() for k, d in hashes.items()}, dist):
            raise NodeToolchainError(f"{url} does not match the registry's integrity hash")
        unpacked = work / f"{name}-tree"
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise NodeToolchainError(f"{url} is not a readable package: {exc}") from exc
        archive.unlink()
        package = unpacked / "package"
        if not package.is_dir() or (name == "node" and not (package / "bin" / "node").is_file()):
            raise NodeToolchainError(f"{url} does not hold the {name} package it should")
        return package


def _bins(name: str, package: Path) -> dict[str, str]:
    """The commands a Node.js release links in its bin/: npm and npx, and corepack."""
    try:
        declared = load_json(read_document(package / "package.json", "JSON")).get("bin") or {}
    except (OSError, ValueError, AttributeError):
        declared = {}
    wanted = ("npm", "npx") if name == "npm" else (name,)
    found = {}
    for command in wanted:
        script = str(declared.get(command) or "").removeprefix("./")
        safe = script and not script.startswith("/") and ".." not in script.split("/")
        if safe and (package / script).is_file():
            found[command] = script
    return found
