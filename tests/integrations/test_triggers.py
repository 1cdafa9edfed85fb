"""Trigger filters without services: GitHub Actions glob semantics, the triggers model's
validation, which events select a pipeline, signatures, and hostile payloads."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.integrations import events
from core.integrations.cron import InvalidCron, validate_cron
from core.integrations.errors import MalformedDelivery, UnsupportedEvent
from core.integrations.globs import InvalidPattern, compile_pattern, matches
from core.integrations.signatures import (
    github_signature,
    github_signature_valid,
    gitlab_token_valid,
)
from core.integrations.triggers import Triggers, parse_triggers, paths_selected, ref_selected
from workflows.integrations_models import ForgeEvent

SHA_A = "a" * 40
SHA_B = "b" * 40


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        # The GitHub Actions filter pattern cheat sheet.
        ("feature/*", "feature/my-branch", True),
        ("feature/*", "feature/your-branch", True),
        ("feature/*", "feature/a/b", False),
        ("feature/**", "feature/beta-a/my-branch", True),
        ("feature/**", "feature/mona/the/octocat", True),
        ("main", "main", True),
        ("main", "mainline", False),
        ("releases/mona-the-octocat", "releases/mona-the-octocat", True),
        ("*", "main", True),
        ("*", "releases/v1", False),
        ("**", "all/the/branches", True),
        ("*feature", "mona-feature", True),
        ("*feature", "feature", True),
        ("v2*", "v2", True),
        ("v2*", "v2.0.1", True),
        ("v[12].[0-9]+.[0-9]+", "v1.10.1", True),
        ("v[12].[0-9]+.[0-9]+", "v2.0.0", True),
        ("v[12].[0-9]+.[0-9]+", "v3.0.0", False),
        ("v[12].[0-9]+.[0-9]+", "v1..1", False),
        ("*.js", "app.js", True),
        ("*.js", "js/index.js", False),
        ("**.js", "js/index.js", True),
        ("docs/*", "docs/README.md", True),
        ("docs/*", "docs/file.txt", True),
        ("docs/*", "docs/a/b.md", False),
        ("docs/**", "docs/mona/octocat.txt", True),
        ("docs/**/*.md", "docs/a/markdown/file.md", True),
        ("docs/**/*.md", "docs/README.md", True),
        ("**/docs/**", "docs/hello.md", True),
        ("**/docs/**", "dir/docs/my-file.txt", True),
        ("**/docs/**", "space/docs/plan/space.doc", True),
        ("**/README.md", "README.md", True),
        ("**/README.md", "js/README.md", True),
        ("**/*src/**", "a/src/app.js", True),
        ("**/*src/**", "my-src/code/js/app.js", True),
        ("**/*-post.md", "my-post.md", True),
        ("**/*-post.md", "path/their-post.md", True),
        ("**/migrate-*.sql", "migrate-10909.sql", True),
        ("**/migrate-*.sql", "db/migrate-v1.0.sql", True),
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),
        ("colou?r", "color", True),
        ("colou?r", "colour", True),
        ("colou?r", "colouur", False),
        # Escapes and regex characters stay literal.
        (r"release\*", "release*", True),
        (r"release\*", "release1", False),
        ("a.b", "axb", False),
        ("(x)|y", "(x)|y", True),
        ("feat/$(rm -rf)", "feat/$(rm -rf)", True),
        ("fix/ünïcode-*", "fix/ünïcode-😀", True),
    ],
)
def test_actions_glob_semantics(pattern: str, value: str, expected: bool) -> None:
    assert matches([pattern], value) is expected


def test_last_matching_pattern_decides() -> None:
    patterns = ["releases/**-alpha", "!releases/**-alpha-skip", "releases/**"]
    assert matches(patterns, "releases/10-alpha")
    assert matches(patterns, "releases/10-alpha-skip")  # the last, positive pattern wins
    patterns = ["releases/**", "!releases/**-alpha"]
    assert matches(patterns, "releases/10")
    assert not matches(patterns, "releases/10-alpha")
    assert not matches(["main"], "")


@pytest.mark.parametrize(
    "pattern",
    ["", "!", "[", "[a-", "[!a]", "[ab;]", "[z-a]", "x" * 256, "tab\there", "trail\\"],
)
def test_invalid_patterns_refused(pattern: str) -> None:
    with pytest.raises(InvalidPattern):
        compile_pattern(pattern)


def test_many_wildcards_do_not_backtrack() -> None:
    # A backtracking matcher takes longer than the test run on these; the automaton is linear.
    assert not matches(["a*" * 30 + "c"], "a" * 1000)
    assert not matches(["**a" * 30 + "c"], "a" * 1000)
    assert matches(["a*" * 30], "a" * 1000)


def _push(ref_type: str = "branch", name: str = "main", **kw: Any) -> ForgeEvent:
    return ForgeEvent(
        provider="github",
        delivery_id="d1",
        kind="push",
        repository_id="r",
        project_id="p",
        organization_id="o",
        forge_repository="acme/widgets",
        ref_type=ref_type,
        ref_name=name,
        head_sha=SHA_B,
        before_sha=SHA_A,
        **kw,
    )


def _pull(action: str = "opened", base: str = "main") -> ForgeEvent:
    return ForgeEvent(
        provider="github",
        delivery_id="d2",
        kind="pull_request",
        repository_id="r",
        project_id="p",
        organization_id="o",
        forge_repository="acme/widgets",
        ref_name="feature/x",
        head_sha=SHA_B,
        pr_number=7,
        pr_action=action,
        base_branch=base,
    )


def test_triggers_model_validation() -> None:
    with pytest.raises(ValidationError):
        Triggers.model_validate({"on_push": {"branches": ["!main"]}})
    with pytest.raises(ValidationError):
        Triggers.model_validate({"on_push": {"paths": ["a"], "paths_ignore": ["b"]}})
    with pytest.raises(ValidationError):
        Triggers.model_validate({"on_push": {"branch": ["main"]}})
    with pytest.raises(ValidationError):
        Triggers.model_validate({"on_pull_request": {"types": ["labeled"]}})
    with pytest.raises(ValidationError):
        Triggers.model_validate({"on_push": {"branches": ["x"] * 101}})
    assert parse_triggers({"on_push": {"branches": "main"}}) is None  # not a list: no event
    generated = parse_triggers(
        {"on_push": {"branches": ["main"]}, "on_pull_request": {"branches": ["main"]}}
    )
    assert generated is not None and generated.manual


def test_push_ref_filters() -> None:
    every = Triggers.model_validate({"on_push": {}})
    assert ref_selected(every, _push()) == (True, False)
    assert ref_selected(every, _push("tag", "v1.0.0")) == (True, False)
    branches = Triggers.model_validate({"on_push": {"branches": ["main", "release/**"]}})
    assert ref_selected(branches, _push(name="release/1.x"))[0]
    assert not ref_selected(branches, _push(name="feature"))[0]
    assert not ref_selected(branches, _push("tag", "main"))[0]  # branches only: no tag pushes
    tags = Triggers.model_validate({"on_push": {"tags": ["v*"]}})
    assert ref_selected(tags, _push("tag", "v2.1"))[0]
    assert not ref_selected(tags, _push(name="main"))[0]
    assert not ref_selected(Triggers(), _push())[0]  # no on_push: pushes start nothing


def test_path_filters() -> None:
    triggers = Triggers.model_validate({"on_push": {"branches": ["main"], "paths": ["src/**"]}})
    assert ref_selected(triggers, _push()) == (True, True)
    assert paths_selected(triggers, _push(), ["README.md", "src/app.py"])
    assert not paths_selected(triggers, _push(), ["README.md"])
    assert not paths_selected(triggers, _push(), [])
    assert paths_selected(triggers, _push(), None)  # unknown: match, as GitHub Actions
    ignore = Triggers.model_validate({"on_push": {"paths_ignore": ["docs/**", "*.md"]}})
    assert not paths_selected(ignore, _push(), ["docs/a.md", "README.md"])
    assert paths_selected(ignore, _push(), ["docs/a.md", "src/x.py"])
    tags = Triggers.model_validate({"on_push": {"tags": ["v*"], "paths": ["src/**"]}})
    assert ref_selected(tags, _push("tag", "v1")) == (True, False)  # paths ignored for tags
    assert paths_selected(tags, _push("tag", "v1"), ["README.md"])


def test_pull_request_filters() -> None:
    triggers = Triggers.model_validate({"on_pull_request": {"branches": ["main"]}})
    for action in ("opened", "synchronize", "reopened"):
        assert ref_selected(triggers, _pull(action))[0]
    assert not ref_selected(triggers, _pull("closed"))[0]
    assert not ref_selected(triggers, _pull(base="develop"))[0]
    closed = Triggers.model_validate({"on_pull_request": {"types": ["closed"]}})
    assert ref_selected(closed, _pull("closed"))[0]
    assert not ref_selected(Triggers.model_validate({"on_push": {}}), _pull())[0]


def test_signatures() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    signature = github_signature("s3cret", body)
    assert github_signature_valid("s3cret", body, signature)
    assert not github_signature_valid("s3cret", body + b" ", signature)
    assert not github_signature_valid("other", body, signature)
    assert not github_signature_valid("s3cret", body, None)
    assert not github_signature_valid("s3cret", body, signature.replace("sha256=", "sha1="))
    assert not github_signature_valid("s3cret", body, "sha256=ünïcode")
    assert gitlab_token_valid("tok", "tok")
    assert not gitlab_token_valid("tok", "tok ")
    assert not gitlab_token_valid("tok", None)


def _github_push(ref: str, **kw: Any) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": SHA_A,
        "after": SHA_B,
        "repository": {"full_name": "acme/widgets", "clone_url": "https://github.com/acme/w.git"},
        **kw,
    }


def test_github_payloads() -> None:
    hostile = "feat/$(touch${IFS}x);`id`|&<>'\"!#%"
    parsed = events.parse_github("push", _github_push("refs/heads/" + hostile))
    assert isinstance(parsed, events.ParsedEvent)
    assert parsed.ref_name == hostile and parsed.ref_type == "branch"
    parsed = events.parse_github("push", _github_push("refs/tags/v1.0-ünï"))
    assert isinstance(parsed, events.ParsedEvent) and parsed.ref_type == "tag"
    gone = _github_push("refs/heads/x", deleted=True, after="0" * 40)
    deleted = events.parse_github("push", gone)
    assert isinstance(deleted, events.Ignored)
    assert isinstance(events.parse_github("ping", {}), events.Ping)
    with pytest.raises(UnsupportedEvent):
        events.parse_github("issues", {})
    payloads: list[dict[str, Any]] = [
        _github_push("refs/heads/a..b"),
        _github_push("refs/heads/-rf"),
        _github_push("refs/heads/x\nInjected: yes"),
        _github_push("refs/heads/" + "é" * 200),
        _github_push("refs/notes/x"),
        _github_push("refs/heads/x", after="not-a-sha"),
        {"ref": 5},
        {"ref": "refs/heads/x", "before": SHA_A, "after": SHA_B, "repository": []},
    ]
    for payload in payloads:
        with pytest.raises(MalformedDelivery):
            events.parse_github("push", payload)
    pull = {
        "action": "synchronize",
        "number": 3,
        "pull_request": {
            "head": {"ref": "topic", "sha": SHA_B, "repo": {"full_name": "mallory/widgets"}},
            "base": {"ref": "main", "sha": SHA_A, "repo": {"full_name": "acme/widgets"}},
        },
        "repository": {"full_name": "acme/widgets"},
    }
    parsed = events.parse_github("pull_request", pull)
    assert isinstance(parsed, events.ParsedEvent)
    assert parsed.from_fork and parsed.pr_action == "synchronize" and parsed.base_sha == SHA_A
    labeled = events.parse_github("pull_request", {**pull, "action": "labeled"})
    assert isinstance(labeled, events.Ignored)


def test_gitlab_payloads() -> None:
    project = {"path_with_namespace": "group/sub/widgets", "git_http_url": "https://gl/x.git"}
    push = {"object_kind": "push", "ref": "refs/heads/main", "before": "0" * 40, "after": SHA_B}
    parsed = events.parse_gitlab("Push Hook", {**push, "project": project})
    assert isinstance(parsed, events.ParsedEvent) and parsed.before_sha is None
    deleted = {**push, "after": "0" * 40, "before": SHA_A, "project": project}
    assert isinstance(events.parse_gitlab("Push Hook", deleted), events.Ignored)
    attrs = {
        "iid": 4,
        "action": "update",
        "source_branch": "topic",
        "target_branch": "main",
        "source_project_id": 1,
        "target_project_id": 1,
        "last_commit": {"id": SHA_B},
    }
    merge = {"object_kind": "merge_request", "project": project, "object_attributes": attrs}
    assert isinstance(events.parse_gitlab("Merge Request Hook", merge), events.Ignored)
    merge["object_attributes"] = {**attrs, "oldrev": SHA_A}
    parsed = events.parse_gitlab("Merge Request Hook", merge)
    assert isinstance(parsed, events.ParsedEvent) and parsed.pr_action == "synchronize"
    merge["object_attributes"] = {**attrs, "action": "merge"}
    parsed = events.parse_gitlab("Merge Request Hook", merge)
    assert isinstance(parsed, events.ParsedEvent) and parsed.merged and parsed.pr_action == "closed"
    with pytest.raises(UnsupportedEvent):
        events.parse_gitlab("Pipeline Hook", {})


def test_gitlab_merge_request_details_for_tracking() -> None:
    project = {"path_with_namespace": "group/widgets", "git_http_url": "https://gl/x.git"}
    attrs = {
        "iid": 6,
        "action": "open",
        "source_branch": "topic",
        "target_branch": "main",
        "last_commit": {"id": SHA_B},
        "title": "Draft: faster builds" + "x" * 600,
        "url": "https://gitlab.example/group/widgets/-/merge_requests/6",
        "draft": True,
    }
    merge = {
        "object_kind": "merge_request",
        "project": project,
        "object_attributes": attrs,
        "user": {"username": "dev"},
    }
    parsed = events.parse_gitlab("Merge Request Hook", merge)
    assert isinstance(parsed, events.ParsedEvent) and parsed.pull_request is not None
    info = parsed.pull_request
    assert len(info.title) == 500 and info.title.startswith("Draft: faster builds")
    assert info.url == attrs["url"] and info.author == "dev" and info.draft
    merge["object_attributes"] = {**attrs, "url": "data:text/html,x", "title": None}
    merge["user"] = "not an object"
    with pytest.raises(MalformedDelivery):
        events.parse_gitlab("Merge Request Hook", merge)
    del merge["user"]
    parsed = events.parse_gitlab("Merge Request Hook", merge)
    assert isinstance(parsed, events.ParsedEvent) and parsed.pull_request is not None
    assert parsed.pull_request.url == "" and parsed.pull_request.title == ""


@pytest.mark.parametrize(
    ("cron", "valid"),
    [
        ("*/5 * * * *", True),
        ("0 9-17/2 1,15 jan-jun mon-fri", True),
        ("0 0 * * 7", True),
        ("@weekly", True),
        ("60 * * * *", False),
        ("0 24 * * *", False),
        ("0 0 0 * *", False),
        ("0 0 * 13 *", False),
        ("* * * * * *", False),
        ("*/0 * * * *", False),
        ("0 0 * * fun", False),
        ("@reboot", False),
        ("", False),
        ("0 0 * * 1\n0 0 * * 2", False),
        ("1-2-3 * * * *", False),
        ("999999999999999999999 * * * *", False),
    ],
)
def test_cron_expressions(cron: str, valid: bool) -> None:
    if valid:
        assert validate_cron(cron)
    else:
        with pytest.raises(InvalidCron):
            validate_cron(cron)


def test_a_lone_schedule_is_a_list_of_one() -> None:
    for raw in ("0 3 * * *", {"cron": "0 3 * * *"}, [{"cron": "0 3 * * *"}]):
        triggers = Triggers.model_validate({"schedule": raw})
        assert triggers.normalized()["schedule"] == [{"cron": "0 3 * * *", "timezone": "UTC"}]
    with pytest.raises(ValidationError):
        Triggers.model_validate({"schedule": 5})
