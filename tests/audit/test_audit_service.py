"""The audit trail's core: values are stored as the API renders them, secrets never, and a row
carries the origin it was given (no HTTP objects needed)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import PurePosixPath

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from sqlalchemy import select

from core.audit.origin import Origin
from core.audit.service import REDACTED, changed_fields, redact, write_audit
from core.principal import Principal
from db.models.operations import AuditLog
from tests.factories import make_org


class _Colour(enum.StrEnum):
    RED = "red"


class _Model(BaseModel):
    at: datetime
    ids: list[uuid.UUID]


def test_values_are_encoded_as_the_api_encodes_them() -> None:
    values = {
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "day": date(2026, 1, 2),
        "whole": Decimal("12"),
        "cents": Decimal("12.50"),
        "colour": _Colour.RED,
        "nested": {"list": [1, "two", None, {"deep": uuid.UUID(int=1)}], "tuple": (1, 2)},
        "model": _Model(at=datetime(2026, 1, 1, tzinfo=UTC), ids=[uuid.UUID(int=2)]),
        "path": PurePosixPath("/srv/app"),
        "wait": timedelta(seconds=90),
        "flag": True,
        "nothing": None,
    }
    assert redact(values) == jsonable_encoder(values)


def test_secret_keys_are_redacted_whatever_their_case() -> None:
    redacted = redact(
        {"Password": "x", "api_key_hash": "y", "ACCESS_TOKEN": "z", "private_key": "k", "n": 1}
    )
    assert redacted == {
        "Password": REDACTED,
        "api_key_hash": REDACTED,
        "ACCESS_TOKEN": REDACTED,
        "private_key": REDACTED,
        "n": 1,
    }
    assert redact(None) is None


def test_changed_fields_compare_both_sides() -> None:
    assert changed_fields({"a": 1, "b": 2}, {"b": 3, "c": 4}) == ["a", "b", "c"]
    assert changed_fields(None, None) == []


async def test_row_keeps_the_origin_and_the_actor(session_maker) -> None:
    org = await make_org(session_maker)
    key_id = org.api_key_id
    principal = Principal(organization_id=org.org_id, user_id=None, api_key_id=key_id, role="admin")
    origin = Origin.of(
        ip="2001:db8::1" * 10,  # longer than the column: cut to its size
        user_agent="agent/1",
        request_id="req-1",
        correlation_id="",
    )
    async with session_maker() as session:
        row = await write_audit(
            session,
            principal,
            origin,
            "thing.changed",
            "thing",
            None,
            {"token": "secret"},
            {"token": "other"},
        )
        await session.commit()
        row_id = row.id
    async with session_maker() as session:
        stored = (await session.execute(select(AuditLog).where(AuditLog.id == row_id))).scalar_one()
    assert stored.actor_type == "api_key" and stored.actor_api_key_id == key_id
    assert stored.ip_address is not None and len(stored.ip_address) == 45
    assert (stored.user_agent, stored.request_id) == ("agent/1", "req-1")
    assert stored.correlation_id is None  # an empty header is no correlation ID
    assert stored.old_values == {"token": REDACTED} and stored.new_values == {"token": REDACTED}
    # Redacted on both sides, so nothing is reported as changed.
    assert stored.changed_fields == []


async def test_a_rolled_back_unit_of_work_leaves_no_row(session_maker) -> None:
    org = await make_org(session_maker)
    async with session_maker() as session:
        row = await write_audit(
            session, None, None, "thing.failed", "thing", None, organization_id=org.org_id
        )
        await session.flush()
        row_id = row.id
        await session.rollback()
    async with session_maker() as session:
        found = await session.execute(select(AuditLog.id).where(AuditLog.id == row_id))
        assert found.first() is None
