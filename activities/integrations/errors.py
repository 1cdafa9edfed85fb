"""The forges' errors as Temporal retry decisions: a rate limit waits the delay the forge asked
for, an outage retries with backoff, a refusal never retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.exceptions import ApplicationError

from infra.forges import ForgeRateLimited, ForgeRejected, ForgeUnavailable
from workflows.integrations_models import FORGE_REJECTED_ERROR


@asynccontextmanager
async def forge_errors() -> AsyncIterator[None]:
    try:
        yield
    except ForgeRateLimited as exc:
        raise ApplicationError(
            str(exc),
            type="ForgeRateLimited",
            next_retry_delay=timedelta(seconds=max(exc.retry_after, 1.0)),
        ) from exc
    except ForgeUnavailable as exc:
        raise ApplicationError(str(exc), type="ForgeUnavailable") from exc
    except ForgeRejected as exc:
        raise ApplicationError(str(exc), type=FORGE_REJECTED_ERROR) from exc
