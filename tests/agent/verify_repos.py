"""Repositories for verification tests: offline Node packages (no dependencies, no audit) whose
generated pipeline runs in the sandbox runner without reaching any registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

# Offline npm: the sandbox's npm never reaches a registry (no dependencies, no audit).
NPMRC = "offline=true\naudit=false\nfund=false\nupdate-notifier=false\n"
# Reads its settings from .env, which the repository ships as .env.defaults only.
NEEDS_ENV = (
    "const fs = require('fs');\n"
    "const env = fs.readFileSync('.env', 'utf8');\n"
    "if (!env.includes('GREETING=hello')) { throw new Error('no greeting'); }\n"
    "console.log('tests passed');\n"
)
FAILS = "const assert = require('assert');\nassert.strictEqual(1 + 1, 3, 'arithmetic is broken');\n"
# A test that logs until its run is cancelled.
WAITS = "setInterval(() => console.log('still testing'), 200);\n"
NO_SCAN = {"include_security_scan": False, "include_lint": False}


def git_repo(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    ident = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", *ident, "-C", str(root), "commit", "-q", "-m", "c"], check=True)
    return root


def node_repo(root: Path, test_js: str, **extra: str) -> Path:
    package = {"name": "sample", "version": "1.0.0", "scripts": {"test": "node test.js"}}
    return git_repo(
        root,
        {"package.json": json.dumps(package), ".npmrc": NPMRC, "test.js": test_js, **extra},
    )
