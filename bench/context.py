"""What `make bench` hands every `bench/bench_*.py`: services, the baseline, and the row type."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from bench.baseline import ChainResult, measure_chain
from forgeline.embedded.postgres import EmbeddedPostgres, free_port


@dataclass
class BenchRow:
    """One line of the table; `baseline` (same unit) turns `value` into a printed ratio."""

    bench: str
    metric: str
    value: float
    unit: str = "ms"
    baseline: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


@dataclass
class BenchContext:
    client: Client
    temporal_address: str
    work_dir: Path
    # Baseline chain results measured earlier in this run, keyed by N (1, 5, 20).
    baseline: dict[int, ChainResult] = field(default_factory=dict)
    _postgres: EmbeddedPostgres | None = None

    async def chain(self, n: int, repeats: int = 20) -> ChainResult:
        """The baseline for N activities, measured now if this run has not measured it yet."""
        if n not in self.baseline:
            self.baseline[n] = await measure_chain(self.client, n, repeats)
        return self.baseline[n]

    async def database_url(self) -> str:
        """An embedded PostgreSQL with migrations applied, started on first use."""
        if self._postgres is None:
            from forgeline.stack import run_migrations

            server = EmbeddedPostgres(self.work_dir / "pg", free_port())
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(run_migrations, server.migrator_url)
            self._postgres = server
        return self._postgres.app_url

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.destroy()
