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

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from db.session import sync_database_url

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "db" / "migrations"
INITIAL = MIGRATIONS / "versions" / "0001_initial.py"
INITIAL_REVISION = "0001_initial"


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A fresh embedded Postgres on a free port in a temp dir; yields a psycopg URL to it."""
    from forgeline.embedded.postgres import EmbeddedPostgres, free_port

    workdir = Path(tempfile.mkdtemp(prefix="fl-regen-"))
    server = EmbeddedPostgres(
        workdir / "pg", free_port(), database="postgres", server_options={"fsync": "off"}
    )
    try:
        server.start()
        yield sync_database_url(server.superuser_url)
    finally:
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server of `server_url`, drop it afterwards."""
    url = make_url(sync_database_url(server_url))
    name = f"forgeline_regen_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        # No CREATEDB privilege: trust the given database to be empty.
        yield url.render_as_string(hide_password=False)
        return
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic_config(url: str, script_location: Path = MIGRATIONS) -> Config:
    """An Alembic Config for this repository pointed at `url` (used by tests too)."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", sync_database_url(url).replace("%", "%%"))
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
