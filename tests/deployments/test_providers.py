"""Providers, build and health checks on a real Docker engine and moto S3 (no DB, no Temporal)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from core.deployments.health import Probe, check_url, probe_http, verify
from core.deployments.providers import require_available
from forgeline.embedded.postgres import free_port
from forgeline.errors import ProviderUnavailable, ValidationFailed
from infra.deploy_containers import DockerReleaser, container_name
from infra.image_builds import BuildFailed, ImageBuilder, image_tag
from infra.s3_sites import S3WebsitePublisher, estimated_monthly_cost
from infra.sites import publish_directory, resolve_site_key
from infra.storage import LocalObjectStore
from tests.deployments.images import EXITS, HEALTHY, NO_CONTENT, docker_client, write_context
from workflows.deployment_models import HealthCheckPolicy

FAST = HealthCheckPolicy(
    path="/healthz", interval_seconds=0.1, required_passes=3, failure_threshold=3, window_seconds=10
)


@pytest.fixture(scope="module")
def client():
    client = docker_client()
    yield client
    client.close()


def _cleanup(client, environment_id: str) -> None:
    DockerReleaser(client).remove_environment(environment_id)


async def test_healthy_image_serves_on_a_port_in_range_and_passes_checks(client, tmp_path: Path):
    env_id, dep_id = str(uuid.uuid4()), str(uuid.uuid4())
    lines: list[str] = []
    built = ImageBuilder(client).build(
        write_context(tmp_path / "app", HEALTHY),
        tag=image_tag("p1", "v1", "abc123"),
        dockerfile=None,
        output_dir=None,
        framework=None,
        on_line=lines.append,
    )
    assert built.tag == "forgeline/p1:abc123" and not built.generated_dockerfile
    assert any("Step" in line for line in lines)
    releaser = DockerReleaser(client)
    try:
        running = releaser.run(
            deployment_id=dep_id,
            environment_id=env_id,
            image=built.tag,
            container_port=8080,
            environment={"APP_ENV": "test"},
        )
        assert 30000 <= running.host_port <= 39999
        assert running.name == container_name(dep_id)
        # A retried activity finds the same container instead of starting a second one.
        again = releaser.run(
            deployment_id=dep_id,
            environment_id=env_id,
            image=built.tag,
            container_port=8080,
            environment={},
        )
        assert again.id == running.id
        recorded: list[Probe] = []

        async def record(p: Probe) -> None:
            recorded.append(p)

        async with httpx.AsyncClient() as http:
            url = check_url(running.url, FAST.path)
            verdict = await verify(lambda: probe_http(http, url, FAST), record, FAST)
        assert verdict.healthy and verdict.consecutive_passes == 3
        assert all(p.http_status == 200 and p.latency_ms is not None for p in recorded)
        assert releaser.dead_reason(dep_id) is None
    finally:
        _cleanup(client, env_id)


async def test_broken_images_fail_health_checks(client, tmp_path: Path):
    env_id = str(uuid.uuid4())
    releaser = DockerReleaser(client)
    try:
        for name, dockerfile in (("nocontent", NO_CONTENT), ("exits", EXITS)):
            tag = f"forgeline/test-broken:{name}"
            client.images.build(path=str(write_context(tmp_path / name, dockerfile)), tag=tag)
            dep_id = str(uuid.uuid4())
            running = releaser.run(
                deployment_id=dep_id,
                environment_id=env_id,
                image=tag,
                container_port=8080,
                environment={},
            )

            async def record(_p: Probe) -> None:
                return None

            async with httpx.AsyncClient() as http:
                url = check_url(running.url, "/healthz")

                def probe(url: str = url, http: httpx.AsyncClient = http) -> Any:
                    return probe_http(http, url, FAST)

                def dead(dep_id: str = dep_id) -> Any:
                    return _async(releaser.dead_reason(dep_id))

                verdict = await verify(probe, record, FAST, dead_reason=dead)
            assert not verdict.healthy, name
            assert verdict.reason
    finally:
        assert len(_cleanup_list(client, env_id)) == 2


async def _async(value):
    return value


def _cleanup_list(client, env_id):
    return DockerReleaser(client).remove_environment(env_id)


async def test_zero_downtime_swap_keeps_only_the_new_container(client, tmp_path: Path):
    env_id = str(uuid.uuid4())
    tag = "forgeline/test-swap:v1"
    client.images.build(path=str(write_context(tmp_path / "a", HEALTHY)), tag=tag)
    releaser = DockerReleaser(client)
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        first = releaser.run(
            deployment_id=old, environment_id=env_id, image=tag, container_port=8080, environment={}
        )
        second = releaser.run(
            deployment_id=new, environment_id=env_id, image=tag, container_port=8080, environment={}
        )
        assert first.host_port != second.host_port
        assert releaser.retire_others(env_id, new) == [old]
        assert [c.name for c in releaser.managed(env_id)] == [container_name(new)]
    finally:
        _cleanup(client, env_id)


def test_generated_dockerfile_for_a_static_site_builds_without_a_registry(client, tmp_path: Path):
    site = tmp_path / "site"
    (site / "dist").mkdir(parents=True)
    (site / "dist" / "index.html").write_text("static")
    (site / "package.json").write_text('{"scripts": {"build": "vite build"}}')
    lines: list[str] = []
    built = ImageBuilder(client).build(
        site,
        tag="forgeline/test-static:1",
        dockerfile=None,
        output_dir=None,
        framework=None,
        on_line=lines.append,
    )
    assert built.generated_dockerfile
    assert client.images.get("forgeline/test-static:1")


def test_build_failures_are_clear(client, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildFailed):
        ImageBuilder(client).build(
            empty,
            tag="forgeline/x:1",
            dockerfile=None,
            output_dir=None,
            framework=None,
            on_line=lambda _l: None,
        )
    (empty / "Dockerfile").write_text("FROM scratch\nRUN /nope\n")
    with pytest.raises(BuildFailed):
        ImageBuilder(client).build(
            empty,
            tag="forgeline/x:1",
            dockerfile=None,
            output_dir=None,
            framework=None,
            on_line=lambda _l: None,
        )
    with pytest.raises(ValidationFailed):
        ImageBuilder(client).build(
            empty,
            tag="forgeline/x:1",
            dockerfile="missing.Dockerfile",
            output_dir=None,
            framework=None,
            on_line=lambda _l: None,
        )


def test_unavailable_providers_are_refused():
    assert require_available("Docker") == "docker"
    for name in ("vercel", "netlify", "cloudflare", "gcp", "azure"):
        with pytest.raises(ProviderUnavailable, match="provider not available"):
            require_available(name)
    with pytest.raises(ValidationFailed):
        require_available("heroku")


def test_static_publish_and_path_resolution(tmp_path: Path):
    root = tmp_path / "out"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("home")
    (root / "docs" / "index.html").write_text("docs")
    store = LocalObjectStore(tmp_path / "objects")
    files = publish_directory(store, root, "deployments/d1/site")
    assert sorted(files) == ["docs/index.html", "index.html"]
    assert store.get_bytes(resolve_site_key("deployments/d1/site", "") or "") == b"home"
    assert store.get_bytes(resolve_site_key("deployments/d1/site", "docs/") or "") == b"docs"
    assert resolve_site_key("deployments/d1/site", "../d2/site/index.html") is None


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_website_publish_records_cost(moto_endpoint: str, tmp_path: Path):
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    store = LocalObjectStore(tmp_path / "objects")
    root = tmp_path / "out"
    root.mkdir()
    (root / "index.html").write_text("<h1>v1</h1>")
    (root / "old.html").write_text("old")
    publish_directory(store, root, "p1")
    publisher = S3WebsitePublisher(s3, endpoint_url=moto_endpoint)
    site = publisher.publish(store, "p1", "forgeline-site-test", "us-east-1")
    assert site.objects == 2 and site.monthly_cost >= estimated_monthly_cost(0)
    assert (
        s3.get_bucket_website(Bucket="forgeline-site-test")["IndexDocument"]["Suffix"]
        == "index.html"
    )
    assert "s3:GetObject" in s3.get_bucket_policy(Bucket="forgeline-site-test")["Policy"]
    assert publisher.probe("forgeline-site-test") == (True, None)
    # A second release removes objects the new site no longer has.
    (root / "old.html").unlink()
    publish_directory(store, root, "p2")
    publisher.publish(store, "p2", "forgeline-site-test", "us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="forgeline-site-test")["Contents"]]
    assert keys == ["index.html"]
    publisher.delete_site("forgeline-site-test")
    assert publisher.probe("forgeline-site-test")[0] is False
