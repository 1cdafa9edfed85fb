"""The release provider registry and the deployment activity contracts: every available provider
implements the one interface; names are normalised once and anything else is refused with a
clear domain error; the registered activity names are exactly those recorded histories use."""

from __future__ import annotations

import inspect

import pytest

from activities.deployments.pipeline_stage import PipelineDeployActivities
from core.deployments.providers import releases_image
from core.deployments.providers.base import ReleaseContext, ReleaseProvider
from core.deployments.providers.registry import ReleaseProviders
from forgeline.errors import ProviderUnavailable, ValidationFailed
from infra.proxy_routes import CaddyRoutes
from infra.storage import LocalObjectStore
from tests.deployments.helpers import make_activities
from workflows.contract import ActivityContract
from workflows.contracts import deployments as contracts

# The activity names of the deployment workflows before the contracts existed (replay).
RECORDED_NAMES = {
    "deployment_record_status",
    "deployment_ensure_row",
    "deployment_record_execution",
    "deployment_record_decision",
    "deployment_acquire_lock",
    "deployment_build",
    "deployment_release",
    "deployment_verify_health",
    "deployment_monitor_probe",
    "deployment_still_active",
    "deployment_collect_logs",
    "deployment_retire",
    "deployment_activate",
    "deployment_record_usage",
    "deployment_previous_healthy",
    "deployment_newer_live",
    "deployment_restore_previous",
    "deployment_record_rollback",
    "deployment_teardown_environment",
    "prepare_pipeline_deployment",
}
PROTOCOL = ("build", "release", "verify", "retire", "restore", "teardown")


@pytest.fixture
def providers(settings, session_maker) -> ReleaseProviders:
    ctx = ReleaseContext(
        settings=settings, sessions=session_maker, store=LocalObjectStore(settings.objects_dir)
    )
    return ReleaseProviders(
        ctx,
        routes=CaddyRoutes(settings.proxy_admin_url, http_port=settings.proxy_http_port),
        docker_client=None,
        s3_factory=None,
        drain_seconds=0.0,
    )


@pytest.mark.parametrize("name", ["docker", "static", "aws", " Docker ", "STATIC\n"])
def test_every_available_provider_implements_the_interface(
    providers: ReleaseProviders, name: str
) -> None:
    provider: ReleaseProvider = providers.get(name)
    assert provider.name == name.strip().lower()
    for method in PROTOCOL:
        assert callable(getattr(provider, method)), (provider.name, method)
    assert releases_image(provider.name) == (provider.name == "docker")


@pytest.mark.parametrize("name", ["vercel", "netlify", "custom"])
def test_known_but_unavailable_providers_are_refused(
    providers: ReleaseProviders, name: str
) -> None:
    with pytest.raises(ProviderUnavailable):
        providers.get(name)


@pytest.mark.parametrize(
    "name", ["", "docker\x00", "../static", "aws;rm -rf /", "dockér", "s" * 10_000, "__init__"]
)
def test_hostile_provider_names_are_refused(providers: ReleaseProviders, name: str) -> None:
    with pytest.raises(ValidationFailed):
        providers.get(name)


def test_registered_activity_names_are_the_recorded_ones(settings, session_maker) -> None:
    activities = make_activities(settings, session_maker, None, None)  # type: ignore[arg-type]
    stage = PipelineDeployActivities(
        settings=settings,
        session_maker=session_maker,
        store=LocalObjectStore(settings.objects_dir),
    )
    registered = {
        getattr(fn, "__temporal_activity_definition").name
        for fn in [*activities.all(), *stage.all()]
    }
    declared = {c.name for _, c in inspect.getmembers(contracts) if isinstance(c, ActivityContract)}
    assert registered == declared == RECORDED_NAMES
