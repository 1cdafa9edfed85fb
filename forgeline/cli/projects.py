"""Projects, their repository and their deployment environments."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from forgeline.api_client import ApiError
from forgeline.cli.common import (
    ApiKey,
    ApiUrl,
    AsJson,
    client,
    console,
    emit,
    err_console,
    resolve_project,
    run,
)

projects_app = typer.Typer(help="Projects of your organization.", no_args_is_help=True)
repos_app = typer.Typer(help="The git repository of a project.", no_args_is_help=True)
envs_app = typer.Typer(help="Deployment environments of a project.", no_args_is_help=True)


PROJECT_COLUMNS = ("id", "slug", "name", "project_type", "framework", "status")


@projects_app.command("list")
def projects_list(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
    search: Annotated[str | None, typer.Option(help="Substring of name or slug.")] = None,
) -> None:
    with client(api_url, api_key) as api:
        items = run(lambda: api.paginate("/v1/projects", search=search))
    emit(items, PROJECT_COLUMNS, as_json=as_json, title="Projects")


@projects_app.command("create")
def projects_create(
    name: str,
    project_type: Annotated[
        str, typer.Option("--type", help="static_site, ssr_app, spa, api or fullstack.")
    ] = "static_site",
    framework: Annotated[str | None, typer.Option(help="nextjs, react, vue, ...")] = None,
    slug: Annotated[str | None, typer.Option(help="Default: derived from the name.")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    body: dict[str, Any] = {"name": name, "project_type": project_type}
    if framework:
        body["framework"] = framework
    if slug:
        body["slug"] = slug
    with client(api_url, api_key) as api:
        project = run(lambda: api.post("/v1/projects", body))
    emit(project, PROJECT_COLUMNS, as_json=as_json, title="Project created")


# ---------------------------------------------------------------- repositories

REPO_COLUMNS = ("project", "provider", "url", "default_branch", "has_access_token")


@repos_app.command("connect")
def repos_connect(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    url: Annotated[str, typer.Argument(help="https:// or ssh git URL.")],
    provider: Annotated[
        str, typer.Option(help="github, gitlab, bitbucket, git (or local, when enabled).")
    ] = "git",
    branch: Annotated[str, typer.Option(help="Default branch.")] = "main",
    token_env: Annotated[
        str | None,
        typer.Option(help="Name of an environment variable holding the access token."),
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Connect (or replace) the repository of a project. The token is read from an environment
    variable, never from the command line (shell history, process lists)."""
    body: dict[str, Any] = {"provider": provider, "url": url, "default_branch": branch}
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            err_console.print(f"[red]{token_env} is not set[/red]")
            raise typer.Exit(2)
        body["access_token"] = token
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        repo = run(lambda: api.put(f"/v1/projects/{project_id}/repository", body))
    emit({**repo, "project": project}, REPO_COLUMNS, as_json=as_json, title="Repository")
    if not as_json and repo.get("webhook"):
        print_webhook(repo["webhook"])


def print_webhook(setup: dict[str, Any]) -> None:
    """What to paste into the forge's webhook form; the secret is never shown again."""
    console.print("Webhook (the secret is shown only this once):", markup=False)
    for forge, url in setup["urls"].items():
        console.print(f"  {forge} URL: {url}", markup=False, highlight=False)
    console.print(f"  secret: {setup['secret']}", markup=False, highlight=False)
    console.print(f"  content type: {setup['content_type']}", markup=False, highlight=False)


@repos_app.command("webhook")
def repos_webhook(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """A new webhook secret for the project's repository (the previous one stops working), with
    the URL to paste into GitHub or GitLab."""
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        setup = run(lambda: api.post(f"/v1/projects/{project_id}/repository/webhook-secret", {}))
    if as_json:
        typer.echo(json.dumps(setup, indent=2))
        return
    print_webhook(setup)


@repos_app.command("list")
def repos_list(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """The repository of every project that has one."""
    rows = []
    with client(api_url, api_key) as api:
        for project in run(lambda: api.paginate("/v1/projects")):
            try:
                repo = api.get(f"/v1/projects/{project['id']}/repository")
            except ApiError as exc:
                if exc.status == 404:
                    continue
                err_console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from exc
            rows.append({**repo, "project": project["slug"]})
    emit(rows, REPO_COLUMNS, as_json=as_json, title="Repositories")


# ---------------------------------------------------------------- environments

ENV_COLUMNS = ("id", "name", "env_type", "provider", "is_protected", "status", "url")


@envs_app.command("create")
def envs_create(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    name: str,
    env_type: Annotated[
        str, typer.Option("--type", help="development, staging, production or preview.")
    ] = "development",
    provider: Annotated[str, typer.Option(help="docker, static, aws, ...")] = "static",
    protected: Annotated[bool, typer.Option(help="Require approvals to deploy.")] = False,
    config: Annotated[str | None, typer.Option(help="Provider config as a JSON object.")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    body: dict[str, Any] = {"name": name, "env_type": env_type, "provider": provider}
    if protected:
        body["is_protected"] = True
    if config:
        try:
            body["config"] = json.loads(config)
        except ValueError as exc:
            err_console.print(f"[red]--config is not valid JSON: {exc}[/red]")
            raise typer.Exit(2) from exc
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        env = run(lambda: api.post(f"/v1/projects/{project_id}/environments", body))
    emit(env, ENV_COLUMNS, as_json=as_json, title="Environment created")


@envs_app.command("list")
def envs_list(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        items = run(lambda: api.paginate(f"/v1/projects/{project_id}/environments"))
    emit(items, ENV_COLUMNS, as_json=as_json, title="Environments")
