"""Cards on file: attach through Stripe (the first becomes the default), list, detach (the
newest remaining card becomes the default). The caller commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.principal import Principal
from db.models.accounts import Organization
from db.models.billing import PaymentMethod
from forgeline.errors import NotFound, ProviderUnavailable, ValidationFailed
from forgeline.settings import Settings
from infra.stripe_billing import (
    PaymentDeclined,
    StripeBilling,
    StripeError,
    StripeRequestRejected,
)


@lru_cache(maxsize=4)
def _stripe_client(api_key: str, api_base: str | None, timeout: float) -> StripeBilling:
    return StripeBilling(api_key, api_base=api_base, timeout=timeout)


def stripe_for(settings: Settings) -> StripeBilling | None:
    """One Stripe client per configuration for the process (built on first use)."""
    if settings.stripe_api_key is None:
        return None
    return _stripe_client(
        settings.stripe_api_key.get_secret_value(),
        settings.stripe_api_base,
        settings.stripe_timeout_seconds,
    )


async def attached(session: AsyncSession, organization_id: uuid.UUID) -> list[PaymentMethod]:
    """The organization's attached cards, the default first, then the newest."""
    rows = await session.scalars(
        select(PaymentMethod)
        .where(
            PaymentMethod.organization_id == organization_id, PaymentMethod.detached_at.is_(None)
        )
        .order_by(PaymentMethod.is_default.desc(), PaymentMethod.created_at.desc())
    )
    return list(rows)


async def _ensure_customer(
    session: AsyncSession, client: StripeBilling, organization_id: uuid.UUID
) -> str:
    org = (
        await session.scalars(
            select(Organization).where(Organization.id == organization_id).with_for_update()
        )
    ).one()
    if org.stripe_customer_id is None:
        org.stripe_customer_id = await client.ensure_customer(
            organization_id=str(org.id), name=org.name, email=org.billing_email
        )
    return org.stripe_customer_id


async def attach(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    *,
    payment_method_id: str,
    make_default: bool,
) -> PaymentMethod:
    client = stripe_for(settings)
    if client is None:
        raise ProviderUnavailable(
            "Stripe is not configured; invoices are issued for manual collection"
        )
    org_id = principal.organization_id
    try:
        customer_id = await _ensure_customer(session, client, org_id)
        card = await client.attach_card(
            customer_id=customer_id, payment_method_id=payment_method_id, make_default=False
        )
    except (PaymentDeclined, StripeRequestRejected) as error:
        raise ValidationFailed(str(error), field="payment_method_id") from error
    except StripeError as error:
        raise ProviderUnavailable("Stripe could not be reached; try again") from error
    make_default = make_default or not await attached(session, org_id)
    if make_default:
        await session.execute(
            update(PaymentMethod)
            .where(PaymentMethod.organization_id == org_id, PaymentMethod.is_default)
            .values(is_default=False)
        )
        await session.flush()
    pm = PaymentMethod(
        organization_id=org_id,
        stripe_payment_method_id=card.payment_method_id,
        type="card",
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        country=(card.country or None) and card.country[:2],
        is_default=make_default,
    )
    session.add(pm)
    await session.flush()
    if make_default:
        try:
            await client.set_default_card(
                customer_id=customer_id, payment_method_id=card.payment_method_id
            )
        except StripeError as error:
            raise ProviderUnavailable("Stripe could not be reached; try again") from error
    await write_audit(
        session,
        principal,
        origin,
        "payment_method.attach",
        "payment_method",
        pm.id,
        new={"brand": pm.brand, "last4": pm.last4, "is_default": pm.is_default},
    )
    await session.refresh(pm)
    return pm


async def detach(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    payment_method_id: uuid.UUID,
) -> None:
    org_id = principal.organization_id
    pm = (
        await session.scalars(
            select(PaymentMethod)
            .where(
                PaymentMethod.id == payment_method_id,
                PaymentMethod.organization_id == org_id,
                PaymentMethod.detached_at.is_(None),
            )
            .with_for_update()
        )
    ).first()
    if pm is None:
        raise NotFound("Payment method not found")
    client = stripe_for(settings)
    if client is not None:
        try:
            await client.detach_card(pm.stripe_payment_method_id)
        except (StripeError, StripeRequestRejected) as error:
            raise ProviderUnavailable("Stripe could not detach the card; try again") from error
    was_default = pm.is_default
    pm.is_default = False
    pm.detached_at = datetime.now(UTC)
    await session.flush()
    if was_default:
        successor = (
            await session.scalars(
                select(PaymentMethod)
                .where(PaymentMethod.organization_id == org_id, PaymentMethod.detached_at.is_(None))
                .order_by(PaymentMethod.created_at.desc())
                .limit(1)
            )
        ).first()
        if successor is not None:
            successor.is_default = True
    await write_audit(
        session,
        principal,
        origin,
        "payment_method.delete",
        "payment_method",
        pm.id,
        old={"brand": pm.brand, "last4": pm.last4, "is_default": was_default},
    )
