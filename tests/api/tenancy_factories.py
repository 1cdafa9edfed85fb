"""Factories for the cross-tenant matrix (test_tenancy_matrix.py): one per ID path parameter.

Every route with an `..._id` path parameter is called with another organization's key; the
matrix needs an object of that kind in the owning organization. To cover a new route, add a
coroutine to FACTORIES under the parameter name. A factory inserts rows directly with the
session maker and returns the new id; it calls `ctx.ensure("<other_param>")` for the parents it
needs, so nested routes (`/projects/{project_id}/environments/{environment_id}`) get a
consistent chain.

Non-ID path parameters get a value from PATH_VALUES; request bodies are generated from the
OpenAPI schema, with BODIES overriding where a generated body would not pass validation.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.integrations import PullRequest
from db.models.projects import Environment, Project, Repository
from db.session import session_scope
from tests.api.integration_factories import INTEGRATION_FACTORIES, app_repository_body
from tests.api.notification_factories import NOTIFICATION_FACTORIES
from tests.factories import OrgFixture


@dataclass
class FactoryContext:
    session_maker: async_sessionmaker[AsyncSession]
    org: OrgFixture
    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    # The app's settings, for factories that also put files in the object store.
    settings: Any = None

    async def ensure(self, param: str) -> uuid.UUID:
        """The id for `param` in this chain, created through its factory on first use."""
        if param not in self.ids:
            factory = FACTORIES.get(param)
            if factory is None:
                raise LookupError(f"add a factory for {param} in tests/api/tenancy_factories.py")
            self.ids[param] = await factory(self)
        return self.ids[param]


Factory = Callable[[FactoryContext], Awaitable[uuid.UUID]]


async def project_factory(ctx: FactoryContext) -> uuid.UUID:
    project_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Project(
                id=project_id,
                organization_id=ctx.org.org_id,
                name="Matrix project",
                slug=f"matrix-{project_id.hex[:12]}",
                project_type="static_site",
                framework="static_html",
                config={},
            )
        )
        # Routes under /projects/{project_id}/repository need one to exist.
        session.add(
            Repository(
                project_id=project_id,
                provider="github",
                url="https://github.com/forgeline/matrix.git",
                default_branch="main",
            )
        )
    async with session_scope(ctx.session_maker) as session:
        # Routes under /projects/{project_id}/pull-requests/{number} need pull request 1.
        repository_id = await session.scalar(
            select(Repository.id).where(Repository.project_id == project_id)
        )
        session.add(
            PullRequest(
                project_id=project_id,
                repository_id=repository_id,
                pr_number=int(PATH_VALUES["number"]),
                pr_url="https://github.com/forgeline/matrix/pull/1",
                repository_name="forgeline/matrix",
                title="Matrix pull request",
                branch_name="feature",
            )
        )
    return project_id


async def environment_factory(ctx: FactoryContext) -> uuid.UUID:
    project_id = await ctx.ensure("project_id")
    environment_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Environment(
                id=environment_id,
                project_id=project_id,
                name=f"env-{environment_id.hex[:8]}",
                env_type="staging",
                provider="static",
                config={},
            )
        )
    return environment_id


async def api_key_factory(ctx: FactoryContext) -> uuid.UUID:
    """A second key, so the owner's sanity call revoking it does not lock the test out."""
    from core.accounts.keys import insert_api_key

    async with session_scope(ctx.session_maker) as session:
        key, _raw = await insert_api_key(
            session,
            organization_id=ctx.org.org_id,
            created_by_user_id=ctx.org.user_id,
            name="matrix key",
            scopes=["projects:read"],
        )
    return key.id


async def member_factory(ctx: FactoryContext) -> uuid.UUID:
    """A plain member (not the owner, so removing it in the sanity call is allowed)."""
    from db.models.accounts import OrganizationMember, User

    member_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        user = User(id=uuid.uuid4(), email=f"m-{member_id.hex}@example.com", name="Matrix member")
        session.add(user)
        await session.flush()
        session.add(
            OrganizationMember(
                id=member_id, organization_id=ctx.org.org_id, user_id=user.id, role="member"
            )
        )
    return member_id


async def invitation_factory(ctx: FactoryContext) -> uuid.UUID:
    """A pending invitation of the owning organization, addressed to a person of its own: neither
    the other organization's admin nor anyone but the invitee may revoke, accept or decline it."""
    from datetime import UTC, datetime, timedelta

    from db.models.accounts import OrganizationInvitation, User

    invitation_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        user = User(id=uuid.uuid4(), email=f"i-{invitation_id.hex}@example.com", name="Invitee")
        session.add(user)
        await session.flush()
        session.add(
            OrganizationInvitation(
                id=invitation_id,
                organization_id=ctx.org.org_id,
                user_id=user.id,
                role="member",
                expires_at=datetime.now(UTC) + timedelta(days=7),
            )
        )
    return invitation_id


async def pipeline_factory(ctx: FactoryContext) -> uuid.UUID:
    from db.models.pipelines import Pipeline, PipelineStage

    project_id = await ctx.ensure("project_id")
    pipeline_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Pipeline(
                id=pipeline_id,
                project_id=project_id,
                organization_id=ctx.org.org_id,
                name="Matrix pipeline",
            )
        )
        await session.flush()
        session.add(
            PipelineStage(
                pipeline_id=pipeline_id,
                name="build",
                position=0,
                stage_type="build",
                commands=[{"name": "build", "run": "true"}],
            )
        )
    return pipeline_id


async def run_factory(ctx: FactoryContext) -> uuid.UUID:
    """A finished run with one `build` stage execution (for the stage log routes)."""
    from db.models.pipelines import PipelineRun, StageExecution

    pipeline_id = await ctx.ensure("pipeline_id")
    project_id = await ctx.ensure("project_id")
    run_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            PipelineRun(
                id=run_id,
                pipeline_id=pipeline_id,
                organization_id=ctx.org.org_id,
                project_id=project_id,
                run_number=1,
                status="failed",
            )
        )
        await session.flush()
        session.add(StageExecution(run_id=run_id, stage_name="build", status="failed"))
    return run_id


async def artifact_factory(ctx: FactoryContext) -> uuid.UUID:
    from db.models.pipelines import Artifact

    run_id = await ctx.ensure("run_id")
    artifact_id = uuid.uuid4()
    key = f"matrix/{artifact_id}/dist.tar.gz"
    content = b"matrix artifact"
    if ctx.settings is not None:
        from infra.storage import create_object_store

        key = create_object_store(ctx.settings).put_bytes(key, content)
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Artifact(
                id=artifact_id,
                run_id=run_id,
                name="dist.tar.gz",
                object_key=key,
                size_bytes=len(content),
            )
        )
    return artifact_id


async def agent_task_factory(ctx: FactoryContext) -> uuid.UUID:
    from db.models.agent import AgentTask

    project_id = await ctx.ensure("project_id")
    task_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=ctx.org.org_id,
                project_id=project_id,
                task_type="generate_pipeline",
                status="completed",
            )
        )
    return task_id


async def deployment_factory(ctx: FactoryContext) -> uuid.UUID:
    from db.models.deployments import Deployment

    environment_id = await ctx.ensure("environment_id")
    project_id = await ctx.ensure("project_id")
    deployment_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Deployment(
                id=deployment_id,
                environment_id=environment_id,
                project_id=project_id,
                organization_id=ctx.org.org_id,
                version="v1",
                status="active",
                provider="static",
            )
        )
    return deployment_id


async def invoice_factory(ctx: FactoryContext) -> uuid.UUID:
    from datetime import UTC, datetime, timedelta

    from db.models.billing import Invoice

    invoice_id = uuid.uuid4()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Invoice(
                id=invoice_id,
                organization_id=ctx.org.org_id,
                invoice_number=f"MATRIX-{invoice_id.hex[:12]}",
                period_start=start,
                period_end=start + timedelta(days=31),
                status="open",
            )
        )
    return invoice_id


async def payment_method_factory(ctx: FactoryContext) -> uuid.UUID:
    from db.models.billing import PaymentMethod

    method_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            PaymentMethod(
                id=method_id,
                organization_id=ctx.org.org_id,
                stripe_payment_method_id=f"pm_matrix_{method_id.hex[:16]}",
                brand="visa",
                last4="4242",
            )
        )
    return method_id


async def organization_factory(ctx: FactoryContext) -> uuid.UUID:
    """Routes under /organizations/{organization_id}: the organization itself."""
    return ctx.org.org_id


# Path parameter name -> factory creating that object in ctx.org. Add yours here.
FACTORIES: dict[str, Factory] = {
    "organization_id": organization_factory,
    "project_id": project_factory,
    "environment_id": environment_factory,
    "key_id": api_key_factory,
    "api_key_id": api_key_factory,
    "member_id": member_factory,
    "invitation_id": invitation_factory,
    "pipeline_id": pipeline_factory,
    "run_id": run_factory,
    "artifact_id": artifact_factory,
    "task_id": agent_task_factory,
    "deployment_id": deployment_factory,
    "invoice_id": invoice_factory,
    "payment_method_id": payment_method_factory,
    **INTEGRATION_FACTORIES,
    **NOTIFICATION_FACTORIES,
}

# Values for path parameters that are not ids (`{period}`, `{name}` ...).
PATH_VALUES: dict[str, str] = {
    "stage": "build",
    "path": "index.html",
    "version": "1",
    "number": "1",
}


async def promote_body(ctx: FactoryContext) -> dict[str, str]:
    """Promotion needs a second environment of the same project."""
    return {"target_environment_id": str(await environment_factory(ctx))}


# (METHOD, path template) -> JSON body (or an async `ctx -> body`), where the body generated
# from the OpenAPI schema would not pass validation or would point at the wrong objects.
_PIPELINE_DOCUMENT = {"name": "matrix", "stages": [{"name": "build", "commands": ["true"]}]}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/projects/{project_id}/pipelines"): _PIPELINE_DOCUMENT,
    ("PUT", "/v1/pipelines/{pipeline_id}"): _PIPELINE_DOCUMENT,
    ("POST", "/v1/deployments/{deployment_id}/promote"): promote_body,
    ("POST", "/v1/projects/{project_id}/repository/github-app"): app_repository_body,
    ("PUT", "/v1/projects/{project_id}/repository"): {
        "provider": "github",
        "url": "https://github.com/forgeline/matrix.git",
    },
    ("POST", "/v1/environments/{environment_id}/deployments"): {"version": "v1"},
    ("POST", "/v1/projects/{project_id}/environments"): {
        "name": "matrix-env",
        "env_type": "staging",
        "provider": "static",
    },
}

# (METHOD, path template) -> why the route is deliberately reachable across tenants (e.g. a
# public, unguessable-URL site preview). Keep this empty unless there is a product reason.
EXEMPT: dict[tuple[str, str], str] = {
    ("POST", "/v1/me/invitations/{invitation_id}/accept"): (
        "a person's own invitations: API keys are refused (403) before any lookup; another "
        "person's invitation is 404 (tests/api/test_accounts_consent.py)"
    ),
    ("POST", "/v1/me/invitations/{invitation_id}/decline"): (
        "a person's own invitations: API keys are refused (403) before any lookup; another "
        "person's invitation is 404 (tests/api/test_accounts_consent.py)"
    ),
    ("GET", "/v1/sites/{deployment_id}/{path:path}"): (
        "the local static host serves published sites publicly, like any website"
    ),
}
