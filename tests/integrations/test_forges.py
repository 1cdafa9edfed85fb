"""The forge status clients against the local fake forge (real HTTP, no Temporal): how each
answer is classified (wait for the forge's delay, retry, give up) and the delay read from
Retry-After or the rate-limit reset headers."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from infra.forges import (
    CommitStatus,
    ForgeRateLimited,
    ForgeRejected,
    ForgeUnavailable,
    GitHubStatuses,
    GitLabStatuses,
    retry_after_seconds,
    status_client,
)
from tests.integrations.fake_forge import Failure, FakeForge

STATUS = CommitStatus(
    sha="a" * 40,
    state="cancelled",
    context="forgeline/ci",
    target_url="http://localhost:8000/v1/runs/1",
    description="Cancelled",
)


def test_retry_after_headers() -> None:
    now = 1_000_000.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "7"}), now=now) == 7
    date = formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"Retry-After": date}), now=now) == 30
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 90)}
    assert retry_after_seconds(httpx.Headers(reset), now=now) == 90
    gitlab = {"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(now) + 5)}
    assert retry_after_seconds(httpx.Headers(gitlab), now=now) == 5
    spare = {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": str(int(now) + 90)}
    assert retry_after_seconds(httpx.Headers(spare), now=now) is None
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"}), now=now) is None
    # A forge asking for days is asked again within the hour.
    assert ForgeRateLimited("x", 10**9).retry_after == 3600


async def test_github_answers_classified(forge: FakeForge) -> None:
    client = GitHubStatuses(forge.github_api_url, "ghp_token")
    forge.fail_next(
        Failure(500),
        Failure(403, {"Retry-After": "2"}, {"message": "secondary rate limit"}),
        Failure(
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 60)},
            {"message": "API rate limit exceeded"},
        ),
        Failure(403, body={"message": "Resource not accessible by integration"}),
        Failure(401, body={"message": "Bad credentials"}),
        Failure(404),
    )
    with pytest.raises(ForgeUnavailable):
        await client.set_status("acme/widgets", STATUS)
    with pytest.raises(ForgeRateLimited) as limited:
        await client.set_status("acme/widgets", STATUS)
    assert limited.value.retry_after == 2
    with pytest.raises(ForgeRateLimited) as limited:
        await client.set_status("acme/widgets", STATUS)
    assert 0 < limited.value.retry_after <= 60
    for _ in range(3):
        with pytest.raises(ForgeRejected):
            await client.set_status("acme/widgets", STATUS)
    await client.set_status("acme/widgets", STATUS)
    (accepted,) = forge.accepted()
    assert accepted.body["state"] == "error" and accepted.body["context"] == "forgeline/ci"
    for bad in ("no-slash", "a/b/c", "/x"):
        with pytest.raises(ForgeRejected):
            await client.set_status(bad, STATUS)


async def test_gitlab_answers_classified(forge: FakeForge) -> None:
    client = status_client(
        "gitlab",
        token="glpat",
        github_api_url=forge.github_api_url,
        gitlab_api_url=forge.gitlab_api_url,
    )
    assert isinstance(client, GitLabStatuses)
    forge.fail_next(
        Failure(429, {"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(time.time()) + 9)}),
        Failure(503),
        Failure(400, body={"message": "Cannot transition status via :cancel from :canceled"}),
        Failure(422, body={"message": "invalid"}),
    )
    with pytest.raises(ForgeRateLimited):
        await client.set_status("group/widgets", STATUS)
    with pytest.raises(ForgeUnavailable):
        await client.set_status("group/widgets", STATUS)
    await client.set_status("group/widgets", STATUS)  # already in that state: done
    with pytest.raises(ForgeRejected):
        await client.set_status("group/widgets", STATUS)
    await client.set_status("group/widgets", STATUS)
    assert forge.accepted()[-1].body["state"] == "canceled"
    assert forge.accepted()[-1].path.startswith("/api/v4/projects/group%2Fwidgets/statuses/")
    with pytest.raises(ForgeRejected):
        status_client("bitbucket", token="t", github_api_url="", gitlab_api_url="")


async def test_unreachable_forge_is_an_outage() -> None:
    # A loopback port nothing listens on.
    client = GitLabStatuses("http://127.0.0.1:9/api/v4", "glpat")
    with pytest.raises(ForgeUnavailable):
        await client.set_status("group/widgets", STATUS)
    github = GitHubStatuses("http://127.0.0.1:9", "ghp")
    with pytest.raises(ForgeUnavailable):
        await github.set_status("acme/widgets", STATUS)
