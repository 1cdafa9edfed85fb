"""Fixture corpus: one tiny repository per framework family and per generator capability,
written to disk by tests and bench. Each layout group is a module of its own; CORPUS is all of
them, in this order."""

from __future__ import annotations

from pathlib import Path

from tests.agent.corpus.compiled import COMPILED
from tests.agent.corpus.declared_commands import DECLARED_COMMANDS
from tests.agent.corpus.environments import ENVIRONMENTS
from tests.agent.corpus.js_workspaces import JS_WORKSPACES
from tests.agent.corpus.layouts import LAYOUTS
from tests.agent.corpus.python import PYTHON
from tests.agent.corpus.ruby_php import RUBY_PHP
from tests.agent.corpus.sample import SampleRepo, write_repo
from tests.agent.corpus.script_semantics import SCRIPT_SEMANTICS
from tests.agent.corpus.web import WEB

__all__ = [
    "CORPUS",
    "DECLARED_COMMANDS",
    "ENVIRONMENTS",
    "JS_WORKSPACES",
    "SCRIPT_SEMANTICS",
    "SampleRepo",
    "write_corpus",
    "write_repo",
]

# Every layout is detected and validated: the framework families first, then one layout per
# generator capability.
CORPUS: tuple[SampleRepo, ...] = (
    WEB
    + PYTHON
    + COMPILED
    + RUBY_PHP
    + LAYOUTS
    + SCRIPT_SEMANTICS
    + JS_WORKSPACES
    + DECLARED_COMMANDS
    + ENVIRONMENTS
)


def write_corpus(root: Path, *, git: bool = False) -> dict[str, Path]:
    return {s.name: write_repo(s, root, git=git) for s in CORPUS}
