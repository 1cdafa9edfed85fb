"""Git submodules as the repository's own CI checks them out: a repository that declares
submodules (`.gitmodules`) and whose CI fetches them (actions/checkout `submodules: true` or
`recursive`, GitLab's GIT_SUBMODULE_STRATEGY, a `git submodule update` line), or that has no CI
to say otherwise, gets them fetched before the stages that read the checkout (tests often keep
their fixtures in one). Forgeline's own checkout never fetches them (infra/git.py). The CI files
are read as bounded text; nothing in `.gitmodules` is run or fetched here."""

from __future__ import annotations

import re

from core.agent.ci_configs import MAX_CI_FILES
from core.agent.repo_files import RepoFiles
from core.agent.submodules import declared_submodules

SUBMODULE_STEP = "git submodule update --init --recursive"
MAX_CI_CHARS = 256 * 1024
_ASKS = re.compile(
    r"^\s*submodules:\s*['\"]?(?:true|recursive)['\"]?\s*(?:#.*)?$"
    r"|GIT_SUBMODULE_STRATEGY:\s*['\"]?(?:normal|recursive)"
    r"|\bgit\s+submodule\s+(?:update|init|sync)\b"
    r"|^\s*-?\s*git:\s*\n\s*submodules:\s*true",
    re.M | re.I,
)
_SINGLE_CI_FILES = (".gitlab-ci.yml", ".travis.yml", ".circleci/config.yml", "azure-pipelines.yml")


def _ci_texts(files: RepoFiles) -> list[str]:
    texts: list[str] = []
    folder = ".github/workflows"
    if files.is_dir(folder):
        names = sorted(
            p.name for p in files.path(folder).iterdir() if p.suffix in (".yml", ".yaml")
        )
        texts += [files.text(f"{folder}/{name}") or "" for name in names[:MAX_CI_FILES]]
    texts += [files.text(name) or "" for name in _SINGLE_CI_FILES if files.exists(name)]
    return [t[:MAX_CI_CHARS] for t in texts]


def submodule_setup(files: RepoFiles) -> list[str]:
    """[the step that fetches the submodules] when the repository's stages need them, else []."""
    if not declared_submodules(files.text(".gitmodules")):
        return []
    texts = _ci_texts(files)
    if texts and not any(_ASKS.search(text) for text in texts):
        return []  # the maintainers' CI runs without them
    return [SUBMODULE_STEP]
