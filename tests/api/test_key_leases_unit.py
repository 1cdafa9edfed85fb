"""The lease table of busy API keys (core/accounts/key_leases.py) on its own, with a fake clock:
slots handed out in order and never past their block, their TTL, their rate window or the key's
expiry; blocks sized by how busy the key is and how much room its limit leaves; bounded memory;
hostile arguments refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core.accounts import key_leases
from core.accounts.api_key_lookup import resolve_and_count
from core.accounts.key_leases import KeyLeases
from core.accounts.rate_limit import WindowCount
from core.principal import Principal

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(key_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        organization_id=uuid.uuid4(),
        user_id=None,
        api_key_id=key_id or uuid.uuid4(),
        role="owner",
        scopes=frozenset({"projects:read"}),
    )


def store(
    leases: KeyLeases,
    key_hash: str,
    who: Principal,
    *,
    hits: int,
    counted: int,
    per_minute: int = 10_000,
    previous: int = 0,
    elapsed: float = 1.0,
    expires_at: datetime | None = None,
) -> None:
    leases.store(
        key_hash,
        who,
        per_minute=per_minute,
        expires_at=expires_at,
        count=WindowCount(hits, previous, elapsed),
        counted=counted,
    )


def test_slots_are_handed_out_in_order_then_the_key_is_looked_up_again() -> None:
    clock = Clock()
    leases = KeyLeases(clock=clock)
    who = principal()
    assert leases.take("h", NOW) is None
    store(leases, "h", who, hits=25, counted=5)
    # The lookup's own request took count 21; the lease holds 22..25.
    assert KeyLeases.first_count(WindowCount(25, 0, 1.0), 5).hits == 21
    clock.now += 0.5
    granted = [leases.take("h", NOW) for _ in range(5)]
    assert [g.count.hits for g in granted if g] == [22, 23, 24, 25]
    assert granted[-1] is None
    assert all(g.principal == who and g.per_minute == 10_000 for g in granted if g)
    # The count's elapsed time moves with the clock (the previous window's weight decays).
    first = granted[0]
    assert first is not None and first.count.elapsed == pytest.approx(1.5)


def test_a_lease_ends_at_its_ttl_its_window_and_the_keys_expiry() -> None:
    clock = Clock()
    leases = KeyLeases(ttl_seconds=5, clock=clock)
    store(leases, "ttl", principal(), hits=40, counted=10)
    clock.now += 5.0
    assert leases.take("ttl", NOW) is None

    store(leases, "window", principal(), hits=40, counted=10, elapsed=59.5)
    assert leases.take("window", NOW) is not None
    clock.now += 1.0  # the rate window it was counted in is over
    assert leases.take("window", NOW) is None

    expires = NOW + timedelta(seconds=1)
    store(leases, "expiring", principal(), hits=40, counted=10, expires_at=expires)
    assert leases.take("expiring", NOW) is not None
    assert leases.take("expiring", expires) is None


def test_block_sizes_follow_how_busy_the_key_is_and_the_room_under_its_limit() -> None:
    leases = KeyLeases(clock=Clock())
    assert leases.block_size("unknown") == 1
    store(leases, "cold", principal(), hits=3, counted=1)
    assert leases.block_size("cold") == 1
    store(leases, "busy", principal(), hits=200, counted=1)
    assert leases.block_size("busy") == 25
    store(leases, "very", principal(), hits=5000, counted=1)
    assert leases.block_size("very") == key_leases.MAX_BLOCK
    # Near its limit a key is counted one request at a time.
    store(leases, "near", principal(), hits=95, counted=1, per_minute=100)
    assert leases.block_size("near") == 1
    store(leases, "over", principal(), hits=150, counted=1, per_minute=100)
    assert leases.block_size("over") == 1
    # The previous window's count makes a key busy, and takes room, after a boundary.
    store(leases, "carried", principal(), hits=2, previous=300, counted=1, per_minute=1000)
    assert leases.block_size("carried") == 37


def test_revoked_keys_are_forgotten_and_memory_is_bounded() -> None:
    leases = KeyLeases(max_keys=2, clock=Clock())
    key_id = uuid.uuid4()
    store(leases, "a", principal(key_id), hits=40, counted=10)
    store(leases, "b", principal(key_id), hits=40, counted=10)  # the same key, presented again
    leases.forget(key_id)
    assert leases.take("a", NOW) is None and leases.take("b", NOW) is None and len(leases) == 0
    for name in ("x", "y", "z"):
        store(leases, name, principal(), hits=40, counted=10)
    assert len(leases) == 2 and leases.take("x", NOW) is None
    assert leases.take("z", NOW) is not None


def test_a_changed_principal_or_limit_replaces_the_lease() -> None:
    leases = KeyLeases(clock=Clock())
    key_id = uuid.uuid4()
    store(leases, "h", principal(key_id), hits=40, counted=10)
    demoted = principal(key_id)
    store(leases, "h", demoted, hits=41, counted=1)
    assert leases.take("h", NOW) is None  # the old principal's slots are gone with it
    store(leases, "h", demoted, hits=50, counted=3)
    granted = leases.take("h", NOW)
    assert granted is not None and granted.principal == demoted and granted.count.hits == 49


def test_concurrent_lookups_add_their_blocks_instead_of_dropping_one() -> None:
    leases = KeyLeases(clock=Clock())
    who = principal()
    store(leases, "h", who, hits=30, counted=4)  # 27..30, the lookup took 27
    store(leases, "h", who, hits=34, counted=4)  # 31..34, the lookup took 31
    hits = []
    while (granted := leases.take("h", NOW)) is not None:
        hits.append(granted.count.hits)
    assert hits == [28, 29, 30, 32, 33, 34]


def test_no_ttl_means_no_leases_and_a_ttl_is_bounded() -> None:
    off = KeyLeases(ttl_seconds=0, clock=Clock())
    store(off, "h", principal(), hits=500, counted=10)
    assert off.take("h", NOW) is None and off.block_size("h") == 1
    for bad in (-1.0, key_leases.MAX_LEASE_TTL_SECONDS + 1):
        with pytest.raises(ValueError):
            KeyLeases(ttl_seconds=bad)


async def test_a_block_outside_its_bounds_is_refused_before_any_statement() -> None:
    for counted in (0, -5, key_leases.MAX_BLOCK + 1):
        with pytest.raises(ValueError):
            await resolve_and_count(None, "fl_live_x", "0" * 64, counted)  # type: ignore[arg-type]
