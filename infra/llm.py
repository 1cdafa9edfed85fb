"""The one wrapper around the Anthropic Messages API: tool use, usage/cost, Temporal error mapping.

SDK retries are off: Temporal retries the activity, and a 429/529's `retry-after` becomes the
ApplicationError's `next_retry_delay`; other 4xx are non-retryable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anthropic
from temporalio.exceptions import ApplicationError

# USD per million tokens (input, output); unknown models are priced like Sonnet.
PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "claude-opus-4": (Decimal("15"), Decimal("75")),
    "claude-sonnet-4": (Decimal("3"), Decimal("15")),
    "claude-3-7-sonnet": (Decimal("3"), Decimal("15")),
    "claude-haiku-4": (Decimal("1"), Decimal("5")),
    "claude-3-5-haiku": (Decimal("0.8"), Decimal("4")),
}
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
MAX_RETRY_AFTER = 300.0


def price_for(model: str) -> tuple[Decimal, Decimal]:
    for prefix, price in PRICES.items():
        if model.startswith(prefix):
            return price
    return PRICES["claude-sonnet-4"]


def cost_of(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price_in, price_out = price_for(model)
    total = (price_in * input_tokens + price_out * output_tokens) / Decimal(1_000_000)
    return total.quantize(Decimal("0.000001"))


@dataclass
class LlmReply:
    stop_reason: str | None
    content: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    text: str = ""
    tool_uses: list[dict[str, Any]] = field(default_factory=list)


def _retry_after(headers: Any) -> timedelta | None:
    raw = headers.get("retry-after") if headers is not None else None
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return timedelta(seconds=min(max(seconds, 0.0), MAX_RETRY_AFTER))


def to_application_error(exc: Exception) -> ApplicationError:
    """Retryable for throttling, overload, 5xx and transport failures; non-retryable otherwise."""
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        delay = _retry_after(exc.response.headers)
        message = f"Anthropic API returned {status}: {_short(exc)}"
        if status in RETRYABLE_STATUS or status >= 500:
            return ApplicationError(
                message,
                type="LlmUnavailable" if status != 429 else "LlmRateLimited",
                next_retry_delay=delay,
            )
        return ApplicationError(message, type="LlmRequestRejected", non_retryable=True)
    if isinstance(exc, anthropic.APITimeoutError | anthropic.APIConnectionError):
        return ApplicationError(
            f"Anthropic API unreachable: {type(exc).__name__}", type="LlmUnavailable"
        )
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ApplicationError("Anthropic API response did not validate", type="LlmUnavailable")
    return ApplicationError(f"LLM call failed: {type(exc).__name__}", type="LlmUnavailable")


def _short(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc.message)[:300]


class AnthropicLlm:
    """Built once per worker (registration.py); one Messages call per agent turn."""

    def __init__(
        self, *, api_key: str, model: str, base_url: str | None = None, timeout: float = 120.0
    ) -> None:
        self.model = model
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
        )

    async def close(self) -> None:
        await self.client.close()

    async def create(
        self,
        *,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int = 4096,
    ) -> LlmReply:
        try:
            message = await self.client.messages.create(
                model=self.model,
                system=system,
                messages=messages,  # type: ignore[arg-type]
                tools=tools,  # type: ignore[arg-type]
                max_tokens=max_tokens,
            )
        except anthropic.AnthropicError as exc:
            raise to_application_error(exc) from None
        content = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
        text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text").strip()
        uses = [b for b in content if b.get("type") == "tool_use"]
        usage = message.usage
        return LlmReply(
            stop_reason=message.stop_reason,
            content=content,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost_of(self.model, usage.input_tokens, usage.output_tokens),
            text=text,
            tool_uses=uses,
        )
