"""Tag pushes whose names carry shell metacharacters and unicode: the run records the tag as the
forge named it, nothing in it is executed, and a tag the filter does not admit starts nothing."""

from __future__ import annotations

from pathlib import Path

from tests.integrations.support import (
    connect_repo,
    deliver,
    git,
    github_push,
    make_git_repo,
    runs_of,
)


async def test_hostile_tag_names_are_data(
    api_client, temporal_client, settings, session_maker, tmp_path: Path, worker
) -> None:
    repo, first = make_git_repo(tmp_path)
    connected = await connect_repo(
        session_maker, settings, repo, pipelines=[{"on_push": {"tags": ["v*"]}}]
    )
    (tags,) = connected.pipeline_ids
    hostile = "v1$(touch${IFS}pwned);`id`|&ünï😀"
    git(repo, "tag", hostile, first)
    marker_names = ("pwned", "pwned;")
    outcome = await deliver(
        api_client, temporal_client, connected, github_push(f"refs/tags/{hostile}", first)
    )
    assert outcome.status == "processed", outcome
    (run,) = await runs_of(session_maker, [tags])
    assert run.branch is None and run.commit_sha == first
    assert run.metadata_["forge"]["tag"] == hostile

    # A tag the filter does not admit, with the same payload shape, starts nothing.
    other = "release-$(id)"
    git(repo, "tag", other, first)
    ignored = await deliver(
        api_client, temporal_client, connected, github_push(f"refs/tags/{other}", first)
    )
    assert ignored.status == "ignored", ignored
    assert len(await runs_of(session_maker, [tags])) == 1
    for name in marker_names:
        assert not (Path.cwd() / name).exists() and not (tmp_path / name).exists()
