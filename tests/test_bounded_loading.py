"""Every YAML, JSON or TOML document that comes from outside (a repository's files above all)
is parsed by the one bounded loader, forgeline.safe_parsing: a raw `json.loads`,
`yaml.safe_load` or `tomllib.loads` in product code fails this test unless its module is listed
below with what it parses and why that input is trusted or bounded already."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("api", "activities", "core", "db", "forgeline", "infra", "workflows", "worker.py")

RAW_LOADERS = {
    "json": {"load", "loads"},
    "yaml": {"load", "safe_load", "full_load", "unsafe_load", "load_all", "safe_load_all"},
    "tomllib": {"load", "loads"},
}

# Module -> what its raw loads parse (none of it a repository's or a user's document).
TRUSTED: dict[str, str] = {
    "forgeline/safe_parsing.py": "the bounded loader itself",
    "infra/sites.py": "the site manifest Forgeline wrote to its own object store",
    "infra/proxy_routes.py": "the answer of the reverse proxy's admin API",
    "infra/stripe_billing.py": "a Stripe event, after its signature was verified",
    "core/queries.py": "a pagination cursor of two values; anything else is a 422",
    "core/agent/executions.py": "run logs the agent task stored itself",
    "core/agent/turns.py": "the conversation transcript the agent task stored itself",
    "core/agent/tool_calls.py": "its own json.dumps output, re-read",
    "core/agent/tools.py": "the validation result the agent task stored itself",
    "core/runs/run_limits.py": "a plan's features, from Forgeline's database",
    "core/runs/stage_cache.py": "cache metadata Forgeline wrote to its own object store",
    "core/accounts/bootstrap.py": "the operator's bootstrap file",
    "activities/runs/run_variables.py": "variables Forgeline encrypted itself",
    "forgeline/pipeline_validation.py": "actionlint's report and Forgeline's own schema",
    "forgeline/stack.py": "the local stack's own state file",
    "forgeline/cli/common.py": "the CLI user's own credentials file",
    "forgeline/cli/config.py": "the CLI user's own configuration file",
    "forgeline/cli/pipelines.py": "a file the CLI user names, sent to the API (which validates)",
    "forgeline/cli/environments.py": "JSON the CLI user types, sent to the API (which validates)",
    "forgeline/cli/projects.py": "JSON the CLI user types, sent to the API (which validates)",
}


def raw_loads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, call) of every raw loader call, by module attribute or by imported name."""
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in RAW_LOADERS:
            for alias in node.names:
                if alias.name in RAW_LOADERS[node.module]:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.attr in RAW_LOADERS.get(func.value.id, ())
        ):
            found.append((node.lineno, f"{func.value.id}.{func.attr}"))
        elif isinstance(func, ast.Name) and func.id in imported:
            found.append((node.lineno, imported[func.id]))
    return found


def product_modules() -> list[Path]:
    files: list[Path] = []
    for name in PRODUCT:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [f for f in files if "migrations" not in f.parts]


def test_no_raw_document_loads_outside_the_trusted_modules() -> None:
    offenders = []
    seen: set[str] = set()
    for path in product_modules():
        rel = path.relative_to(ROOT).as_posix()
        calls = raw_loads(ast.parse(path.read_text(), rel))
        if calls:
            seen.add(rel)
        if calls and rel not in TRUSTED:
            offenders += [f"{rel}:{line} {call}" for line, call in calls]
    assert not offenders, (
        "parse documents from outside with forgeline.safe_parsing (load_json/load_yaml/"
        "load_toml, read_document for a file), or list the module in TRUSTED with why: "
        + ", ".join(offenders)
    )
    # The list shrinks with the code: a module that no longer parses raw leaves it.
    assert not set(TRUSTED) - seen, sorted(set(TRUSTED) - seen)


def test_the_scan_finds_every_spelling() -> None:
    source = """
import json, yaml, tomllib
from json import loads as parse
from yaml import safe_load
json.loads(a); yaml.load(b); tomllib.load(c); parse(d); safe_load(e); yaml.safe_load_all(f)
other.loads(g); json.dumps(h)
"""
    assert [call for _, call in raw_loads(ast.parse(source))] == [
        "json.loads",
        "yaml.load",
        "tomllib.load",
        "json.loads",
        "yaml.safe_load",
        "yaml.safe_load_all",
    ]
