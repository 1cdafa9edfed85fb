"""`forgeline signup|login`, `members ...` and `invitations ...` against the real API: a second
member who joins by consent, two sign-ups of one e-mail at once, the password asked for without
echo, and refusals (weak password, wrong role, an organization key where a person is needed,
someone else's invitation) as one-line problems."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from tests.cli.conftest import invoke
from tests.cli.signups import fresh_signup_allowance
from tests.cli.test_day_to_day import run_cli
from tests.factories import make_org

PASSWORD = "a long passphrase"


def signup_process(api_url: str, email: str) -> subprocess.Popen[str]:
    args = ["signup", email, "--name", "Same", "--organization", f"Org {uuid.uuid4().hex[:8]}"]
    return subprocess.Popen(
        [sys.executable, "-c", "from forgeline.cli import app; app()", *args, "--api-url", api_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FORGELINE_PASSWORD": PASSWORD},
    )


async def test_signup_twice_at_once_and_the_password_prompt(
    api_url: str, session_maker: Any
) -> None:
    await fresh_signup_allowance(session_maker)
    args = ["--api-url", api_url]
    email = f"twice-{uuid.uuid4().hex[:8]}@example.com"
    both = [signup_process(api_url, email) for _ in range(2)]
    answers = [await asyncio.to_thread(p.communicate, timeout=120) for p in both]
    assert sorted(p.returncode for p in both) == [0, 1], answers
    (token,) = [out for p, (out, _) in zip(both, answers, strict=True) if p.returncode == 0]
    (refused,) = [err for p, (_, err) in zip(both, answers, strict=True) if p.returncode == 1]
    assert len(token.split()) == 1 and refused.startswith("Error: HTTP 409"), refused
    assert refused.count("\n") == 1

    # The token is a session: it reads the organization it created.
    code, out, err = await run_cli(["members", "list", "--json", "--api-url", api_url],
                                   {"FORGELINE_API_KEY": token.strip()})  # fmt: skip
    assert code == 0 and [m["email"] for m in json.loads(out)] == [email], err

    # Without FORGELINE_PASSWORD it is asked for twice (never echoed), then signs in.
    prompted = f"prompt-{uuid.uuid4().hex[:8]}@example.com"
    code, out, err = await run_cli(
        ["signup", prompted, "--name", "P", "--organization", "P org", "--json", *args],
        {}, stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert code == 0, (out, err)
    assert PASSWORD not in out
    code, out, err = await run_cli(["login", prompted, "--api-url", api_url], {},
                                   stdin=f"{PASSWORD}\n")  # fmt: skip
    assert code == 0 and len(out.split()[-1]) > 20, err

    # A weak password: the API's 422 on one line, nothing created.
    code, out, err = await run_cli(
        ["signup", f"weak-{uuid.uuid4().hex[:8]}@example.com", "--name", "W", "--organization",
         "W org", "--api-url", api_url],
        {"FORGELINE_PASSWORD": "short"},
    )  # fmt: skip
    assert code == 1 and out == "" and err.startswith("Error: HTTP 422"), err
    assert err.count("\n") == 1


async def test_members_join_by_consent(api_url: str, session_maker: Any) -> None:
    owner = await make_org(session_maker)
    guest = await make_org(session_maker)
    member = await make_org(session_maker, role="member")
    args = ["--api-url", api_url]

    async def session_of(org: Any, organization: str | None = None) -> str:
        extra = ["--organization", organization] if organization else []
        code, out, err = await run_cli(
            ["login", org.email, *extra, *args], {"FORGELINE_PASSWORD": org.password}
        )
        assert code == 0, err
        return str(out.strip())

    # A member (not an admin) cannot invite: 403, one line.
    code, _, err = await invoke("members", "invite", guest.email, *args, key=member.api_key)
    assert code == 1 and err.startswith("Error: HTTP 403") and err.count("\n") == 1, err

    code, out, err = await invoke(
        "members", "invite", guest.email, "--role", "admin", "--json", *args, key=owner.api_key
    )
    assert code == 0, err
    invitation = json.loads(out)
    assert invitation["status"] == "pending" and invitation["role"] == "admin"
    code, out, err = await invoke("members", "invitations", *args, key=owner.api_key)
    assert code == 0 and invitation["id"] in out, err

    # Answering invitations takes a person's session, not an organization's key.
    code, _, err = await invoke("invitations", "list", *args, key=guest.api_key)
    assert code == 1 and err.startswith("Error: HTTP 403") and err.count("\n") == 1, err
    # Someone else's invitation is not found for them.
    stranger = await session_of(member)
    code, _, err = await invoke("invitations", "accept", invitation["id"], *args, key=stranger)
    assert code == 1 and "HTTP 404" in err and err.count("\n") == 1, err

    guest_session = await session_of(guest)
    code, out, err = await invoke("invitations", "list", "--json", *args, key=guest_session)
    assert code == 0 and [i["id"] for i in json.loads(out)] == [invitation["id"]], err
    code, out, err = await invoke(
        "invitations", "accept", invitation["id"], *args, key=guest_session
    )
    assert code == 0 and owner.slug in out and "admin" in out, err
    # Accepting again: already answered, one line.
    code, _, err = await invoke("invitations", "accept", invitation["id"], *args, key=guest_session)
    assert code == 1 and err.startswith("Error: HTTP") and err.count("\n") == 1, err

    # Signed in to the owner's organization, the guest sees its members.
    joined = await session_of(guest, owner.slug)
    code, out, err = await invoke("members", "list", "--json", *args, key=joined)
    assert code == 0, err
    assert {m["email"]: m["role"] for m in json.loads(out)}[guest.email] == "admin"
