"""Regenerate db/migrations/versions/0001_initial.py from all models against an empty database.

Schema changes after 0002 are revisions of their own (0003_build_slots, ...): they upgrade the
databases `make run` keeps in `.data/`. Regenerating 0001 folds them in, so it is for squashing
the chain only, together with removing those revisions (the check at the end fails otherwise).

Usage: `uv run python -m db.regen_migration`. Uses FORGELINE_REGEN_DATABASE_URL when set (a
scratch database is created on that server if possible), otherwise a throwaway embedded Postgres.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from db.session import async_database_url, driver_dsn
from db.sql_quoting import quote_ident
from forgeline.blocking import run_blocking

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "db" / "migrations"
INITIAL = MIGRATIONS / "versions" / "0001_initial.py"
INITIAL_REVISION = "0001_initial"


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A fresh embedded Postgres on a free port in a temp dir; yields its superuser's URL."""
    from forgeline.embedded.postgres import EmbeddedPostgres, free_port

    workdir = Path(tempfile.mkdtemp(prefix="fl-regen-"))
    server = EmbeddedPostgres(
        workdir / "pg", free_port(), database="postgres", server_options={"fsync": "off"}
    )
    try:
        server.start()
        yield server.superuser_url
    finally:
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


async def _admin_execute(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server of `server_url`, drop it afterwards; yields the
    asyncpg URL to it (the given one when no database can be created there)."""
    url = make_url(async_database_url(server_url))
    name = f"forgeline_regen_{uuid.uuid4().hex[:12]}"
    admin = driver_dsn(url.set(database="postgres").render_as_string(hide_password=False))
    try:
        run_blocking(lambda: _admin_execute(admin, f"CREATE DATABASE {quote_ident(name)}"))
    except asyncpg.PostgresError:
        # No CREATEDB privilege: trust the given database to be empty.
        yield url.render_as_string(hide_password=False)
        return
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        run_blocking(
            lambda: _admin_execute(
                admin, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"
            )
        )


def alembic_config(url: str, script_location: Path = MIGRATIONS) -> Config:
    """An Alembic Config for this repository pointed at `url` (used by tests too)."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def _tidy(path: Path) -> None:
    """Best-effort lint fix + format so the generated file matches the repository style."""
    ruff = Path(sys.executable).parent / "ruff"
    exe = str(ruff) if ruff.exists() else "ruff"
    for args in (["check", "--fix", "--quiet", str(path)], ["format", "--quiet", str(path)]):
        subprocess.run([exe, *args], check=False, capture_output=True, cwd=ROOT)


def regenerate(url: str) -> Path:
    """Autogenerate 0001 against the empty database at `url`, then prove head applies cleanly."""
    with tempfile.TemporaryDirectory(prefix="forgeline-alembic-") as tmp:
        scripts = Path(tmp) / "migrations"
        (scripts / "versions").mkdir(parents=True)
        shutil.copy(MIGRATIONS / "env.py", scripts / "env.py")
        shutil.copy(MIGRATIONS / "script.py.mako", scripts / "script.py.mako")
        cfg = alembic_config(url, scripts)
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id=INITIAL_REVISION)
        generated = scripts / "versions" / f"{INITIAL_REVISION}.py"
        INITIAL.parent.mkdir(parents=True, exist_ok=True)
        INITIAL.write_text(generated.read_text())
    _tidy(INITIAL)
    # The regenerated chain (0001 + hand-written revisions) must apply and match the models.
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    command.check(cfg)
    return INITIAL


def main() -> None:
    override = os.environ.get("FORGELINE_REGEN_DATABASE_URL")
    if override:
        with scratch_database(override) as url:
            path = regenerate(url)
    else:
        with throwaway_postgres() as server, scratch_database(server) as url:
            path = regenerate(url)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
