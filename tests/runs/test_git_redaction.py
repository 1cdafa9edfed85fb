"""Git's error messages go through the stage logs' secret masker: a clone token never reaches an
error, a run's `error` column or a log, whether git prints it verbatim, URL-encoded inside a
remote URL, or base64-encoded inside an Authorization header."""

from __future__ import annotations

import base64
from urllib.parse import quote

from infra.git import _redact


def test_token_verbatim_url_encoded_and_in_basic_auth() -> None:
    token = "ghp_s3cr3t/t0k:en@x"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    encoded = quote(token, safe="")
    stderr = (
        f"fatal: unable to access 'https://x-access-token:{encoded}@github.com/o/r/'\n"
        f"trace: Authorization: Basic {basic}\n"
        f"remote: token {token} is not valid"
    )
    redacted = _redact(stderr, [token])
    assert token not in redacted
    assert quote(token, safe="") not in redacted
    assert basic not in redacted
    assert "***" in redacted
    # Whatever git printed around the secret stays readable.
    assert redacted.startswith("fatal: unable to access 'https://x-access-token:***@github.com/")
    assert "is not valid" in redacted


def test_no_secrets_and_hostile_text_pass_through() -> None:
    hostile = "fatal: \x00\x1b[31m ünïcödé \u2028 $(rm -rf /) `id` \\n"
    assert _redact(hostile, []) == hostile
    assert _redact(hostile, [""]) == hostile


def test_every_line_of_a_multi_line_secret_is_masked() -> None:
    key = "-----BEGIN KEY-----\nAAAAfirstline\nBBBBsecondline\n-----END KEY-----"
    redacted = _redact("error: AAAAfirstline then BBBBsecondline", [key])
    assert "firstline" not in redacted and "secondline" not in redacted
