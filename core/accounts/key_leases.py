"""Per-process leases of a hot API key: its resolved principal and a block of rate-limit slots
already counted in PostgreSQL, so most requests of a busy key pay neither the key lookup nor the
rate-window write.

How a key gets a lease: its full lookup (core/accounts/api_key_lookup.py, which also checks the
secret, revocation, expiry and the creator's membership) counts `n` requests in the key's window
instead of one when this process has seen the key busy (HOT_AFTER requests in one window). The
request that looked it up takes the first of the `n` counts; the other `n - 1` are the lease:
the next requests of the same key in this process take one each, with no round trip.

What holds:
- The rate limit across API processes: every slot handed out was counted in the shared window
  row before it was handed out, so the window never admits more than its limit; a slot a process
  leases and does not use (it expires) counts against the key, never for it. The block is at
  most MAX_BLOCK and at most an eighth of the room left under the limit (one near its limit is
  counted one request at a time, exactly as without leases).
- Revocation, expiry, a removed creator, changed scopes: a lease lives at most
  LEASE_TTL_SECONDS (and never past its rate window); a key's `expires_at` is checked at every
  request; revoking or changing a key in this process drops its lease at once (`forget`).
- Hostile input: a lease is created only after a full lookup succeeded with the presented
  secret's hash; a wrong secret, an unknown or garbled key creates nothing. At most MAX_KEYS keys
  are tracked (the oldest dropped first).
- An outage: nothing is written outside the lookup; a lease that runs out or expires while the
  database is down falls back to the lookup, which fails as it did before (503).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from core.accounts.rate_limit import WINDOW_SECONDS, WindowCount
from core.principal import Principal

LEASE_TTL_SECONDS = 5.0
# Never longer: a revoked key's requests in another process stop within this bound.
MAX_LEASE_TTL_SECONDS = 30.0
MAX_BLOCK = 64
HOT_AFTER = 16
MAX_KEYS = 4096


@dataclass
class _Slots:
    """Counts next..last of one window, as the lookup that counted them saw the window."""

    next: int
    last: int
    previous: int
    elapsed: float
    taken_at: float


@dataclass
class _Entry:
    principal: Principal
    per_minute: int
    expires_at: datetime | None
    valid_until: float
    slots: list[_Slots] = field(default_factory=list)
    # The last count this process saw for the key (sizes its next block).
    seen_hits: int = 0
    seen_previous: int = 0


@dataclass(frozen=True)
class Granted:
    """A request admitted on a lease: its principal, its count, and its key's limit."""

    principal: Principal
    count: WindowCount
    per_minute: int


class KeyLeases:
    """The leases of one API process, keyed by the SHA-256 of the presented key."""

    def __init__(
        self,
        *,
        ttl_seconds: float = LEASE_TTL_SECONDS,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ttl_seconds <= MAX_LEASE_TTL_SECONDS:
            raise ValueError(f"lease TTL must be within 0..{MAX_LEASE_TTL_SECONDS} s")
        self._ttl = ttl_seconds
        self._max_keys = max(1, max_keys)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, key_hash: str, now: datetime) -> Granted | None:
        """One leased slot of the key, or None (no valid lease: look the key up)."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        clock = self._clock()
        if clock >= entry.valid_until or (entry.expires_at is not None and entry.expires_at <= now):
            entry.slots.clear()
            return None
        while entry.slots:
            slots = entry.slots[0]
            elapsed = slots.elapsed + (clock - slots.taken_at)
            if slots.next > slots.last or elapsed >= WINDOW_SECONDS:
                entry.slots.pop(0)  # spent, or its window is over
                continue
            hits = slots.next
            slots.next += 1
            entry.seen_hits = hits
            count = WindowCount(hits, slots.previous, elapsed)
            return Granted(entry.principal, count, entry.per_minute)
        return None

    def block_size(self, key_hash: str) -> int:
        """How many requests the key's next lookup counts: 1 unless the key is busy here."""
        entry = self._entries.get(key_hash)
        if entry is None or self._ttl <= 0:
            return 1
        # Busy: this window's count and the last one's (a key stays busy across a boundary).
        busy = entry.seen_hits + entry.seen_previous
        if busy < HOT_AFTER:
            return 1
        # Room under the limit, ignoring the previous window's decay (so never overstated).
        room = entry.per_minute - busy
        return max(1, min(MAX_BLOCK, busy // 8, room // 8))

    def store(
        self,
        key_hash: str,
        principal: Principal,
        *,
        per_minute: int,
        expires_at: datetime | None,
        count: WindowCount,
        counted: int,
    ) -> None:
        """After a successful lookup that counted `counted` requests ending at `count.hits` (the
        looking-up request took the first): keep the principal and the rest as a lease."""
        if self._ttl <= 0 or counted < 1:
            return
        clock = self._clock()
        entry = self._entries.get(key_hash)
        if entry is None or entry.principal != principal or entry.per_minute != per_minute:
            if entry is None and len(self._entries) >= self._max_keys:
                self._entries.pop(next(iter(self._entries)))
            entry = _Entry(principal, per_minute, expires_at, clock + self._ttl)
            self._entries[key_hash] = entry
        entry.expires_at = expires_at
        entry.valid_until = clock + self._ttl
        entry.seen_hits = count.hits
        entry.seen_previous = count.previous
        if counted > 1:
            first = count.hits - counted + 1
            entry.slots.append(_Slots(first + 1, count.hits, count.previous, count.elapsed, clock))

    @staticmethod
    def first_count(count: WindowCount, counted: int) -> WindowCount:
        """The looking-up request's own count when the lookup counted a block."""
        return WindowCount(count.hits - counted + 1, count.previous, count.elapsed)

    def forget(self, api_key_id: uuid.UUID) -> None:
        """Drop every lease of a key (revoked or changed in this process)."""
        gone = [h for h, e in self._entries.items() if e.principal.api_key_id == api_key_id]
        for key_hash in gone:
            del self._entries[key_hash]

    def clear(self) -> None:
        self._entries.clear()
