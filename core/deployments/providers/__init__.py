"""Release providers: `docker`, `static` and `aws` are real; every other name is refused."""

from __future__ import annotations

from forgeline.errors import ProviderUnavailable, ValidationFailed
from workflows.deployment_models import AVAILABLE_PROVIDERS, KNOWN_PROVIDERS


def require_available(provider: str) -> str:
    """The provider name if Forgeline can release through it, else a clear domain error."""
    name = provider.strip().lower()
    if name in AVAILABLE_PROVIDERS:
        return name
    if name in KNOWN_PROVIDERS:
        raise ProviderUnavailable(
            f"provider not available: {name!r} is not supported by this Forgeline installation; "
            f"use one of {', '.join(AVAILABLE_PROVIDERS)}",
            provider=name,
        )
    raise ValidationFailed(
        f"unknown provider {provider!r}; use one of {', '.join(AVAILABLE_PROVIDERS)}",
        provider=provider,
    )
