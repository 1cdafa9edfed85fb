"""Forge events to runs on real Postgres, Temporal and git: branch, tag and path filters with
changed paths computed from the repository (not the payload), pull requests against their merge
base, hostile branch names, forks, and a retried or concurrent run start creating each run once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from core.integrations import event_runs
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import (
    Connected,
    commit,
    connect_project,
    connect_repo,
    deliver,
    git,
    github_headers,
    github_pull,
    github_push,
    make_git_repo,
    runs_of,
)
from workflows.integrations_models import (
    ChangedPaths,
    DeliveryOutcome,
    ForgeEvent,
    StartRunsInput,
)


async def test_path_filters_use_changes_computed_from_git(
    api_client, temporal_client, settings: Settings, session_maker, tmp_path: Path, worker
) -> None:
    repo, first = make_git_repo(tmp_path)
    connected = await connect_repo(
        session_maker,
        settings,
        repo,
        pipelines=[
            {"on_push": {"branches": ["main"], "paths": ["src/**"]}},
            {"on_push": {"branches": ["main"], "paths_ignore": ["docs/**", "**.md"]}},
            {"on_push": {"branches": ["main"]}},
            {"on_push": {"branches": ["release/*"]}},
        ],
    )
    src_only, not_docs, every, releases = connected.pipeline_ids
    docs = commit(repo, {"docs/guide.md": "x", "README.md": "more"}, "docs")
    # The payload's own file lists are never read: a lying payload changes nothing.
    lying = github_push(
        "refs/heads/main", docs, first, commits=[{"added": ["src/evil.py"], "modified": []}]
    )
    outcome = await deliver(api_client, temporal_client, connected, lying)
    assert outcome.status == "processed"
    runs = await runs_of(session_maker, connected.pipeline_ids)
    assert [r.pipeline_id for r in runs] == [every]
    assert sorted(runs[0].metadata_["changed_paths"]) == ["README.md", "docs/guide.md"]

    code = commit(repo, {"src/app.py": "print(2)\n", "src/ünï cöde.py": "x"}, "code")
    await deliver(
        api_client, temporal_client, connected, github_push("refs/heads/main", code, docs)
    )
    runs = [r for r in await runs_of(session_maker, connected.pipeline_ids) if r.commit_sha == code]
    assert sorted(str(r.pipeline_id) for r in runs) == sorted(
        str(p) for p in (src_only, not_docs, every)
    )
    assert all(r.trigger == "push" and r.branch == "main" for r in runs)
    assert sorted(runs[0].metadata_["changed_paths"]) == ["src/app.py", "src/ünï cöde.py"]
    assert releases not in {r.pipeline_id for r in runs}

    # A base git does not have: changes unknown, so path filters match (as GitHub Actions).
    head = commit(repo, {"docs/other.md": "y"}, "more docs")
    unknown_base = "f" * 40
    await deliver(
        api_client, temporal_client, connected, github_push("refs/heads/main", head, unknown_base)
    )
    runs = [r for r in await runs_of(session_maker, connected.pipeline_ids) if r.commit_sha == head]
    assert len(runs) == 3
    assert all("changed_paths" not in r.metadata_ for r in runs)


async def test_tags_and_hostile_branch_names(
    api_client, temporal_client, settings, session_maker, tmp_path: Path, worker
) -> None:
    repo, first = make_git_repo(tmp_path)
    connected = await connect_repo(
        session_maker,
        settings,
        repo,
        pipelines=[
            {"on_push": {"tags": ["v[0-9]*"], "paths": ["nothing/**"]}},
            {"on_push": {"branches": ["feat/**"], "paths": ["src/**"]}},
        ],
    )
    tags, features = connected.pipeline_ids
    # Paths are not evaluated for tags.
    await deliver(api_client, temporal_client, connected, github_push("refs/tags/v1.2.0", first))
    (tag_run,) = await runs_of(session_maker, [tags])
    assert tag_run.branch is None and tag_run.metadata_["forge"]["tag"] == "v1.2.0"
    assert await deliver(
        api_client, temporal_client, connected, github_push("refs/tags/nightly", first)
    ) == DeliveryOutcome(
        delivery_row_id=str(await last_delivery_id(session_maker, connected)), status="ignored"
    )

    hostile = "feat/$(touch${IFS}pwned);`id`|&ünï😀"
    git(repo, "checkout", "-q", "-b", hostile)
    head = commit(repo, {"src/x.py": "1"}, "feature")
    marker = Path.cwd() / "pwned"
    await deliver(
        api_client, temporal_client, connected, github_push(f"refs/heads/{hostile}", head, first)
    )
    (feature_run,) = await runs_of(session_maker, [features])
    assert feature_run.branch == hostile and feature_run.metadata_["changed_paths"] == ["src/x.py"]
    assert not marker.exists() and not (tmp_path / "pwned").exists()


async def last_delivery_id(session_maker: Any, connected: Connected) -> uuid.UUID:
    from tests.integrations.support import deliveries_of

    rows = await deliveries_of(session_maker, connected.project_id)
    return max(rows, key=lambda r: r.received_at).id


async def test_pull_requests_against_their_merge_base(
    api_client, temporal_client, settings, session_maker, tmp_path: Path, worker
) -> None:
    repo, _ = make_git_repo(tmp_path)
    connected = await connect_repo(
        session_maker,
        settings,
        repo,
        pipelines=[
            {"on_pull_request": {"branches": ["main"], "paths": ["src/**"]}},
            {"on_pull_request": {"branches": ["main"], "types": ["closed"]}},
        ],
    )
    code, closed = connected.pipeline_ids
    git(repo, "checkout", "-q", "-b", "topic")
    head = commit(repo, {"src/feature.py": "1"}, "feature")
    git(repo, "checkout", "-q", "main")
    base = commit(repo, {"src/main_only.py": "1", "docs/x.md": "d"}, "main moves on")
    opened = github_pull("opened", 12, "topic", head, "main", base)
    outcome = await deliver(api_client, temporal_client, connected, opened, "pull_request")
    assert outcome.status == "processed"
    (run,) = await runs_of(session_maker, [code])
    # Only what the pull request changes since its merge base, not what main did meanwhile.
    assert run.metadata_["changed_paths"] == ["src/feature.py"]
    assert run.trigger == "pull_request" and run.branch == "topic"
    assert run.metadata_["forge"]["pr_number"] == 12
    labeled = github_pull("labeled", 12, "topic", head, "main", base)
    r = await api_client.post(
        f"/v1/webhooks/github?repository={connected.repository_id}",
        content=labeled,
        headers=github_headers(connected.secret, labeled, "pull_request"),
    )
    assert r.json()["status"] == "ignored"
    closing = github_pull("closed", 12, "topic", head, "main", base)
    await deliver(api_client, temporal_client, connected, closing, "pull_request")
    assert len(await runs_of(session_maker, [closed])) == 1
    assert len(await runs_of(session_maker, [code])) == 1


async def test_fork_pull_requests_start_nothing(
    api_client, temporal_client, settings, session_maker, tmp_path: Path, worker
) -> None:
    repo, first = make_git_repo(tmp_path)
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker, settings, org.org_id, url=str(repo), pipelines=[{"on_pull_request": {}}]
    )
    body = github_pull("opened", 3, "topic", first, "main", first).replace(
        b'"head": {"ref": "topic", "sha": "' + first.encode() + b'", "repo": {"full_name": "acme',
        b'"head": {"ref": "topic", "sha": "' + first.encode() + b'", "repo": {"full_name": "evil',
    )
    outcome = await deliver(api_client, temporal_client, connected, body, "pull_request")
    assert outcome.status == "ignored"
    assert await runs_of(session_maker, connected.pipeline_ids) == []


async def test_retried_and_concurrent_starts_create_each_run_once(
    temporal_client, settings, session_maker, tmp_path: Path, task_queue
) -> None:
    """A crash after the runs were created (the activity is retried) or the same start racing
    itself: one run per pipeline and delivery."""
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url=str(tmp_path / "unused"),
        pipelines=[{"on_push": {}}, {"on_push": {}}],
    )
    event = ForgeEvent(
        provider="github",
        delivery_id=str(uuid.uuid4()),
        kind="push",
        repository_id=str(connected.repository_id),
        project_id=str(connected.project_id),
        organization_id=str(org.org_id),
        forge_repository="acme/widgets",
        ref_name="main",
        head_sha="c" * 40,
    )
    inp = StartRunsInput(
        event=event,
        pipeline_ids=[str(p) for p in connected.pipeline_ids],
        changed=ChangedPaths(paths=["a"]),
    )

    async def start() -> list[str]:
        started = await event_runs.start_runs(
            session_maker,
            temporal_client,
            settings,
            inp,
            run_task_queue=task_queue,
            status_task_queue=task_queue,
        )
        return started.run_ids

    first = await start()
    results = await asyncio.gather(*(start() for _ in range(8)))
    assert len(first) == 2 and all(sorted(r) == sorted(first) for r in results)
    assert len(await runs_of(session_maker, connected.pipeline_ids)) == 2
