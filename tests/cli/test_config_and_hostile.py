"""Profiles in $XDG_CONFIG_HOME/forgeline/config.toml (0600, refused when others can read it or
when it is not TOML), and servers that answer garbage or close event streams mid-way: always one
readable line and a non-zero exit status, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import uuid

import pytest

import forgeline.api_client as api_client
from tests.cli.conftest import invoke
from tests.cli.servers import GarbageServer, http_response, stream_response
from tests.factories import make_org


async def test_profiles_reach_the_api_without_flags(api_url, session_maker, config_home) -> None:
    org = await make_org(session_maker)
    code, out, err = await invoke(
        "config", "set", "local", "--api-url", api_url, stdin=org.api_key + "\n"
    )
    assert code == 0, err
    path = config_home / "forgeline" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert org.api_key in path.read_text()
    # A second profile with a name and a key that need quoting in TOML stays parseable.
    os.environ["ODD_KEY"] = 'k"ey\\with\tstuff'
    try:
        code, _, err = await invoke(
            "config",
            "set",
            "odd.one",
            "--api-url",
            "http://127.0.0.1:9",
            "--api-key-env",
            "ODD_KEY",
        )
    finally:
        del os.environ["ODD_KEY"]
    assert code == 0, err

    code, out, err = await invoke("config", "list", "--output", "json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["local"]["default"] and rows["odd.one"]["has_api_key"]
    assert org.api_key not in out  # keys are never printed

    # The default profile (no --api-url, no key in the environment) reaches the API.
    code, out, err = await invoke("projects", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    code, out, err = await invoke("billing", "plan", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["plan"]["slug"] == "free"

    # --profile picks another one (a port nothing listens on: a readable transport error).
    code, _, err = await invoke("--profile", "odd.one", "projects", "list")
    assert code == 1 and "Cannot reach" in err and err.count("\n") == 1
    code, _, err = await invoke("--profile", "nope", "projects", "list")
    assert code == 2 and "No profile 'nope'" in err

    code, _, err = await invoke("config", "use", "odd.one")
    assert code == 0, err
    code, _, _ = await invoke("config", "remove", "odd.one")
    assert code == 0
    code, out, _ = await invoke("config", "list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["local"]


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ('[profiles.a]\napi_url = "http://127.0.0.1:9"\n', 0o644, "chmod 600"),
        ("[profiles.a\napi_url = ", 0o600, "not valid TOML"),
        ("profiles = 3\n", 0o600, "[profiles.<name>] tables expected"),
        (b"\xff\xfe garbage", 0o600, "not valid TOML"),
    ],
)
async def test_bad_config_files_are_refused(config_home, content, mode, message) -> None:
    path = config_home / "forgeline" / "config.toml"
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    path.chmod(mode)
    code, _, err = await invoke("projects", "list", key="fl_live_x")
    assert code == 2 and message in err and "Traceback" not in err
    # Changing profiles never overwrites a file it could not read.
    code, _, err = await invoke(
        "config", "set", "b", "--api-url", "http://127.0.0.1:9", stdin="k\n"
    )
    assert code == 2 and message in err
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


async def test_garbage_answers_are_one_readable_line(monkeypatch) -> None:
    run_id = str(uuid.uuid4())
    answers = {
        b"html": http_response(b"<html>bad gateway</html>", "text/html"),
        b"list": http_response(b"[1, 2, 3]"),
        b"502": http_response(
            b"<html>\n<b>upstream\n</b> down</html>", "text/html", "502 Bad Gateway"
        ),
        b"problem": http_response(
            json.dumps({"detail": "line one\nline two\x1b[31m", "errors": "nope"}).encode(),
            "application/problem+json",
            "409 Conflict",
        ),
    }
    for name, answer in answers.items():

        def reply(_line: bytes, answer: bytes = answer) -> bytes:
            return answer

        with GarbageServer(reply) as server:
            code, out, err = await invoke("runs", "show", run_id, "--api-url", server.url, key="k")
        assert code == 1, (name, out, err)
        assert err.startswith("Error:") and err.count("\n") == 1, (name, err)
        assert "Traceback" not in err and "\x1b" not in err


async def test_streams_that_close_mid_event_give_up_readably(monkeypatch) -> None:
    monkeypatch.setattr(api_client, "STREAM_BACKOFF_SECONDS", 0.01)
    run_id = str(uuid.uuid4())
    seen: list[bytes] = []

    def respond(line: bytes) -> bytes:
        seen.append(line)
        # A half event every time (no blank line): nothing is ever complete, nothing printed.
        return stream_response(b"id: 1:0\nevent: line\ndata: half")

    with GarbageServer(respond) as server:
        code, out, err = await invoke(
            "runs", "logs", run_id, "build", "--follow", "--api-url", server.url, key="k"
        )
    assert code == 1 and "lost" in err and err.count("\n") == 1
    assert out == "" and len(seen) == api_client.STREAM_RECONNECTS + 1

    # A server that answers the stream with JSON instead of events.
    with GarbageServer(lambda _l: http_response(b"{}")) as server:
        code, _, err = await invoke(
            "runs", "logs", run_id, "build", "-f", "--api-url", server.url, key="k"
        )
    assert code == 1 and "did not answer with an event stream" in err
