"""A Python stage in the sandbox: the interpreter its image maps to (infra/runners/
python_toolchain.py), a clean virtualenv of its own in the run's home, first on PATH,
and Poetry, uv and the like installed from the package index (each in a virtualenv of its own,
like pipx) the first time the stage calls one it did not install. The virtualenv goes with the
stage; concurrent stages of a run never share one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from infra.runners.base import OutputCallback, StageOutcome, StageProcess
from infra.runners.python_seeds import ensure_seed
from infra.runners.python_toolchain import (
    PythonChoice,
    PythonInstall,
    PythonRequest,
    choose_python,
    requested_python,
)
from infra.runners.sandbox_args import SANDBOX_HOME, STANDARD_PATH, SandboxConfig
from infra.runners.sandbox_workspace import run_home

# Per stage attempt, in the run's home (outside the checkout, so a lint or test run over `.`
# never reads the stage's own virtualenv): <name>/venv, <name>/shims, <name>/tools.
VENVS = (".cache", "forgeline", "venvs")
# uv's project environment of the stage (`uv sync`, `uv run`), beside its virtualenv: `uv sync`
# makes it exact, which would remove pip and uv themselves from the stage's virtualenv.
UV_PROJECT_DIR = "uv-project"
# Commands installed on first use when the stage has not installed them itself.
ON_DEMAND_TOOLS = ("poetry", "uv", "pipenv", "pdm", "hatch", "tox", "nox", "pipx", "twine")
# The sandbox's trust store (the host's /etc/ssl), for pip, uv and requests when the operator
# configured no CA: they would otherwise trust only the roots they bundle.
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PYTHON_CA_VARIABLES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
# Exit code of a stage whose virtualenv could not be made (the runner's "could not run").
SETUP_EXIT = 125
# Shared by every on-demand tool: `.tool <base> <tool> args...`. A lock keeps two calls of
# the stage from installing the same tool at once.
TOOL_SHIM = r"""#!/bin/sh
base=$1; tool=$2; shift 2
home=$base/tools/$tool
if [ ! -x "$home/bin/$tool" ]; then
  exec 9>"$base/tools/.$tool.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  if [ ! -x "$home/bin/$tool" ]; then
    echo "forgeline: $tool is not installed in this stage: installing it from the package" \
      "index into a virtualenv of its own" >&2
    rm -rf "$home"
    "$base/venv/bin/python" -m venv "$home" >&2 &&
      "$home/bin/python" -m pip install -q "$tool" >&2 || {
      echo "forgeline: could not install $tool from the package index" >&2
      rm -rf "$home"; exit 127; }
  fi
  exec 9>&-
fi
exec "$home/bin/$tool" "$@"
"""


@dataclass(frozen=True)
class PythonStage:
    """A stage rewritten to start in its virtualenv, with what its log says first."""

    process: StageProcess
    opening: bytes
    notes: tuple[str, ...] = ()


def stage_base(name: str) -> str:
    """The stage attempt's Python directory as the sandbox sees it."""
    return "/".join((SANDBOX_HOME, *VENVS, name))


def host_stage_dir(root: Path, name: str) -> Path:
    """The stage attempt's Python directory on the host (the run whose workspace is `root`)."""
    return run_home(root).joinpath(*VENVS, name)


def _make_venv(install: PythonInstall, seed: Path | None) -> str:
    """Shell that makes "$fl_base/venv": from the seed (a copy, no pip install) when there is
    one, else through ensurepip."""
    python = shlex.quote(str(install.executable))
    if seed is None:
        return f'{python} -m venv "$fl_base/venv"'
    major, minor = install.minor
    site = f'"$fl_base/venv/lib/python{major}.{minor}/site-packages"'
    pips = f"pip pip{major} pip{major}.{minor}"
    return (
        f'{python} -m venv --without-pip "$fl_base/venv" && '
        f"cp -R {shlex.quote(str(seed))}/. {site}/ && for fl_pip in {pips}; do "
        'printf \'#!/bin/sh\\nexec "%s/venv/bin/python" -m pip "$@"\\n\' "$fl_base" '
        '> "$fl_base/venv/bin/$fl_pip" && chmod 755 "$fl_base/venv/bin/$fl_pip" || exit 125; done'
    )


def setup_script(install: PythonInstall, base: str, script: str, seed: Path | None = None) -> str:
    """The virtualenv and the on-demand tools made as the build user, then the stage's own
    script in a shell of its own."""
    q = shlex.quote
    tools = " ".join(ON_DEMAND_TOOLS)
    return (
        f"fl_base={q(base)}\n"
        # Whatever an earlier process of this name left (a crashed worker's) goes first.
        'rm -rf "$fl_base" && mkdir -p "$fl_base/shims" "$fl_base/tools" || exit 125\n'
        f'{_make_venv(install, seed)} || {{ echo "forgeline: could '
        f"not create the stage's virtualenv with Python {install.version}\" >&2; "
        f"exit {SETUP_EXIT}; }}\n"
        "cat > \"$fl_base/shims/.tool\" <<'FORGELINE_TOOL_SHIM'\n"
        f"{TOOL_SHIM}FORGELINE_TOOL_SHIM\n"
        f"for fl_tool in {tools}; do\n"
        '  printf \'#!/bin/sh\\nexec "%s/shims/.tool" "%s" %s "$@"\\n\' '
        '"$fl_base" "$fl_base" "$fl_tool" > "$fl_base/shims/$fl_tool" || exit 125\n'
        "done\n"
        'chmod 755 "$fl_base/shims/"* "$fl_base/shims/.tool" || exit 125\n'
        "unset fl_base fl_tool fl_pip\n"
        f"exec /bin/sh -c {q(script)}\n"
    )


def python_environment(install: PythonInstall, base: str, config: SandboxConfig) -> dict[str, str]:
    """The virtualenv first on PATH, the image's Python for uv's own environments too (`uv
    sync` would take the first system Python), and uv's project environment in the stage's own
    directory (`uv sync` and `uv run` would otherwise share `.venv` in the checkout with every
    stage running beside it: matrix legs removing each other's files); pip quiet about itself
    and never prompting; the
    operator's package index (a registry mirror) for pip and uv when one is configured, and the
    host's trust store when no CA is (the runner sets the operator's CA variables itself)."""
    home = SANDBOX_HOME
    env = {
        "PATH": f"{base}/venv/bin:{base}/shims:{home}/.local/bin:{STANDARD_PATH}",
        "VIRTUAL_ENV": f"{base}/venv",
        "UV_PYTHON": str(install.executable),
        "UV_PROJECT_ENVIRONMENT": f"{base}/{UV_PROJECT_DIR}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    if config.ca_bundle is None and not config.pass_host_ca and SYSTEM_CA.is_file():
        env |= dict.fromkeys(PYTHON_CA_VARIABLES, str(SYSTEM_CA))
    index_url = config.python_index_url
    if index_url:
        env |= {"PIP_INDEX_URL": index_url, "UV_DEFAULT_INDEX": index_url}
        parts = urlsplit(index_url)
        if parts.scheme == "http" and parts.hostname:
            env |= {"PIP_TRUSTED_HOST": parts.hostname, "UV_INSECURE_HOST": parts.hostname}
    return env


def python_choice(
    process: StageProcess, installs: tuple[PythonInstall, ...]
) -> tuple[PythonRequest, PythonChoice] | None:
    """None for a stage whose image is not a Python one (it runs as before)."""
    request = requested_python(process.image)
    return None if request is None else (request, choose_python(request, installs))


def prepare_python_stage(
    process: StageProcess,
    request: PythonRequest,
    choice: PythonChoice,
    config: SandboxConfig,
    seed: Path | None = None,
) -> PythonStage:
    notes = (choice.note,) if choice.note else ()
    warning = f"forgeline: warning: {choice.note}\n" if choice.note else ""
    if choice.install is None:
        return PythonStage(process, warning.encode(), notes)
    base = stage_base(process.name)
    env = (
        python_environment(choice.install, base, config) | process.env
    )  # the stage's own variables win
    opening = (
        f"{warning}forgeline: Python {choice.install.version} for image {request.image}, "
        f"in a new virtualenv first on PATH ({base}/venv)\n"
    )
    script = setup_script(choice.install, base, process.script, seed)
    return PythonStage(replace(process, script=script, env=env), opening.encode(), notes)


def remove_stage_venv(root: Path, name: str) -> None:
    """The stage's Python directory removed from the run's home after the stage; no link the
    build left on the way is followed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds: list[int] = []
    try:
        fds.append(os.open(run_home(root), flags))
        for part in VENVS:
            fds.append(os.open(part, flags, dir_fd=fds[-1]))
        shutil.rmtree(name, dir_fd=fds[-1])
    except FileNotFoundError:
        return
    except OSError:
        return  # a link or a file in the way: nothing of the host is touched
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


async def run_python_aware(
    process: StageProcess,
    on_output: OutputCallback,
    installs: tuple[PythonInstall, ...],
    config: SandboxConfig,
    run: Callable[[StageProcess, OutputCallback], Awaitable[StageOutcome]],
) -> StageOutcome:
    """`run` the stage; a Python stage in its own virtualenv, its notes in the outcome."""
    chosen = python_choice(process, installs)
    if chosen is None:
        return await run(process, on_output)
    request, choice = chosen
    seed = None
    if choice.install is not None:
        seed = await asyncio.to_thread(ensure_seed, config, choice.install)
    python = prepare_python_stage(process, request, choice, config, seed)
    await on_output(python.opening)
    try:
        outcome = await run(python.process, on_output)
    finally:
        root = process.root or process.workspace
        await asyncio.shield(asyncio.to_thread(remove_stage_venv, root, process.name))
    return replace(outcome, notes=(*outcome.notes, *python.notes))
