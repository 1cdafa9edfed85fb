"""What a new virtualenv of each host Python starts with (pip, and setuptools where ensurepip
brings it), made once per interpreter by the build host and mounted read-only into the
sandboxes: a stage copies it into its virtualenv instead of running ensurepip (a pip install
that compiles a thousand files) for every stage."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

from infra.runners.python_toolchain import PythonInstall, install_mounts
from infra.runners.sandbox_args import PYTHON_SEEDS, PYTHON_SEEDS_MOUNT, SandboxConfig

SEED_SECONDS = 300.0
_lock = threading.Lock()


def seeds_dir(config: SandboxConfig) -> Path:
    return config.state_dir / PYTHON_SEEDS


def python_mounts(config: SandboxConfig, installs: tuple[PythonInstall, ...]) -> tuple[Path, ...]:
    """The installations outside /usr, each bound read-only into every sandbox at its own
    path; the seeds' directory made (readable by the build user) for its own mount."""
    seeds = seeds_dir(config)
    seeds.mkdir(parents=True, exist_ok=True)
    seeds.chmod(0o755)
    return install_mounts(installs)


def seed_path(config: SandboxConfig, install: PythonInstall) -> Path:
    digest = hashlib.sha256(str(install.executable).encode()).hexdigest()[:12]
    return seeds_dir(config) / f"{install.version}-{digest}"


def ensure_seed(config: SandboxConfig, install: PythonInstall) -> Path | None:
    """The seed's site-packages directory for `install` as the sandbox sees it, made on first
    use (blocking); None when this interpreter cannot make one (the stage then runs ensurepip
    itself)."""
    target = seed_path(config, install)
    site = target / "site-packages"
    inside = Path(PYTHON_SEEDS_MOUNT) / target.name / "site-packages"
    if site.is_dir():
        return inside
    with _lock:
        if site.is_dir():
            return inside
        work = target.with_name(f".{target.name}-{uuid.uuid4().hex[:8]}")
        try:
            venv = work / "venv"
            subprocess.run(
                [str(install.executable), "-I", "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                timeout=SEED_SECONDS,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
            made = venv / "lib" / f"python{install.minor[0]}.{install.minor[1]}" / "site-packages"
            os.rename(made, work / "site-packages")
            shutil.rmtree(venv)
            for path in work.rglob("*"):  # readable by the build user whatever the umask
                path.chmod(0o755 if path.is_dir() else 0o644)
            work.chmod(0o755)
            os.rename(work, target)  # whole or not at all
        except (OSError, subprocess.SubprocessError):
            return inside if site.is_dir() else None
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
    return inside
