"""Receiving a forge webhook: verify before anything else, then store the delivery once (unique
provider + delivery ID) and start its processing workflow under an ID derived from it, so any
number of concurrent redeliveries start one workflow. The work happens in the workflow."""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.integrations import events
from core.integrations import repository as queries
from core.integrations.errors import (
    DeliveryTooLarge,
    MalformedDelivery,
    SignatureInvalid,
    UnknownRepository,
)
from core.integrations.signatures import github_signature_valid, gitlab_token_valid
from forgeline.crypto import decrypt_str
from forgeline.errors import DomainError
from forgeline.safe_parsing import load_json
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import INTEGRATIONS_TASK_QUEUE, Settings
from workflows.integrations_models import (
    DeliveryInput,
    ForgeEvent,
    ForgeProvider,
    webhook_delivery_workflow_id,
)
from workflows.webhook_delivery import WebhookDeliveryWorkflow

DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
# Headers kept with the delivery: what identifies it, never a signature or token.
_KEPT_HEADERS = (
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-webhook-uuid",
    "idempotency-key",
    "user-agent",
)


class RejectedDeliveries:
    """Refused deliveries by provider and reason: the only trace a refused delivery leaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def count(self, provider: str, reason: str) -> None:
        with self._lock:
            self._counts[(provider, reason)] += 1

    @contextlib.contextmanager
    def counted(self, provider: str) -> Iterator[None]:
        """A refusal (a DomainError) raised inside is counted under its reason, then raised."""
        try:
            yield
        except DomainError as exc:
            self.count(provider, exc.type_slug)
            raise

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f"{p}:{r}": n for (p, r), n in sorted(self._counts.items())}

    def total(self, provider: str | None = None) -> int:
        with self._lock:
            return sum(n for (p, _), n in self._counts.items() if provider in (None, p))


@dataclass(frozen=True)
class DeliveryReceipt:
    status: Literal["pong", "accepted", "duplicate", "ignored"]
    delivery_id: str | None = None
    workflow_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One webhook request as received: raw body (the signature covers it), lower-case headers."""

    provider: ForgeProvider
    headers: Mapping[str, str]
    body: bytes
    repository_id: uuid.UUID | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def event_type(self) -> str:
        name = "x-github-event" if self.provider == "github" else "x-gitlab-event"
        return (self.header(name) or "").strip()

    @property
    def delivery_id(self) -> str | None:
        if self.provider == "github":
            return self.header("x-github-delivery")
        # Idempotency-Key stays the same across GitLab's retries of one event.
        return self.header("idempotency-key") or self.header("x-gitlab-event-uuid")


def parse_payload(body: bytes) -> dict[str, Any]:
    if b"\\u0000" in body:
        raise MalformedDelivery("the payload contains NUL characters")
    try:
        # Read before the signature is checked: bounded in depth (its size is capped upstream).
        payload = load_json(body.decode("utf-8"), max_bytes=max(len(body), 1))
    except (UnicodeDecodeError, ValueError) as exc:  # UnsafeDocument is a ValueError
        raise MalformedDelivery("the payload is not JSON (content type application/json)") from exc
    if not isinstance(payload, dict):
        raise MalformedDelivery("the payload is not a JSON object")
    return payload


def _payload_urls(provider: str, payload: dict[str, Any]) -> tuple[str, ...]:
    holder = payload.get("repository" if provider == "github" else "project")
    if not isinstance(holder, dict):
        return ()
    keys = ("clone_url", "html_url", "ssh_url", "git_http_url", "web_url", "git_ssh_url")
    return tuple(v for k in keys if isinstance(v := holder.get(k), str) and len(v) < 1000)


def _verified(
    delivery: Delivery, candidates: list[queries.RepositoryCandidate], settings: Settings
) -> queries.RepositoryCandidate:
    for candidate in candidates:
        if candidate.secret_encrypted is None:
            continue
        secret = decrypt_str(candidate.secret_encrypted, settings)
        if delivery.provider == "github":
            valid = github_signature_valid(
                secret, delivery.body, delivery.header("x-hub-signature-256")
            )
        else:
            valid = gitlab_token_valid(secret, delivery.header("x-gitlab-token"))
        if valid:
            return candidate
    if all(c.secret_encrypted is None for c in candidates):
        raise SignatureInvalid(
            "the repository has no webhook secret: create one with "
            "POST /v1/projects/{id}/repository/webhook-secret"
        )
    what = "X-Hub-Signature-256" if delivery.provider == "github" else "X-Gitlab-Token"
    raise SignatureInvalid(f"{what} does not match the repository's webhook secret")


async def authenticate(
    session: AsyncSession, settings: Settings, delivery: Delivery
) -> tuple[queries.RepositoryCandidate, dict[str, Any]]:
    """The delivery's repository, proven by its secret, and the parsed payload."""
    if len(delivery.body) > settings.webhook_max_body_bytes:
        raise DeliveryTooLarge(f"payloads over {settings.webhook_max_body_bytes} bytes are refused")
    if delivery.repository_id is not None:
        candidates = await queries.candidates_by_id(session, delivery.repository_id)
        payload: dict[str, Any] | None = None
    else:
        payload = parse_payload(delivery.body)
        candidates = await queries.candidates_by_urls(
            session, _payload_urls(delivery.provider, payload)
        )
    if not candidates:
        raise UnknownRepository("no connected repository matches this delivery")
    candidate = _verified(delivery, candidates, settings)
    return candidate, payload if payload is not None else parse_payload(delivery.body)


def delivery_id_of(delivery: Delivery) -> str:
    """The forge's ID of the delivery (redeliveries repeat it), refused when absent or odd."""
    delivery_id = delivery.delivery_id
    if delivery_id is None or not DELIVERY_ID.match(delivery_id):
        raise MalformedDelivery("the delivery ID header is missing or not an ID")
    return delivery_id


def stored_headers(delivery: Delivery) -> dict[str, str]:
    return {k: delivery.headers[k][:300] for k in _KEPT_HEADERS if k in delivery.headers}


async def receive(
    session: AsyncSession,
    temporal: Callable[[], Awaitable[Client]],
    settings: Settings,
    delivery: Delivery,
    rejected: RejectedDeliveries,
) -> DeliveryReceipt:
    """Verify, store once (committed), start the processing workflow. A refused delivery raises
    a DomainError (a 4xx) after counting it, and writes nothing."""
    with rejected.counted(delivery.provider):
        candidate, payload = await authenticate(session, settings, delivery)
    return await accept(
        session,
        temporal,
        delivery,
        candidate,
        payload,
        rejected,
        task_queue=settings.integrations_task_queue,
    )


async def accept(
    session: AsyncSession,
    temporal: Callable[[], Awaitable[Client]],
    delivery: Delivery,
    candidate: queries.RepositoryCandidate,
    payload: dict[str, Any],
    rejected: RejectedDeliveries,
    *,
    task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> DeliveryReceipt:
    """An authenticated delivery of `candidate`'s repository: stored once, then processed on
    `task_queue` (the settings' integrations queue)."""
    with rejected.counted(delivery.provider):
        parsed = (
            events.parse_github(delivery.event_type, payload)
            if delivery.provider == "github"
            else events.parse_gitlab(delivery.event_type, payload)
        )
        if isinstance(parsed, events.Ping):
            return DeliveryReceipt(status="pong")
        delivery_id = delivery_id_of(delivery)
    values: dict[str, Any] = {
        "provider": delivery.provider,
        "delivery_id": delivery_id,
        "event_type": delivery.event_type[:100],
        "organization_id": candidate.organization_id,
        "project_id": candidate.project_id,
        "payload": payload,
        "headers": stored_headers(delivery),
        "signature_valid": True,
        "status": "ignored" if isinstance(parsed, events.Ignored) else "received",
    }
    row_id, created = await queries.insert_delivery(session, values)
    await session.commit()
    if isinstance(parsed, events.Ignored):
        return DeliveryReceipt(status="ignored", delivery_id=delivery_id, reason=parsed.reason)
    event = ForgeEvent(
        provider=delivery.provider,
        delivery_id=delivery_id,
        repository_id=str(candidate.repository_id),
        project_id=str(candidate.project_id),
        organization_id=str(candidate.organization_id) if candidate.organization_id else None,
        **parsed.model_dump(exclude={"repository_urls"}),
    )
    # Temporal is reached only for a verified, stored delivery.
    workflow_id = await start_processing(
        await temporal(), str(row_id), event, task_queue=task_queue
    )
    return DeliveryReceipt(
        status="accepted" if created else "duplicate",
        delivery_id=delivery_id,
        workflow_id=workflow_id,
    )


async def start_processing(
    client: Client, row_id: str, event: ForgeEvent, *, task_queue: str = INTEGRATIONS_TASK_QUEUE
) -> str:
    """Start the delivery's workflow; a redelivery starts nothing unless processing failed."""
    workflow_id = webhook_delivery_workflow_id(event.provider, event.delivery_id)
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            WebhookDeliveryWorkflow.run,
            DeliveryInput(delivery_row_id=row_id, event=event),
            id=workflow_id,
            task_queue=task_queue,
            # A processed delivery is never processed again; a failed one is, when redelivered.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=forgeline_search_attributes(
                "webhook_delivery",
                organization_id=uuid.UUID(event.organization_id) if event.organization_id else None,
                project_id=uuid.UUID(event.project_id),
            ),
            memo={"event": event.kind, "ref": event.ref_name, "sha": event.head_sha},
        )
    return workflow_id
