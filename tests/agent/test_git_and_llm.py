"""Unit tests of the git clone wrapper (limits, refusals, token hygiene) and LLM error mapping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anthropic
import httpx2 as httpx  # the HTTP client the anthropic SDK is built on
import pytest

from forgeline.url_safety import UnsafeRepositoryUrl
from infra.git import (
    ASKPASS_SCRIPT,
    CloneLimits,
    RepositoryTooLarge,
    RepositoryUnavailable,
    clone_repository,
)
from infra.llm import cost_of, to_application_error
from tests.agent.corpus import CORPUS, write_repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(CORPUS[1], tmp_path_factory.mktemp("git"), git=True)


async def test_shallow_clone_of_branch_and_commit(repo: Path, tmp_path: Path) -> None:
    first = await clone_repository(
        str(repo), tmp_path / "a", branch="main", token="s3cr3t-token", allow_local=True
    )
    assert (first.path / "package.json").exists() and len(first.commit_sha) == 40
    shallow = subprocess.run(
        ["git", "-C", str(first.path), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shallow.stdout.strip() == "true"
    config = (first.path / ".git" / "config").read_text()
    assert "s3cr3t-token" not in config
    pinned = await clone_repository(
        str(repo), tmp_path / "b", commit=first.commit_sha, allow_local=True
    )
    assert pinned.commit_sha == first.commit_sha


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% /tmp/pwned",
        "file:///etc",
        "https://user:pw@github.com/a/b.git",
        "https://10.0.0.1/a/b.git",
        "--upload-pack=touch /tmp/x",
    ],
)
async def test_hostile_urls_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeRepositoryUrl):
        await clone_repository(url, tmp_path / "x", allow_local=False)
    assert not (tmp_path / "x").exists()


async def test_local_repos_need_the_operator_switch(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeRepositoryUrl):
        await clone_repository(str(repo), tmp_path / "x", allow_local=False)


async def test_bad_refs_and_limits(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeRepositoryUrl):
        await clone_repository(
            str(repo), tmp_path / "x", branch="--upload-pack=x", allow_local=True
        )
    with pytest.raises(RepositoryUnavailable):
        await clone_repository(str(repo), tmp_path / "x", branch="nope", allow_local=True)
    with pytest.raises(RepositoryTooLarge, match="more than 2 files"):
        await clone_repository(
            str(repo), tmp_path / "x", allow_local=True, limits=CloneLimits(max_files=2)
        )
    with pytest.raises(RepositoryTooLarge, match="larger than"):
        await clone_repository(
            str(repo), tmp_path / "y", allow_local=True, limits=CloneLimits(max_bytes=1000)
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_askpass_answers_from_the_environment(tmp_path: Path) -> None:
    script = tmp_path / "askpass.sh"
    script.write_text(ASKPASS_SCRIPT)
    script.chmod(0o700)
    env = {**os.environ, "FORGELINE_GIT_TOKEN": "tok-123"}
    user = subprocess.run(
        [str(script), "Username for 'https://github.com': "],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    password = subprocess.run(
        [str(script), "Password for 'https://x@github.com': "],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert user.stdout.strip() == "x-access-token" and password.stdout.strip() == "tok-123"


def _status_error(status: int, headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    request = httpx.Request("POST", "https://api.anthropic.test/v1/messages")
    response = httpx.Response(
        status,
        headers=headers or {},
        request=request,
        json={"type": "error", "error": {"type": "x", "message": f"status {status}"}},
    )
    cls = {
        429: anthropic.RateLimitError,
        400: anthropic.BadRequestError,
        401: anthropic.AuthenticationError,
    }.get(status, anthropic.InternalServerError)
    return cls(f"status {status}", response=response, body=response.json())


def test_llm_errors_map_to_temporal_retry_semantics() -> None:
    limited = to_application_error(_status_error(429, {"retry-after": "7"}))
    assert not limited.non_retryable and limited.type == "LlmRateLimited"
    assert limited.next_retry_delay is not None and limited.next_retry_delay.total_seconds() == 7
    overloaded = to_application_error(_status_error(529))
    assert not overloaded.non_retryable and overloaded.next_retry_delay is None
    assert not to_application_error(_status_error(503)).non_retryable
    for status in (400, 401):
        rejected = to_application_error(_status_error(status))
        assert rejected.non_retryable and rejected.type == "LlmRequestRejected"
    timeout = to_application_error(
        anthropic.APITimeoutError(request=httpx.Request("POST", "https://x"))
    )
    assert not timeout.non_retryable
    huge = to_application_error(_status_error(429, {"retry-after": "99999"}))
    assert huge.next_retry_delay is not None and huge.next_retry_delay.total_seconds() == 300


def test_cost_is_priced_per_model() -> None:
    assert str(cost_of("claude-sonnet-4-5", 1_000_000, 1_000_000)) == "18.000000"
    assert str(cost_of("claude-haiku-4-5", 1_000_000, 0)) == "1.000000"
