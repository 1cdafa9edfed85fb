"""What the edge middleware (api/edge.py) shares with the rest of the API: the request ID of the
request being served (for logs and problem documents) and the security header values."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from contextvars import ContextVar
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_request_id: ContextVar[str | None] = ContextVar("forgeline_request_id", default=None)
access_logger = logging.getLogger("forgeline.api.access")


def current_request_id() -> str | None:
    return _request_id.get()


def install_request_id_log_records() -> None:
    """Give every log record a `request_id` attribute so formats can always reference it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_forgeline_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _request_id.get() or "-"
        return record

    factory._forgeline_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# Every API answer: no sniffing, no referrer, never framed, and a CSP that lets a JSON or problem
# document do nothing if a browser renders it.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The interactive docs: Swagger UI / ReDoc from their CDN, inline scripts only by hash.
_DOCS_SOURCES = {
    "script-src": "'self' https://cdn.jsdelivr.net",
    "style-src": "'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'",
    "img-src": "'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
    "font-src": "https://fonts.gstatic.com",
    "connect-src": "'self'",
    "worker-src": "blob:",
}
_INLINE_SCRIPT = re.compile(rb"<script(?:\s[^>]*)?>(.*?)</script>", re.DOTALL | re.IGNORECASE)
HSTS = "max-age=31536000"


def docs_csp(html: bytes) -> str:
    """The docs page's CSP: its inline scripts allowed by their SHA-256, nothing else inline."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
        if body.strip()
    ]
    sources = dict(_DOCS_SOURCES)
    sources["script-src"] = " ".join([sources["script-src"], *hashes])
    parts = ["default-src 'none'", *(f"{k} {v}" for k, v in sources.items())]
    return "; ".join([*parts, "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"])
