"""Release providers: `docker`, `static` and `aws` are real; every other name is refused.

The implementations (registry.py) share one interface (base.py); callers pick one by the
environment's provider name here and never branch on it themselves.
"""

from __future__ import annotations

from forgeline.errors import ProviderUnavailable, ValidationFailed
from workflows.deployment_models import AVAILABLE_PROVIDERS, KNOWN_PROVIDERS

# Providers whose artifact is a container image; the others release published static files.
IMAGE_PROVIDERS = ("docker",)


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


def releases_image(provider: str) -> bool:
    """Whether the provider's artifact is an image (rollback and promotion reuse it) rather
    than published files."""
    return provider in IMAGE_PROVIDERS
