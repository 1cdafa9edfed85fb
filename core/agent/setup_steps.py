"""Steps an app's tests need after the install that no manifest lists: an .env from its
example, a Laravel app key, migrations on a file database (Laravel, Rails), Django's collected
static files when its storage keeps a manifest."""

from __future__ import annotations

import re
from typing import Any

from core.agent.js_workspaces import runner_exec
from core.agent.repo_files import RepoFiles, join
from workflows.agent_models import AppDetection

ENV_EXAMPLES = (".env.example", ".env.sample", ".env.dist", ".env.template")


def env_copy(files: RepoFiles, base: str) -> str | None:
    """`cp -n .env.example .env` when the repository ships an example and no .env."""
    if files.exists(join(base, ".env")):
        return None
    example = next((e for e in ENV_EXAMPLES if files.exists(join(base, e))), None)
    return f"cp -n {example} .env" if example else None


def _env_value(files: RepoFiles, base: str, key: str) -> str | None:
    for name in ENV_EXAMPLES:
        text = files.text(join(base, name)) or ""
        match = re.search(rf"^\s*{re.escape(key)}\s*=\s*\"?([^\"\s#]*)", text, re.MULTILINE)
        if match:
            return match.group(1)
    return None


def app_setup(files: RepoFiles, app: AppDetection) -> list[str]:
    """Setup commands for a non-JS app (Node apps get theirs from the Node detector)."""
    base = app.path or "."
    steps: list[str] = []
    copy = env_copy(files, base)
    if app.framework == "laravel":
        if copy:
            steps.append(copy)
        if files.exists(join(base, ".env")) or copy:
            steps.append("php artisan key:generate --force")
        if _env_value(files, base, "DB_CONNECTION") == "sqlite":
            steps.append("touch database/database.sqlite && php artisan migrate --force")
    elif app.framework == "rails":
        if copy:
            steps.append(copy)
        database = files.text(join(base, "config/database.yml")) or ""
        if re.search(r"adapter:\s*sqlite3", database):
            steps.append("bin/rails db:prepare")
    elif app.framework == "django":
        if copy:
            steps.append(copy)
        if _manifest_static_storage(files, base):
            # Tests run with DEBUG off: a manifest storage then needs the collected manifest.
            steps.append(app.build_command or "python manage.py collectstatic --noinput")
    elif copy:
        steps.append(copy)
    return [s for s in steps if s not in app.setup_commands]


def _manifest_static_storage(files: RepoFiles, base: str) -> bool:
    """Django settings (`settings.py` or a `settings/` package, at most two levels down) that
    store static files through a manifest (Django's or WhiteNoise's)."""
    tops = [base, *files.subdirs(base)]
    candidates = [join(top, "settings.py") for top in tops]
    packages = [top for top in tops if top.rsplit("/", 1)[-1] == "settings"]
    packages += [
        d for top in tops for d in files.subdirs(top) if d.rsplit("/", 1)[-1] == "settings"
    ]
    for package in packages:
        names = sorted(f.name for f in files.path(package).iterdir() if f.suffix == ".py")
        candidates += [join(package, name) for name in names[:20]]
    return any("ManifestStaticFilesStorage" in (files.text(c) or "") for c in candidates)


def node_unit_setup(files: RepoFiles, app: AppDetection) -> list[str]:
    """Unit suites that run in a browser (Vitest browser mode on Playwright) need it installed;
    Karma needs a Chrome the image must carry (noted, not installed)."""
    if not app.test_command:
        return []
    pkg = files.json(join(app.path, "package.json")) or {}
    deps: dict[str, Any] = {}
    for key in ("dependencies", "devDependencies"):
        if isinstance(pkg.get(key), dict):
            deps.update(pkg[key])
    steps: list[str] = []
    if "@vitest/browser" in deps and ("playwright" in deps or "@playwright/test" in deps):
        steps.append(f"{runner_exec(app.package_manager or 'npm')} playwright install --with-deps")
    if "karma" in deps and "karma runs the unit tests in Chrome" not in app.evidence:
        app.evidence.append("karma runs the unit tests in Chrome")
    if "prisma" in deps or "@prisma/client" in deps:
        steps += _prisma_file_database(files, app)
    return [s for s in steps if s not in app.setup_commands]


def _prisma_file_database(files: RepoFiles, app: AppDetection) -> list[str]:
    """A Prisma schema on SQLite needs its database file migrated before the tests; other
    providers need a database service instead."""
    base = app.path or "."
    schema = files.text(join(base, "prisma/schema.prisma")) or ""
    datasource = re.search(r"datasource\s+\w+\s*\{([^}]*)\}", schema)
    if datasource is None or not re.search(r'provider\s*=\s*"sqlite"', datasource.group(1)):
        return []
    url = re.search(r"url\s*=\s*(.+)", datasource.group(1))
    literal = url is not None and '"file:' in url.group(1)
    from_env = url is not None and "env(" in url.group(1)
    if not literal and not (from_env and _env_value(files, base, "DATABASE_URL")):
        return []
    run = runner_exec(app.package_manager or "npm")
    if files.is_dir(join(base, "prisma/migrations")):
        return [f"{run} prisma migrate deploy"]
    return [f"{run} prisma db push --skip-generate"]
