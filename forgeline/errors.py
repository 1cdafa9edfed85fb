"""Domain errors: raised anywhere, turned into application/problem+json by the API in one place.
Each kind declares its problem in its class line: `class Gone(DomainError, status=410,
title="Gone", slug="gone"): ...` (a kind that omits one keeps its parent's)."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class DomainError(Exception):
    status_code = 400
    title = "Bad request"
    type_slug = "bad-request"

    def __init_subclass__(
        cls,
        *,
        status: int | None = None,
        title: str | None = None,
        slug: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status_code = status
        if title is not None:
            cls.title = title
        if slug is not None:
            cls.type_slug = slug

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(
    DomainError, status=422, title="Validation failed", slug="validation-failed"
): ...


class Unauthorized(DomainError, status=401, title="Unauthorized", slug="unauthorized"): ...


class Forbidden(DomainError, status=403, title="Forbidden", slug="forbidden"): ...


class NotFound(DomainError, status=404, title="Not found", slug="not-found"): ...


class Conflict(DomainError, status=409, title="Conflict", slug="conflict"): ...


class PaymentRequired(DomainError, status=402, title="Plan limit reached", slug="plan-limit"):
    """A plan limit was reached; extra carries the limit name and the plan."""


class RateLimited(DomainError, status=429, title="Too many requests", slug="rate-limited"):
    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class ProviderUnavailable(
    DomainError, status=422, title="Provider not available", slug="provider-not-available"
): ...


def found(value: T | None, resource_type: str, detail: str | None = None) -> T:
    """`value`, or NotFound ("<resource type> not found" unless told) when there is none."""
    if value is None:
        words = resource_type.replace("_", " ")
        raise NotFound(detail or f"{words} not found", resource_type=resource_type)
    return value
