"""The README's "Connect GitHub / GitLab" walkthrough, run as written: its fake forge started
with the README's command line, every shell line of its blocks run by bash in order against a
real API (uvicorn on loopback), Postgres, Temporal and the integrations and sandboxed pipeline
workers that `make run` starts (the one line that is played by fixtures: `make run` itself, with
the forge URL the README gives it). Only the addresses are substituted (the test's API, Temporal
and a free port for the fake forge), and `uv run` runs this virtualenv's programs. Each command
followed by `# ...` lines must print them (`…` stands for any text); one that shows a run's
progress is repeated until it does, as a person would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from forgeline.embedded.postgres import free_port
from forgeline.settings import Settings
from tests.api_server import ApiServer
from tests.factories import make_org
from tests.integrations.support import run_workers
from tests.runs.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FORGE_LINE = "uv run python -m tests.integrations.fake_forge_server --port 9100"
STACK_LINE = (
    "FORGELINE_GITHUB_API_URL=http://127.0.0.1:9100 "
    "FORGELINE_GITLAB_API_URL=http://127.0.0.1:9100/api/v4 make run"
)
UV_SHIM = """#!/bin/sh
# `uv run [--frozen] PROGRAM ARGS...` as this test's virtualenv runs it.
[ "$1" = run ] || exit 2
shift
[ "$1" = --frozen ] && shift
program="$1"
shift
if [ "$program" = python ]; then exec "$FORGELINE_TEST_PYTHON" "$@"; fi
exec "$FORGELINE_TEST_VENV_BIN/$program" "$@"
"""


@dataclass
class Command:
    """One shell command of the section (continuation lines joined) and the output it shows."""

    text: str
    expected: list[str] = field(default_factory=list)


def section_blocks() -> list[list[Command]]:
    text = README.read_text()
    section = text.split("\n## Connect GitHub / GitLab\n", 1)[1].split("\n## ", 1)[0]
    part = section.split("\n### Try it on this machine\n", 1)[1]
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", part, flags=re.S):
        commands: list[Command] = []
        for line in block.replace("\\\n", "").splitlines():
            if line.startswith("# "):
                commands[-1].expected.append(line[2:])
            elif line.strip():
                commands.append(Command(line))
        blocks.append(commands)
    return blocks


def matches(expected: list[str], output: str) -> bool:
    """Each line the README shows is printed (the schedule may have added runs of its own)."""
    lines = [line for line in output.splitlines() if line.strip()]
    patterns = [re.escape(e).replace("…", ".*") for e in expected]
    return all(any(re.fullmatch(p, line) for line in lines) for p in patterns)


@dataclass
class Shell:
    """bash in the walkthrough's directory; the variables a command sets carry to the next."""

    cwd: Path
    env: dict[str, str]
    substitutions: dict[str, str]
    state: Path

    def run(self, command: str) -> str:
        for old, new in self.substitutions.items():
            command = command.replace(old, new)
        script = (
            "set -euo pipefail\n"
            f"[ -f {self.state} ] && source {self.state}\n"
            f"{command}\n"
            f"declare -p $(compgen -v | grep -E '^[A-Z_]+$' | grep -vE "
            f"'^(BASH|PIPESTATUS|SHELLOPTS|BASHOPTS|EUID|UID|PPID|GROUPS|HOSTNAME|OPTIND|OPTERR|"
            f"IFS|PS4|HOSTTYPE|MACHTYPE|OSTYPE|SHLVL|PWD|OLDPWD|RANDOM|SECONDS|LINENO|"
            f"BASH_[A-Z_]+|COMP_[A-Z_]+|FUNCNAME|DIRSTACK|HISTCMD|EPOCH[A-Z]+|SRANDOM|_)$') "
            f"> {self.state}.new 2>/dev/null; mv {self.state}.new {self.state}\n"
        )
        out = subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"{command}\nstdout: {out.stdout}\nstderr: {out.stderr}"
        return out.stdout


@pytest.fixture
def walkthrough_dir(tmp_path: Path, settings: Settings) -> Path:
    """The repository's root as the README's commands see it: `.data` with the bootstrap file
    and the local repositories' root, `.venv` with the Temporal CLI."""
    root = tmp_path / "clone"
    (root / ".data").mkdir(parents=True)
    repositories = settings.local_roots[0]
    repositories.mkdir(parents=True, exist_ok=True)
    (root / ".data" / "local-repositories").symlink_to(repositories)
    (root / ".venv").symlink_to(ROOT / ".venv")
    return root


@pytest.fixture
def fake_forge_port() -> Iterator[int]:
    yield free_port()


@dataclass
class ForgeProcess:
    process: subprocess.Popen[str]
    lines: list[dict[str, object]] = field(default_factory=list)

    def read(self) -> list[dict[str, object]]:
        """What the fake forge printed so far (one JSON object a line)."""
        return self.lines


async def read_lines(forge: ForgeProcess) -> None:
    assert forge.process.stdout is not None
    while True:
        line = await asyncio.to_thread(forge.process.stdout.readline)
        if not line:
            return
        forge.lines.append(json.loads(line))


@pytest.fixture
def shell(
    walkthrough_dir: Path, settings: Settings, tmp_path: Path, fake_forge_port: int
) -> Iterator[Shell]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "uv"
    shim.write_text(UV_SHIM)
    shim.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(ROOT),
        "FORGELINE_TEST_PYTHON": sys.executable,
        "FORGELINE_TEST_VENV_BIN": str(Path(sys.executable).parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LANG": "C.UTF-8",
    }
    yield Shell(
        walkthrough_dir,
        env,
        {
            "--port 9100": f"--port {fake_forge_port}",
            "127.0.0.1:9100": f"127.0.0.1:{fake_forge_port}",
            "127.0.0.1:7233": str(settings.temporal_address),
            "/tmp/widgets-pipeline.yml": str(tmp_path / "widgets-pipeline.yml"),
        },
        tmp_path / "shell-state",
    )


@pytest.fixture
async def stack(
    settings: Settings,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    walkthrough_dir: Path,
    shell: Shell,
    tmp_path: Path,
    task_queue: str,
    fake_forge_port: int,
) -> AsyncIterator[tuple[ApiServer, ForgeProcess]]:
    """The first block: the fake forge as the README starts it, and what `make run` starts, with
    the GitHub API URL the README gives it; a bootstrap organization in `.data`."""
    first = section_blocks()[0]
    assert [c.text for c in first] == [FORGE_LINE, STACK_LINE]
    command = FORGE_LINE.replace("--port 9100", f"--port {fake_forge_port}")
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=walkthrough_dir,
        env=shell.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    forge = ForgeProcess(process)
    reader = asyncio.create_task(read_lines(forge))
    org = await make_org(session_maker)
    bootstrap = {"org_id": str(org.org_id), "org_slug": org.slug, "api_key": org.api_key}
    (walkthrough_dir / ".data" / "bootstrap.json").write_text(json.dumps(bootstrap))
    server = ApiServer(settings).start()
    urls = dict(word.split("=", 1) for word in STACK_LINE.split()[:2])
    port = str(fake_forge_port)
    worker_settings = settings.model_copy(
        update={
            "github_api_url": urls["FORGELINE_GITHUB_API_URL"].replace("9100", port),
            "gitlab_api_url": urls["FORGELINE_GITLAB_API_URL"].replace("9100", port),
        }
    )
    try:
        await wait_for(lambda: _listening(forge), timeout=30)
        async with run_workers(
            temporal_client, worker_settings, session_maker, task_queue, tmp_path
        ):
            yield server, forge
    finally:
        server.stop()
        process.terminate()
        process.wait(timeout=30)
        await reader


async def _listening(forge: ForgeProcess) -> bool:
    return any("listening" in line for line in forge.lines)


async def run_until_shown(shell: Shell, command: Command, *, more_scheduled_than: int) -> str:
    """The command, repeated while what it prints is not yet what the README shows (and, once
    the schedule was triggered, while no run it started is listed)."""
    seen: list[str] = []

    async def shown() -> bool:
        seen.append(await asyncio.to_thread(shell.run, command.text))
        scheduled = seen[-1].count('"trigger":"schedule"')
        return matches(command.expected, seen[-1]) and scheduled > more_scheduled_than

    try:
        await wait_for(shown, timeout=90, interval=0.5)
    except AssertionError:
        shown_last = seen[-1] if seen else ""
        raise AssertionError(
            f"{command.text}\nexpected {command.expected}\ngot {shown_last}"
        ) from None
    return seen[-1]


async def test_the_readme_walkthrough_runs_as_written(
    stack: tuple[ApiServer, ForgeProcess],
    shell: Shell,
    temporal_client: Client,
    settings: Settings,
) -> None:
    server, forge = stack
    shell.substitutions["http://localhost:8000"] = server.url
    shell.env["FORGELINE_API_URL"] = server.url
    _, setup, push, see, gitlab = section_blocks()
    pipeline = ""
    try:
        outputs = [await asyncio.to_thread(shell.run, c.text) for c in setup]
        url_line = outputs[[c.text for c in setup].index(_webhook_url_command(setup))]
        state = shell.state.read_text()
        pipeline = re.search(r'PIPELINE="([0-9a-f-]{36})"', state).group(1)  # type: ignore[union-attr]
        repo_id = re.search(r'REPO_ID="([0-9a-f-]{36})"', state).group(1)  # type: ignore[union-attr]
        # The URL to paste is the public one (`make run`'s, the settings' public_base_url).
        public = settings.public_base_url.rstrip("/")
        assert url_line.strip() == f"{public}/v1/webhooks/github?repository={repo_id}"
        for command in push:
            output = await asyncio.to_thread(shell.run, command.text)
            assert matches(command.expected, output), (command.text, output)
        new_sha = re.search(r'NEW_SHA="([0-9a-f]{40})"', shell.state.read_text()).group(1)  # type: ignore[union-attr]
        scheduled_before = -1
        for command in see:
            if not command.expected:
                await asyncio.to_thread(shell.run, command.text)
                continue
            shown = await run_until_shown(shell, command, more_scheduled_than=scheduled_before)
            scheduled_before = shown.count('"trigger":"schedule"')

        async def statuses_arrived() -> bool:
            return ("forgeline/ci", "success", "Passed") in _statuses(forge, new_sha)

        try:
            await wait_for(statuses_arrived, timeout=60)
        except AssertionError:
            raise AssertionError(f"the fake forge printed {forge.read()}") from None
        github = _statuses(forge, new_sha)
        assert github[-2:] == [
            ("forgeline/ci", "pending", "Running"),
            ("forgeline/ci", "success", "Passed"),
        ]
        # Queued comes first, or not at all when the run was running before it was checked.
        assert github[:-2] in ([], [("forgeline/ci", "pending", "Queued")])
        assert all(
            str(line.get("target_url", "")).startswith("http")
            for line in forge.read()
            if "state" in line
        )
        # GitLab's push of the next commit: its statuses on GitLab's API.
        for command in gitlab:
            output = await asyncio.to_thread(shell.run, command.text)
            assert matches(command.expected, output), (command.text, output)
        gitlab_sha = re.search(r'NEW_SHA="([0-9a-f]{40})"', shell.state.read_text()).group(1)  # type: ignore[union-attr]
        assert gitlab_sha != new_sha

        async def gitlab_statuses_arrived() -> bool:
            return ("forgeline/ci", "success") in _gitlab_statuses(forge, gitlab_sha)

        try:
            await wait_for(gitlab_statuses_arrived, timeout=60)
        except AssertionError:
            raise AssertionError(f"the fake forge printed {forge.read()}") from None
        states = [state for _, state in _gitlab_statuses(forge, gitlab_sha)]
        assert states in (["pending", "running", "success"], ["running", "success"]), states
    finally:
        if pipeline:
            # The every-minute schedule must not outlive the test in the shared Temporal.
            handle = temporal_client.get_schedule_handle(f"pipeline-schedule-{pipeline}-0")
            await handle.delete()


def _webhook_url_command(setup: list[Command]) -> str:
    return next(c.text for c in setup if ".webhook.urls.github" in c.text)


def _statuses(forge: ForgeProcess, sha: str) -> list[tuple[str, str, str]]:
    return [
        (str(line["context"]), str(line["state"]), str(line["description"]))
        for line in forge.read()
        if line.get("path") == f"/repos/acme/widgets/statuses/{sha}" and line.get("answered") == 201
    ]


def _gitlab_statuses(forge: ForgeProcess, sha: str) -> list[tuple[str, str]]:
    return [
        (str(line["name"]), str(line["state"]))
        for line in forge.read()
        if line.get("path") == f"/api/v4/projects/acme%2Fwidgets/statuses/{sha}"
        and line.get("answered") == 201
    ]
