"""The production stack's networks: nothing sensitive published on a host port, the build host off
the control network, the build engine out of the control workers' reach, Caddy's admin API
internal, and TLS to a remote Docker engine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.compose.support import (
    ROOT,
    SENSITIVE_PORTS,
    env_of,
    networks_of,
)


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
