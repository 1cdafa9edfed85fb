"""Per-stage control groups: the kernel's CPU, memory and process limits, and a kill of them all.

One group per stage attempt under `forgeline/` in each hierarchy. Works on the unified hierarchy
(cgroup v2) and on the legacy per-controller one (v1, as on hosts still booted that way). The
sandbox's launcher writes its own pid into `procs_files` before it execs the sandbox, so every
process the stage forks is counted and can be killed, whatever it does with sessions or signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_PARENT = "forgeline"
CPU_PERIOD_US = 100_000


class CgroupsUnavailable(RuntimeError):
    """Neither a writable unified hierarchy nor the v1 pids + memory controllers."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    pids: int
    cpus: float | None = None


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _unified_writable(root: Path) -> bool:
    controllers = root / "cgroup.controllers"
    if not controllers.exists() or not os.access(root, os.W_OK):
        return False
    available = set(controllers.read_text().split())
    return {"pids", "memory"} <= available


def _v1_writable(root: Path) -> bool:
    return all(os.access(root / name, os.W_OK) for name in ("pids", "memory"))


class StageCgroup:
    """The group of one stage attempt; `create` makes it, `destroy` kills and removes it."""

    def __init__(self, dirs: dict[str, Path], unified: bool) -> None:
        self.dirs = dirs
        self.unified = unified

    @property
    def name(self) -> str:
        return next(iter(self.dirs.values())).name

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def pids(self) -> list[int]:
        seen: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                seen.update(int(p) for p in procs.read_text().split())
        return sorted(seen)

    def kill(self) -> None:
        """SIGKILL every process in the group (forks racing the kill are caught by the loop)."""
        if self.unified:
            with contextlib.suppress(OSError):
                _write(next(iter(self.dirs.values())) / "cgroup.kill", "1")
                return
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def signal_all(self) -> None:
        """One SIGKILL to every process listed now (with a sandbox's pid 1 among them, the
        kernel kills the rest of its namespace); `kill` also waits until the group is empty."""
        if self.unified:
            self.kill()
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        self.kill()
        for directory in self.dirs.values():
            # rmdir fails while a dying process is still listed: a few tries, then leave it for
            # `remove_stale` of the next attempt.
            for _ in range(100):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill()
                    os.sched_yield()

    def destroy_patiently(self, poll: float = 0.002, limit: float = 5.0) -> None:
        """`destroy` for a background thread: while killed processes are still exiting (a
        sandbox's pid 1 tearing its namespaces down), sleep between tries instead of spinning."""
        deadline = time.monotonic() + limit
        while self.pids() and time.monotonic() < deadline:
            self.signal_all()
            time.sleep(poll)
        self.destroy()

    def wait_empty(self, poll: float = 0.005, limit: float = 5.0) -> None:
        """Until no process of the group is left (SIGKILLed again on each poll), at most `limit`
        seconds: a cancelled stage returns once its processes are gone, not while they exit."""
        deadline = time.monotonic() + limit
        while self.pids() and time.monotonic() < deadline:
            self.signal_all()
            time.sleep(poll)

    def memory_exceeded(self) -> bool:
        """Whether the kernel had to kill for memory in this group (OOM)."""
        memory = self.dirs.get("memory")
        if memory is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            if self.unified:
                for line in (memory / "memory.events").read_text().splitlines():
                    key, _, count = line.partition(" ")
                    if key == "oom_kill" and int(count) > 0:
                        return True
                return False
            return int((memory / "memory.failcnt").read_text()) > 0
        return False


class Cgroups:
    """The hierarchy this host offers; construct once per runner."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        if _unified_writable(root):
            self.unified = True
            self._enable_unified_controllers()
        elif _v1_writable(root):
            self.unified = False
        else:
            raise CgroupsUnavailable(
                f"no writable cgroup hierarchy at {root} (need the pids and memory controllers)"
            )

    def _enable_unified_controllers(self) -> None:
        parent = self.root / GROUP_PARENT
        parent.mkdir(exist_ok=True)
        wanted = {"pids", "memory", "cpu"} & set(
            (self.root / "cgroup.controllers").read_text().split()
        )
        for directory in (self.root, parent):
            with contextlib.suppress(OSError):
                _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))

    def _dirs(self, name: str) -> dict[str, Path]:
        if self.unified:
            group = self.root / GROUP_PARENT / name
            return {"pids": group, "memory": group, "cpu": group}
        dirs = {c: self.root / c / GROUP_PARENT / name for c in ("pids", "memory")}
        if os.access(self.root / "cpu", os.W_OK):
            dirs["cpu"] = self.root / "cpu" / GROUP_PARENT / name
        return dirs

    def create(self, name: str, limits: Limits) -> StageCgroup:
        dirs = self._dirs(name)
        for directory in set(dirs.values()):
            directory.mkdir(parents=True, exist_ok=True)
        group = StageCgroup(dirs, self.unified)
        try:
            self._apply(group, limits)
        except BaseException:
            group.destroy()
            raise
        return group

    def rename(self, group: StageCgroup, name: str) -> StageCgroup:
        """The same group (and its processes) under `name`; unchanged where the hierarchy cannot
        rename (cgroup v2 has no rename)."""
        dirs = self._dirs(name)
        moved: list[tuple[Path, Path]] = []
        try:
            for controller, old in group.dirs.items():
                if any(old == done for done, _ in moved):
                    continue  # the unified hierarchy: one directory for every controller
                new = dirs[controller]
                old.rename(new)
                moved.append((old, new))
        except (OSError, KeyError):
            for old, new in reversed(moved):
                with contextlib.suppress(OSError):
                    new.rename(old)
            return group
        return StageCgroup(dirs, self.unified)

    def apply(self, group: StageCgroup, limits: Limits) -> None:
        self._apply(group, limits)

    def _apply(self, group: StageCgroup, limits: Limits) -> None:
        pids, memory = group.dirs["pids"], group.dirs["memory"]
        _write(pids / "pids.max", str(limits.pids))
        if self.unified:
            _write(memory / "memory.max", str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                _write(memory / "memory.swap.max", "0")
        else:
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        cpu = group.dirs.get("cpu")
        if limits.cpus and cpu is not None:
            quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
            if self.unified:
                _write(cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(quota))

    def existing(self, prefix: str) -> list[StageCgroup]:
        """Groups left by earlier attempts (a crashed worker's) whose name starts with `prefix`."""
        if self.unified:
            parents = [self.root / GROUP_PARENT]
        else:
            parents = [self.root / c / GROUP_PARENT for c in ("pids", "memory", "cpu")]
        names: set[str] = set()
        for parent in parents:
            with contextlib.suppress(OSError):
                names.update(e.name for e in os.scandir(parent) if e.name.startswith(prefix))
        return [StageCgroup(self._dirs(name), self.unified) for name in sorted(names)]
