"""Session fixtures on real services: embedded PostgreSQL (migrated once) and a Temporal dev server.

Every port is picked free and every directory is a temp dir, so several pytest sessions can run
side by side on one machine. Workflow/API tests commit real data: isolate by creating a fresh
organization per test instead of relying on empty tables.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from db.session import async_database_url, create_engine, create_session_maker
from forgeline.embedded.postgres import EmbeddedPostgres, free_port
from forgeline.embedded.temporal import TUNING_ARGS, temporal_binary, test_server_binary
from forgeline.payload_codec import (
    encrypted_data_converter,
    generate_payload_key,
    parse_payload_keys,
)
from forgeline.settings import SEARCH_ATTRIBUTES, Settings

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"

# Every workflow the suite runs, in-process or in a worker process it spawns, runs inside the
# Temporal sandbox: its runtime checks catch non-deterministic calls that workers (unsandboxed by
# default) would not.
os.environ.setdefault("FORGELINE_WORKFLOW_SANDBOX", "true")
# One payload key for the session: every client, in-process worker and worker process it spawns
# (they inherit the environment) encrypts and decrypts payloads as the product's processes do.
os.environ.setdefault("FORGELINE_PAYLOAD_KEYS", generate_payload_key())
DATA_CONVERTER = encrypted_data_converter(parse_payload_keys(os.environ["FORGELINE_PAYLOAD_KEYS"]))


# Durability is worthless for a throwaway test cluster; these make migrations and commits cheap.
TEST_PG_OPTIONS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "200",
}


# --------------------------------------------------------------------------- session plumbing


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    """A short temp dir for the whole session (short keeps the Postgres socket path valid)."""
    path = Path(tempfile.mkdtemp(prefix="fl-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _external_database_url() -> str | None:
    return os.environ.get("FORGELINE_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")


@pytest.fixture(scope="session")
def postgres(tmp_root: Path) -> Iterator[EmbeddedPostgres | None]:
    """The session's embedded PostgreSQL, or None when an external database URL is given."""
    if _external_database_url():
        yield None
        return
    server = EmbeddedPostgres(
        tmp_root / "pg", free_port(), database="forgeline", server_options=TEST_PG_OPTIONS
    )
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def run_migrations(url: str) -> None:
    """`alembic upgrade head` through the command API, pointed at `url`."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logger"] = False  # keep pytest's logging setup
    config.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    # configparser interpolates '%': escape it in URLs with percent-encoded passwords.
    config.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def migration_database_url(postgres: EmbeddedPostgres | None) -> str:
    """The schema owner's URL (Alembic's), never the one the application code under test gets."""
    if postgres is None:
        external = os.environ.get("FORGELINE_TEST_MIGRATION_DATABASE_URL")
        return external or _external_database_url() or ""
    return postgres.migrator_url


@pytest.fixture(scope="session")
async def database_url(postgres: EmbeddedPostgres | None, migration_database_url: str) -> str:
    """URL of a migrated database (embedded unless FORGELINE_TEST_DATABASE_URL/DATABASE_URL).

    Embedded, it is the application role's (db/roles.py: rows only, no DDL, no superuser), so
    every test proves the product works without more; migrations ran as the migrator.
    """
    url = _external_database_url() or (postgres.app_url if postgres else "")
    if ALEMBIC_INI.exists():
        # A thread: env.py may run its own event loop (async engine) and must not nest in ours.
        await asyncio.to_thread(run_migrations, migration_database_url)
    return url


@pytest.fixture(scope="session")
async def engine(database_url: str, settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, url=database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_maker(engine)


@pytest.fixture
async def db_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside an outer transaction that is rolled back after the test.

    `session.commit()` inside the test only releases a savepoint, so nothing leaks between tests.
    """
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection,
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,
            autoflush=False,
        )
        try:
            yield session
        finally:
            await session.close()
            if transaction.is_active:
                await transaction.rollback()


@asynccontextmanager
async def own_postgres_server(
    tmp_root: Path, *, migrated: bool = True
) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL server of one test's own (stopping or restarting it hits no other test),
    with the schema migrated unless told otherwise; destroyed afterwards."""
    server = EmbeddedPostgres(
        tmp_root / f"pg-{uuid.uuid4().hex[:8]}",
        free_port(),
        database="forgeline",
        server_options=TEST_PG_OPTIONS,
    )
    await asyncio.to_thread(server.start)
    try:
        if migrated:
            await asyncio.to_thread(run_migrations, server.migrator_url)
        yield server
    finally:
        await asyncio.to_thread(server.destroy)


@pytest.fixture
async def own_postgres(tmp_root: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A migrated PostgreSQL server of the test's own."""
    async with own_postgres_server(tmp_root) as server:
        yield server


# --------------------------------------------------------------------------- Temporal


def _search_attribute_keys() -> list[SearchAttributeKey[str]]:
    return [SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES]


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A local Temporal dev server (in-memory, same tuning flags as `make run`)."""
    external = os.environ.get("FORGELINE_TEST_TEMPORAL_ADDRESS")
    if external:
        client = await Client.connect(external, data_converter=DATA_CONVERTER)
        env = WorkflowEnvironment.from_client(client)
    else:
        env = await WorkflowEnvironment.start_local(
            namespace="default",
            data_converter=DATA_CONVERTER,
            search_attributes=_search_attribute_keys(),
            dev_server_existing_path=str(temporal_binary()),
            dev_server_extra_args=list(TUNING_ARGS),
        )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    config = temporal_env.client.service_client.config
    return str(config.target_host)


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The test server with time skipping, one per test module that asks for it.

    Per module, not per session: a workflow or an abandoned result wait left behind by one module
    can hold the server's time-skipping lock, and then no later timer would ever skip.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(test_server_binary()),
        data_converter=DATA_CONVERTER,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"


# --------------------------------------------------------------------------- settings + API


@pytest.fixture(scope="session")
def settings(
    tmp_root: Path,
    database_url: str,
    temporal_address: str,
    postgres: EmbeddedPostgres | None,
) -> Settings:
    """Test settings: real services, fresh Fernet key, temp data dir; local repos allowed; build
    hosts write through the build role, as `make run`'s does."""
    data_dir = tmp_root / "data"
    (data_dir / "objects").mkdir(parents=True, exist_ok=True)
    return Settings(
        environment="test",
        data_dir=data_dir,
        storage_dir=data_dir / "objects",
        database_url=database_url,
        build_database_url=(
            postgres.build_url if postgres else os.environ.get("FORGELINE_TEST_BUILD_DATABASE_URL")
        ),
        temporal_address=temporal_address,
        temporal_namespace="default",
        encryption_keys=Fernet.generate_key().decode(),
        allow_local_repositories=True,
        log_level="WARNING",
        workflow_sandbox=True,
    )


def _with_lifespan_state(app: Any, state: MutableMapping[str, Any]) -> Callable[..., Any]:
    """Give each request the lifespan state, as a server would (ASGITransport does not)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": {**state, **scope.get("state", {})}}
        await app(scope, receive, send)

    return asgi


@pytest.fixture(scope="session")
async def app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Any]:
    """`api.app.create_app(settings)` with its lifespan running for the whole session."""
    from api.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application) as state:
        application.state.forgeline_lifespan_state = dict(state or {})
        yield application


def loopback_client_address() -> str:
    """A client address of its own for each test client (in 127.0.0.0/8; no traffic goes
    there): the sign-in throttles count per address, and tests must not share allowances."""
    return "127." + ".".join(str(secrets.randbelow(254) + 1) for _ in range(3))


@pytest.fixture
async def api_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    state = getattr(app.state, "forgeline_lifespan_state", {})
    transport = httpx.ASGITransport(
        app=_with_lifespan_state(app, state), client=(loopback_client_address(), 50000)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


# --------------------------------------------------------------------------- exit status

# temporalio's Rust core can abort at interpreter exit (sdk-python#300, exit 134) after every
# test has passed. Once pytest has printed its summary we leave with pytest's own status and
# skip interpreter finalisation entirely. FORGELINE_PYTEST_NO_HARD_EXIT=1 turns this off.
_EXIT_STATUS: dict[str, int] = {}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if "status" not in _EXIT_STATUS or os.environ.get("FORGELINE_PYTEST_NO_HARD_EXIT") == "1":
        return
    if hasattr(config, "workerinput"):  # an xdist worker reports through its controller
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS["status"])
