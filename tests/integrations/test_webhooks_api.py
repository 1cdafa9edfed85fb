"""The webhook receivers over HTTP on real Postgres and Temporal: verification before anything is
written (a refused delivery leaves only the rejected-delivery counter), ping, size cap, hostile
payloads, deleted refs, dedup of concurrent redeliveries (one row, one workflow, one run), GitLab's
token, and a redelivery after a crash or a failed processing. (Matching by the payload's URL and
the webhook secret's rotation: test_webhook_secrets.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from core.integrations.signatures import github_signature
from db.models.integrations import WebhookPayload
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import connect_project as _connect
from tests.integrations.support import (
    deliveries_of,
    github_headers,
    github_push,
    integrations_worker,
    runs_of,
)
from tests.integrations.webhook_support import SHA1, SHA2, post_github, resolve_forges_publicly
from workflows.integrations_models import webhook_delivery_workflow_id
from workflows.webhook_delivery import WebhookDeliveryWorkflow


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_forges_publicly(monkeypatch)


@pytest.fixture
async def connected(session_maker: Any, settings: Settings, tmp_path: Path) -> Any:
    org = await make_org(session_maker)
    return await _connect(
        session_maker,
        settings,
        org.org_id,
        url=str(tmp_path / "not-cloned"),
        pipelines=[{"on_push": {"branches": ["main"]}}],
    )


def rejected(app: Any) -> int:
    counter = getattr(app.state, "rejected_deliveries", None)
    return 0 if counter is None else counter.total()


async def test_bad_signatures_write_nothing(api_client, app, session_maker, connected) -> None:
    body = github_push("refs/heads/main", SHA2, SHA1)
    good = github_headers(connected.secret, body)
    cases: list[dict[str, Any]] = [
        {k: v for k, v in good.items() if k != "X-Hub-Signature-256"},
        {**good, "X-Hub-Signature-256": github_signature("wrong-secret", body)},
        {**good, "X-Hub-Signature-256": "sha256=" + "0" * 64},
        {**good, "X-Hub-Signature-256": "sha1=" + "0" * 40},
        {**good, "X-Hub-Signature-256": "sha256=ünïcode".encode()},
    ]
    before = rejected(app)
    for headers in cases:
        r = await post_github(api_client, connected.repository_id, body, headers)
        assert r.status_code == 401, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    # The signature covers the exact bytes: one byte changed is refused.
    tampered = body.replace(b"main", b"mair")
    r = await post_github(api_client, connected.repository_id, tampered, good)
    assert r.status_code == 401
    assert rejected(app) == before + len(cases) + 1
    assert await deliveries_of(session_maker, connected.project_id) == []


async def test_unknown_repository_unsupported_event_and_ping(
    api_client, app, session_maker, connected
) -> None:
    body = github_push("refs/heads/main", SHA2, SHA1, clone_url="https://github.com/no/such.git")
    headers = github_headers(connected.secret, body)
    r = await post_github(api_client, uuid.uuid4(), body, headers)
    assert r.status_code == 404 and "repository" in r.json()["detail"]
    r = await post_github(api_client, None, body, headers)  # no URL matches either
    assert r.status_code == 404
    r = await api_client.post("/v1/webhooks/github?repository=not-a-uuid", content=body)
    assert r.status_code == 422

    issue = json.dumps({"action": "opened", "issue": {}}).encode()
    r = await post_github(
        api_client,
        connected.repository_id,
        issue,
        github_headers(connected.secret, issue, "issues"),
    )
    assert r.status_code == 400 and "not supported" in r.json()["detail"]

    ping = json.dumps({"zen": "Design for failure.", "hook_id": 1}).encode()
    r = await post_github(
        api_client, connected.repository_id, ping, github_headers(connected.secret, ping, "ping")
    )
    assert r.status_code == 200 and r.json()["status"] == "pong"
    assert await deliveries_of(session_maker, connected.project_id) == []


async def test_hostile_payloads(api_client, settings, session_maker, connected) -> None:
    repo = connected.repository_id
    for body in (
        b"not json",
        b"[1, 2]",
        b'{"ref": "refs/heads/main"}',
        github_push("refs/heads/a..b", SHA2, SHA1),
        github_push("refs/heads/main", "x" * 40, SHA1),
        json.dumps({"ref": "refs/heads/main\u0000", "after": SHA2}).encode(),
        "\xff\xfe".encode("latin-1"),
    ):
        r = await post_github(api_client, repo, body, github_headers(connected.secret, body))
        assert r.status_code == 400, (body[:40], r.text)
    body = github_push("refs/heads/main", SHA2, SHA1)
    bad_id = github_headers(connected.secret, body, delivery="../../etc/passwd")
    r = await post_github(api_client, repo, body, bad_id)
    assert r.status_code == 400
    # Larger than other requests may be (GitHub sends up to 25 MB), under the webhook cap.
    large = github_push("refs/heads/main", SHA2, SHA1, commits=[{"message": "x" * 1000}] * 2000)
    assert len(large) > settings.max_request_body_bytes
    r = await post_github(api_client, repo, large, github_headers(connected.secret, large))
    assert r.status_code == 202, r.text
    # Over the cap: refused before the body is read or verified.
    huge = b"{" + b" " * (settings.webhook_max_body_bytes + 1) + b"}"
    r = await post_github(api_client, repo, huge, {"X-GitHub-Event": "push"})
    assert r.status_code == 413
    assert len(await deliveries_of(session_maker, connected.project_id)) == 1


async def test_deleted_branch_is_recorded_and_ignored(
    api_client, temporal_client: Client, session_maker, connected
) -> None:
    body = github_push("refs/heads/main", "0" * 40, SHA1, deleted=True)
    headers = github_headers(connected.secret, body)
    r = await post_github(api_client, connected.repository_id, body, headers)
    assert r.status_code == 202 and r.json()["status"] == "ignored"
    rows = await deliveries_of(session_maker, connected.project_id)
    assert [row.status for row in rows] == ["ignored"]
    assert "x-hub-signature-256" not in rows[0].headers  # never the signature


async def test_concurrent_redeliveries_start_one_run(
    api_client, app, temporal_client, settings, session_maker, connected, task_queue
) -> None:
    body = github_push("refs/heads/main", SHA2, SHA1)
    headers = github_headers(connected.secret, body, delivery=str(uuid.uuid4()))
    responses = await asyncio.gather(
        *(post_github(api_client, connected.repository_id, body, headers) for _ in range(20))
    )
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 19
    assert len({r.json()["workflow_id"] for r in responses}) == 1
    rows = await deliveries_of(session_maker, connected.project_id)
    assert len(rows) == 1 and rows[0].signature_valid
    async with integrations_worker(
        temporal_client, settings, session_maker, run_task_queue=task_queue
    ):
        handle = temporal_client.get_workflow_handle_for(
            WebhookDeliveryWorkflow.run,
            webhook_delivery_workflow_id("github", headers["X-GitHub-Delivery"]),
        )
        outcome = await handle.result()
        assert outcome.status == "processed" and len(outcome.run_ids) == 1
        # Redelivered after the workflow finished: still one run.
        again = await post_github(api_client, connected.repository_id, body, headers)
        assert again.status_code == 202 and again.json()["status"] == "duplicate"
    runs = await runs_of(session_maker, connected.pipeline_ids)
    assert len(runs) == 1
    run = runs[0]
    assert (run.trigger, run.branch, run.commit_sha) == ("push", "main", SHA2)
    assert run.metadata_["forge"]["repository"] == "acme/widgets"
    rows = await deliveries_of(session_maker, connected.project_id)
    assert rows[0].status == "processed" and rows[0].processed_at is not None


async def test_gitlab_token_and_idempotency_key(api_client, app, session_maker, connected) -> None:
    payload = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "before": SHA1,
        "after": SHA2,
        "project": {"path_with_namespace": "acme/widgets", "git_http_url": "https://gl/x.git"},
    }
    body = json.dumps(payload).encode()
    url = f"/v1/webhooks/gitlab?repository={connected.repository_id}"
    base = {"X-Gitlab-Event": "Push Hook", "Content-Type": "application/json"}
    r = await api_client.post(url, content=body, headers={**base, "X-Gitlab-Token": "nope"})
    assert r.status_code == 401
    key = str(uuid.uuid4())
    headers = {**base, "X-Gitlab-Token": connected.secret, "Idempotency-Key": key}
    first = await api_client.post(
        url, content=body, headers={**headers, "X-Gitlab-Event-UUID": str(uuid.uuid4())}
    )
    retry = await api_client.post(
        url, content=body, headers={**headers, "X-Gitlab-Event-UUID": str(uuid.uuid4())}
    )
    assert (first.json()["status"], retry.json()["status"]) == ("accepted", "duplicate")
    rows = await deliveries_of(session_maker, connected.project_id)
    assert [(row.provider, row.delivery_id) for row in rows] == [("gitlab", key)]


async def test_redelivery_after_a_crash_between_commit_and_start(
    api_client, temporal_client, settings, session_maker, connected, task_queue
) -> None:
    """The API stored the delivery and died before starting its workflow: the forge's
    redelivery finds the row and starts the workflow it derives from it, once."""
    body = github_push("refs/heads/main", SHA2, SHA1)
    delivery = str(uuid.uuid4())
    async with session_maker() as session:
        session.add(
            WebhookPayload(
                id=uuid.uuid4(),
                provider="github",
                delivery_id=delivery,
                event_type="push",
                organization_id=connected.org_id,
                project_id=connected.project_id,
                payload=json.loads(body),
                headers={},
                signature_valid=True,
            )
        )
        await session.commit()
    headers = github_headers(connected.secret, body, delivery=delivery)
    async with integrations_worker(
        temporal_client, settings, session_maker, run_task_queue=task_queue
    ):
        r = await post_github(api_client, connected.repository_id, body, headers)
        assert r.status_code == 202 and r.json()["status"] == "duplicate"
        handle = temporal_client.get_workflow_handle_for(
            WebhookDeliveryWorkflow.run, r.json()["workflow_id"]
        )
        assert (await handle.result()).status == "processed"
    assert len(await runs_of(session_maker, connected.pipeline_ids)) == 1


async def test_failed_processing_is_retried_by_a_redelivery(
    api_client, temporal_client, settings, session_maker, connected, task_queue
) -> None:
    """Processing that failed (here: its delivery row vanished) is recorded as failed and
    started again by the forge's redelivery; one that succeeded never is."""
    from temporalio.client import WorkflowFailureError

    from core.integrations.deliveries import start_processing
    from workflows.integrations_models import ForgeEvent

    delivery = str(uuid.uuid4())
    event = ForgeEvent(
        provider="github",
        delivery_id=delivery,
        kind="push",
        repository_id=str(connected.repository_id),
        project_id=str(connected.project_id),
        organization_id=str(connected.org_id),
        forge_repository="acme/widgets",
        ref_name="main",
        head_sha=SHA2,
        before_sha=SHA1,
    )
    body = github_push("refs/heads/main", SHA2, SHA1)
    headers = github_headers(connected.secret, body, delivery=delivery)
    async with integrations_worker(
        temporal_client, settings, session_maker, run_task_queue=task_queue
    ):
        workflow_id = await start_processing(
            temporal_client, str(uuid.uuid4()), event, task_queue=settings.integrations_task_queue
        )
        handle = temporal_client.get_workflow_handle_for(WebhookDeliveryWorkflow.run, workflow_id)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        r = await post_github(api_client, connected.repository_id, body, headers)
        assert r.status_code == 202 and r.json()["workflow_id"] == workflow_id
        retried = temporal_client.get_workflow_handle_for(WebhookDeliveryWorkflow.run, workflow_id)
        assert (await retried.result()).status == "processed"
        again = await post_github(api_client, connected.repository_id, body, headers)
        assert again.json()["status"] == "duplicate"
        assert (await retried.result()).status == "processed"
    # The failed attempt had already started the run: the retry found it (one run).
    assert len(await runs_of(session_maker, connected.pipeline_ids)) == 1
    rows = await deliveries_of(session_maker, connected.project_id)
    assert [row.status for row in rows] == ["processed"]
