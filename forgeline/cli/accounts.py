"""`forgeline signup|login`, `forgeline members list|invite` and `forgeline invitations
list|accept`: an account and its session token from the CLI, and a second member who joins
by accepting an invitation with their own session."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from forgeline.api_client import ForgelineClient
from forgeline.cli import common, config
from forgeline.cli.common import ApiUrl, AsJson, Connection, api_command, err_console, uuid_arg
from forgeline.settings import get_settings

members_app = typer.Typer(
    help="Members of your organization and invitations.", no_args_is_help=True
)
invitations_app = typer.Typer(help="Invitations waiting for your answer.", no_args_is_help=True)

PASSWORD_ENV = "FORGELINE_PASSWORD"
MEMBER_COLUMNS = ("id", "user_id", "email", "name", "role")
INVITATION_COLUMNS = ("id", "email", "role", "status", "expires_at")
MY_INVITATION_COLUMNS = ("id", "organization_slug", "organization_name", "role", "expires_at")

Email = Annotated[str, typer.Argument(help="Your e-mail address.")]
InvitationId = Annotated[str, typer.Argument(callback=uuid_arg, help="Invitation ID.")]


def _anonymous(api_url: str | None) -> ForgelineClient:
    """A client without a key (sign-up and sign-in make one): URL from the flag, the profile,
    then the local settings."""
    try:
        chosen = config.profile(common.selected_profile)
    except config.ConfigError as exc:
        err_console.print(f"Error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    return ForgelineClient(api_url or chosen.get("api_url") or get_settings().public_base_url, None)


def _password(confirm: bool) -> str:
    """From FORGELINE_PASSWORD (scripts), else asked for without echo."""
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return entered


def _print_session(answer: dict[str, Any], session: dict[str, Any], as_json: bool) -> None:
    """The token alone on standard output (`KEY=$(forgeline login ...)`), the rest on stderr."""
    if as_json:
        common.emit(answer, (), as_json=True)
        return
    typer.echo(session["token"])
    err_console.print(
        f"Session for organization {session['organization_id']}, expires {session['expires_at']}",
        markup=False,
        highlight=False,
    )


def _open_session(
    path: str,
    body: dict[str, Any],
    api_url: str | None,
    as_json: bool,
    *,
    nested: str | None = None,
) -> None:
    """Post the credentials without a key and print the session the API answers (under
    `nested` when the answer holds more than the session)."""
    with _anonymous(api_url) as api:
        answer: dict[str, Any] = common.run(lambda: api.post(path, body))
    _print_session(answer, answer[nested] if nested else answer, as_json)


def signup(
    email: Email,
    name: Annotated[str, typer.Option("--name", help="Your name.")],
    organization: Annotated[str, typer.Option("--organization", help="The new organization.")],
    slug: Annotated[
        str | None, typer.Option("--slug", help="Its slug (default: from name).")
    ] = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Create an account and a new organization owned by it; prints a session token (7 days).
    The password comes from FORGELINE_PASSWORD, else it is asked for."""
    body = {
        "email": email,
        "password": _password(confirm=True),
        "name": name,
        "organization_name": organization,
        "organization_slug": slug,
    }
    _open_session("/v1/auth/signup", body, api_url, as_json, nested="session")


def login(
    email: Email,
    organization: Annotated[
        str | None, typer.Option("--organization", help="Organization slug (default: your first).")
    ] = None,
    totp: Annotated[str | None, typer.Option("--totp", help="Code of your authenticator.")] = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Sign in; prints a session token (7 days) for one of your organizations.
    The password comes from FORGELINE_PASSWORD, else it is asked for."""
    body = {
        "email": email,
        "password": _password(confirm=False),
        "organization_slug": organization,
        "totp_code": totp,
    }
    _open_session("/v1/auth/login", body, api_url, as_json)


@api_command(members_app, "list")
def list_members(conn: Connection) -> None:
    """The organization's members with their roles."""
    conn.emit(conn.call(lambda api: api.paginate("/v1/members")), MEMBER_COLUMNS, title="Members")


@api_command(members_app, "invite")
def invite(
    conn: Connection,
    email: Annotated[str, typer.Argument(help="Their e-mail address.")],
    role: Annotated[str, typer.Option("--role", help="owner, admin, member or viewer.")] = "member",
) -> None:
    """Invite someone: they become a member when they accept (`forgeline invitations accept`).
    An e-mail without an account gets one, and a set-password link by mail."""
    invitation = conn.call(
        lambda api: api.post("/v1/members/invitations", {"email": email, "role": role})
    )
    conn.emit(invitation, INVITATION_COLUMNS, title="Invitation")


@api_command(members_app, "invitations")
def pending(conn: Connection) -> None:
    """The organization's pending invitations."""
    rows = conn.call(lambda api: api.get("/v1/members/invitations"))
    conn.emit(rows, INVITATION_COLUMNS, title="Pending invitations")


@api_command(invitations_app, "list")
def mine(conn: Connection) -> None:
    """Invitations waiting for your answer (needs a session token: `forgeline login`)."""
    rows = conn.call(lambda api: api.get("/v1/me/invitations"))
    conn.emit(rows, MY_INVITATION_COLUMNS, title="Your invitations")


@api_command(invitations_app, "accept")
def accept(conn: Connection, invitation: InvitationId) -> None:
    """Join the organization; then `forgeline login --organization <slug>` signs in to it."""
    joined = conn.call(lambda api: api.post(f"/v1/me/invitations/{invitation}/accept", {}))
    if conn.printed_json(joined):
        return
    org = joined["organization"]
    joined_as = {**joined["member"], "organization": org["slug"]}
    conn.emit(joined_as, ("organization", "email", "role"), title="Joined")
