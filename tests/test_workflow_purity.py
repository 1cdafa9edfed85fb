"""Workflow code is pure: importing every module of workflows/ in a fresh interpreter loads no
SDK with side effects (database drivers, ORMs, Stripe, Docker, AWS, Anthropic, HTTP stacks), so
the Temporal sandbox never re-imports them and replays never depend on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = (
    "sqlalchemy",
    "asyncpg",
    "psycopg",
    "alembic",
    "stripe",
    "docker",
    "boto3",
    "botocore",
    "anthropic",
    "httpx",
    "fastapi",
    "starlette",
    "db",
    "core",
    "infra",
    "activities",
    "api",
)

PROBE = """
import importlib, json, pkgutil, sys
import workflows
names = [m.name for m in pkgutil.walk_packages(workflows.__path__, "workflows.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_importing_every_workflow_module_loads_no_side_effecting_sdk() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert len(found["modules"]) >= 8  # every workflow, model and contract module
    leaked = sorted(set(FORBIDDEN) & set(found["loaded"]))
    assert leaked == [], f"workflow modules load {leaked}"
