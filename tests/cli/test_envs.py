"""`forgeline envs create|list|show|update|delete` against the real API: changes as asked,
bad input and another tenant's environment as one-line problems, two deletes at once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.cli.conftest import invoke, spawn
from tests.factories import make_org


async def test_envs_show_update_delete(api_url: str, session_maker: Any) -> None:
    org = await make_org(session_maker)
    args = ("--api-url", api_url)
    code, out, err = await invoke(
        "projects", "create", "Envs demo", "--json", *args, key=org.api_key
    )
    assert code == 0, err
    project = json.loads(out)["slug"]
    code, out, err = await invoke(
        "envs", "create", project, "staging", "--type", "staging", "--json", *args, key=org.api_key
    )
    assert code == 0, err
    env = json.loads(out)["id"]

    code, out, err = await invoke(
        "envs", "update", env, "--name", "production", "--type", "production", "--protected",
        "--required-approvals", "2", "--json", *args, key=org.api_key,
    )  # fmt: skip
    assert code == 0, err
    changed = json.loads(out)
    assert changed["name"] == "production" and changed["env_type"] == "production"
    assert changed["is_protected"] is True and changed["required_approvals"] == 2

    code, out, err = await invoke("envs", "show", env, "--output", "json", *args, key=org.api_key)
    assert code == 0 and json.loads(out)["required_approvals"] == 2, err
    code, out, err = await invoke("envs", "show", env, *args, key=org.api_key)
    assert code == 0 and env in out  # a table: IDs are never shortened

    # Only what is given changes: --unprotected leaves the name and type alone.
    code, out, err = await invoke("envs", "update", env, "--unprotected", "--json", *args,
                                  key=org.api_key)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["is_protected"] is False and json.loads(out)["name"] == "production"

    # Bad input: nothing to change, not JSON, a name the API refuses, an unknown provider key.
    code, _, err = await invoke("envs", "update", env, *args, key=org.api_key)
    assert code == 2 and "nothing to change" in err
    code, _, err = await invoke("envs", "update", env, "--config", "{", *args, key=org.api_key)
    assert code == 2 and err.startswith("Error: --config is not valid JSON")
    code, _, err = await invoke("envs", "update", env, "--name", "../x y", *args, key=org.api_key)
    assert code == 1 and err.startswith("Error: HTTP 422") and err.count("\n") == 1, err
    code, _, err = await invoke("envs", "update", env, "--type", "moon", *args, key=org.api_key)
    assert code == 1 and err.startswith("Error: HTTP 422") and err.count("\n") == 1, err
    code, _, err = await invoke("envs", "show", "production", *args, key=org.api_key)
    assert code == 2 and "is not an ID" in err

    # Another tenant's environment does not exist for them.
    stranger = await make_org(session_maker)
    for command in (
        ("show", env),
        ("update", env, "--name", "mine"),
        ("delete", env, "--yes"),
    ):
        code, _, err = await invoke("envs", *command, *args, key=stranger.api_key)
        assert code == 1 and "not found" in err.lower() and err.count("\n") == 1, (command, err)

    # Without --yes it asks; "n" keeps the environment.
    code, _, _ = await invoke("envs", "delete", env, *args, key=org.api_key, stdin="n\n")
    assert code == 1
    code, _, err = await invoke("envs", "show", env, *args, key=org.api_key)
    assert code == 0, err

    # Two deletes at once: one deletes, the other finds nothing left to delete.
    # (two processes: the in-process runner swaps sys.stdout and cannot run twice at once)
    deleters = [spawn("envs", "delete", env, "--yes", *args, key=org.api_key) for _ in range(2)]
    errors = [(await asyncio.to_thread(p.communicate, timeout=120))[1] for p in deleters]
    assert sorted(p.returncode for p in deleters) == [0, 1], errors
    assert any("not found" in e.lower() and e.count("\n") == 1 for e in errors), errors
    code, out, err = await invoke("envs", "list", project, "--json", *args, key=org.api_key)
    assert code == 0 and env not in out, err
