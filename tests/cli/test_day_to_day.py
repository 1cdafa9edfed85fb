"""The README's Day-to-day section, run: every `forgeline ...` command of its fenced blocks, in
order, against the real API, Postgres, Temporal, a pipeline worker, a deployments worker and
Caddy; placeholders filled from what the commands before created. Then hostile input: bad IDs,
another tenant's IDs, a repeated approval, and Ctrl-C during `runs logs --follow`."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import invoke, spawn
from tests.cli.deploy.conftest import caddy, deploy_worker, settings
from tests.cli.signups import fresh_signup_allowance
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, stage

__all__ = ["caddy", "deploy_worker", "settings"]  # fixtures of the deployment CLI tests

README = Path(__file__).resolve().parents[2] / "README.md"
PIPELINE_YML = """\
name: ci
stages:
- name: build
  type: build
  commands:
  - mkdir -p site && echo '<h1>demo</h1>' > site/index.html
  - tar czf site.tar.gz -C site .
  - echo built demo site
  artifacts:
  - site.tar.gz
"""
PLACEHOLDER = re.compile(r"<([a-z0-9]+)>")


@dataclass
class Step:
    """One line of the section: environment assignments, then commands joined by pipes."""

    line: str
    env: dict[str, str]
    commands: list[list[str]]


def day_to_day_steps() -> list[Step]:
    text = README.read_text()
    section = text.split("\n## Day-to-day\n", 1)[1].split("\n## ", 1)[0]
    steps = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            env: dict[str, str] = {}
            if words[0] == "export":
                words = words[1:]
            while words and re.match(r"^[A-Z_]+=", words[0]):
                name, value = words.pop(0).split("=", 1)
                env[name] = value
            commands: list[list[str]] = [[]]
            for word in words:
                if word == "|":
                    commands.append([])
                else:
                    commands[-1].append(word)
            for command in filter(None, commands):
                assert command[:3] == ["uv", "run", "forgeline"], f"not the CLI: {line}"
            steps.append(Step(line, env, [c[3:] for c in commands if c]))
    return steps


@dataclass
class Walk:
    """What the walk-through needs besides the README: unique names, the API's URL, the IDs
    the commands created (looked up with the CLI, as Ada unless said otherwise)."""

    api_url: str
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    env: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def localize(self, word: str) -> str:
        """Names that must be unique in a shared database, and the test server's URL."""
        word = word.replace("https://ci.example.com", self.api_url)
        word = re.sub(r"^(ada|bob)@example\.com$", rf"\1-{self.suffix}@example.com", word)
        if word in ("acme", "Bob's lab"):
            return f"{word}-{self.suffix}".replace("'", "").replace(" ", "-").lower()
        return word

    async def cli(self, *args: str, profile: str | None = None) -> Any:
        env = {**self.env, **({"FORGELINE_PROFILE": profile} if profile else {})}
        code, out, err = await run_cli(list(args), env)
        assert code == 0, (args, out, err)
        return json.loads(out)

    async def resolve(self, name: str) -> str:
        if name not in self.ids:
            self.ids[name] = await self._lookup(name)
        return self.ids[name]

    async def _lookup(self, name: str) -> str:
        if name == "pipeline":
            return str((await self.cli("pipelines", "list", "demo-site", "--json"))[0]["id"])
        if name in ("run", "run2"):
            runs = await self.cli("runs", "list", await self.resolve("pipeline"), "--json")
            return str(runs[-1 if name == "run" else 0]["id"])
        if name == "production":
            envs = await self.cli("envs", "list", "demo-site", "--json")
            return str(next(e["id"] for e in envs if e["name"] == "production"))
        if name == "invitation":
            return str((await self.cli("invitations", "list", "--json", profile="bob"))[0]["id"])
        deployments = await self.cli("deployments", "list", "--project", "demo-site", "--json")
        if name == "rollback":
            of = await self.resolve("deployment2")
            return str(next(d["id"] for d in deployments if d["rollback_of_id"] == of))
        run = await self.resolve({"deployment": "run", "deployment2": "run2"}[name])
        return str(
            next(
                d["id"]
                for d in deployments
                if d["pipeline_run_id"] == run and d["rollback_of_id"] is None
            )
        )


async def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> Any:
    from typer.testing import CliRunner

    import forgeline.cli as cli

    wide = {"COLUMNS": "200", **env}  # tables unshortened, as on a wide terminal
    result = await asyncio.to_thread(CliRunner().invoke, cli.app, args, env=wide, input=stdin)
    return result.exit_code, result.stdout, result.stderr


Check = Callable[[int, str, str], bool]
EXPECTED: list[tuple[str, Check]] = [
    ("signup ada", lambda c, o, e: c == 0 and len(o.split()) == 1),
    ("runs trigger", lambda c, o, e: c == 0 and re.search(r"build\s+success", o) is not None),
    ("runs list", lambda c, o, e: c == 0 and "success" in o),
    (
        "runs watch",
        lambda c, o, e: c == 0 and bool(re.search(r"build\s+success\s+1\s+\d+\.\ds", o)),
    ),
    ("runs logs", lambda c, o, e: c == 0 and "built demo site" in o),
    ("deploy ", lambda c, o, e: c == 0 and "awaits approval" in e),
    ("invitations list", lambda c, o, e: c == 0 and "acme-" in o),
    ("invitations accept", lambda c, o, e: c == 0 and "admin" in o),
    ("deployments approve", lambda c, o, e: c == 0 and "True" in o),
    ("deployments watch", lambda c, o, e: c == 0 and "active" in o),
    ("runs rerun", lambda c, o, e: c == 0 and re.search(r"build\s+success", o) is not None),
    ("deployments rollback", lambda c, o, e: c == 0 and "awaits approval" in e),
]


def check(words: list[str], code: int, out: str, err: str) -> None:
    line = " ".join(words)
    for prefix, ok in EXPECTED:
        if line.startswith(prefix):
            assert ok(code, out, err), (line, code, out, err)
            return
    assert code == 0, (line, out, err)


async def test_day_to_day_section_runs_as_written(
    api_url: str,
    session_maker: Any,
    worker: None,
    deploy_worker: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = day_to_day_steps()
    assert len(steps) >= 25
    await fresh_signup_allowance(session_maker)  # Ada and Bob sign up from 127.0.0.1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipeline.yml").write_text(PIPELINE_YML)
    walk = Walk(api_url)
    ran: list[str] = []
    for step in steps:
        if not step.commands:  # an export: it holds for the commands after it
            walk.env.update({k: walk.localize(v) for k, v in step.env.items()})
            continue
        piped: str | None = None
        for n, command in enumerate(step.commands):
            words = [walk.localize(w) for w in command]
            for i, word in enumerate(words):
                if (found := PLACEHOLDER.fullmatch(word)) is not None:
                    words[i] = await walk.resolve(found.group(1))
            env = {**walk.env, **(step.env if n == 0 else {})}
            code, out, err = await run_cli(words, env, stdin=piped)
            check(words, code, out, err)
            piped = out
            ran.append(" ".join(command))
    for needed in (
        "signup",
        "runs trigger",
        "runs watch",
        "runs logs",
        "deploy ",
        "deployments approve",
        "deployments rollback",
        "billing invoices",
    ):
        assert any(r.startswith(needed) for r in ran), needed

    # The rollback is live with the first version; the second is no longer.
    rolled = await walk.cli("deployments", "show", await walk.resolve("rollback"), "--json")
    assert rolled["status"] == "active" and rolled["version"] == "run-1"
    second = await walk.cli("deployments", "show", await walk.resolve("deployment2"), "--json")
    assert second["version"] == "run-2" and second["status"] != "active"

    # Deciding twice on one deployment: the API's refusal on one line, exit 1.
    code, _, err = await run_cli(
        ["deployments", "approve", await walk.resolve("rollback")],
        {**walk.env, "FORGELINE_PROFILE": "bob"},
    )
    assert code == 1 and err.startswith("Error: HTTP 409") and err.count("\n") == 1, err

    # Another tenant sees none of it: "not found", exit 1, one line.
    stranger = await make_org(session_maker)
    for args in (
        ["runs", "show", await walk.resolve("run")],
        ["runs", "logs", await walk.resolve("run"), "build"],
        ["deployments", "show", await walk.resolve("deployment")],
        ["deployments", "approve", await walk.resolve("rollback")],
        ["runs", "rerun", await walk.resolve("run")],
    ):
        code, _, err = await invoke(*args, "--api-url", api_url, key=stranger.api_key)
        assert code == 1 and "not found" in err.lower() and err.count("\n") == 1, (args, err)


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "show", "not-an-id"],
        ["runs", "logs", "../../v1/projects", "build"],
        ["deployments", "approve", "'; drop table deployments; --"],
        ["invitations", "accept", "0" * 40],
        ["deploy", "\x00"],
    ],
)
async def test_bad_ids_are_one_line_and_exit_2(api_url: str, args: list[str]) -> None:
    code, out, err = await invoke(*args, "--api-url", api_url, key="fl_live_unused")
    assert code == 2 and out == "", (code, out, err)
    assert "is not an ID" in err and "Traceback" not in err


async def test_unknown_id_and_wrong_password_are_one_line_problems(api_url: str) -> None:
    code, _, err = await invoke(
        "runs", "show", str(uuid.uuid4()), "--api-url", api_url, key="fl_live_" + "x" * 40
    )
    assert code == 1 and err.startswith("Error: HTTP 401") and err.count("\n") == 1, err
    code, out, err = await run_cli(
        ["login", "nobody@example.com", "--api-url", api_url],
        {"FORGELINE_PASSWORD": "not the password"},
    )
    assert code == 1 and out == "" and err.startswith("Error: HTTP 401"), err
    assert err.count("\n") == 1


async def test_ctrl_c_during_logs_follow_exits_cleanly(
    api_url: str, session_maker: Any, worker: None
) -> None:
    org = await make_org(session_maker)
    pipeline = await make_pipeline(
        session_maker, org.org_id, [stage("build", "echo started; sleep 60")]
    )
    code, out, err = await invoke(
        "runs", "trigger", str(pipeline), "--json", "--api-url", api_url, key=org.api_key
    )
    assert code == 0, err
    run_id = json.loads(out)["id"]
    follower = spawn("runs", "logs", run_id, "build", "--follow", "--api-url", api_url,
                     key=org.api_key)  # fmt: skip
    assert follower.stdout is not None
    try:
        first = await asyncio.to_thread(follower.stdout.readline)
        assert "started" in first
        follower.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(follower.communicate, timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 130, (follower.returncode, err)
    assert "Traceback" not in err and err.count("\n") <= 1, err
    code, _, err = await invoke("runs", "cancel", run_id, "--api-url", api_url, key=org.api_key)
    assert code == 0, err
