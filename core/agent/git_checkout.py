"""What a checkout's git metadata says about the repository: its default branch (the remote's
HEAD when the clone recorded it, else the branch checked out), read from the files, no git run."""

from __future__ import annotations

import re
from pathlib import Path

# git check-ref-format's rules, narrowed to what a trigger may safely carry.
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/-]{1,200}(?<![./])$")
MAX_REF_FILE_BYTES = 4096


def _symbolic(path: Path, prefix: str) -> str | None:
    """The branch a symbolic ref file points at (`ref: refs/heads/master` -> master)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_REF_FILE_BYTES:
            return None
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    if not text.startswith("ref: " + prefix):
        return None
    branch = text.removeprefix("ref: " + prefix)
    return branch if _BRANCH.match(branch) else None


def default_branch(root: Path) -> str | None:
    """The repository's default branch as the checkout knows it, or None (detached, no .git)."""
    git = root / ".git"
    if git.is_symlink() or not git.is_dir():
        return None
    return _symbolic(git / "refs/remotes/origin/HEAD", "refs/remotes/origin/") or _symbolic(
        git / "HEAD", "refs/heads/"
    )
