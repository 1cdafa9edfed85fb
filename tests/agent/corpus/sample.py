"""The shape of a fixture repository and how it is written to disk (optionally as a git
repository), with the package.json and JSON builders the layouts use."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def package_json(
    deps: dict[str, str], scripts: dict[str, str] | None = None, **extra: object
) -> str:
    body: dict[str, object] = {"name": extra.pop("name", "app"), "version": "1.0.0"}
    body["scripts"] = scripts or {"build": "build", "test": "test", "lint": "lint"}
    body["dependencies"] = deps
    body.update(extra)
    return json.dumps(body, indent=2)


@dataclass(frozen=True)
class SampleRepo:
    name: str
    framework: str
    files: dict[str, str]
    package_manager: str | None = None
    monorepo: bool = False
    app_frameworks: tuple[str, ...] = field(default_factory=tuple)
    output_directory: str | None = None
    # Attributes the primary app must have (test_command, setup_commands, ...).
    expect: dict[str, object] = field(default_factory=dict)


def json_text(body: object) -> str:
    return json.dumps(body, indent=2)


def write_repo(sample: SampleRepo, root: Path, *, git: bool = False) -> Path:
    """Write the sample under root/<name>; with git=True also commit it (for clone tests)."""
    repo = root / sample.name
    for rel, content in sample.files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    if git:
        env_args = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
        subprocess.run(
            ["git", *env_args, "-C", str(repo), "commit", "-q", "-m", "sample"], check=True
        )
    return repo
