"""Standard Webhooks signatures: the specification's published test vector, and verification
refusing every tampered part."""

from __future__ import annotations

import pytest

from forgeline.standard_webhooks import (
    SignatureError,
    generate_secret,
    secret_key,
    sign,
    signed_headers,
    verify,
)

# The test vector of the specification's reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_published_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    # The prefix is optional for the key.
    assert sign(VECTOR_SECRET[6:], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_vector_verifies_and_tampering_does_not() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP + 10)
    with pytest.raises(SignatureError):
        verify(VECTOR_SECRET, headers, VECTOR_BODY + b" ", now=VECTOR_TIMESTAMP)
    with pytest.raises(SignatureError):
        verify(VECTOR_SECRET, {**headers, "webhook-id": "msg_other"}, VECTOR_BODY,
               now=VECTOR_TIMESTAMP)  # fmt: skip
    with pytest.raises(SignatureError, match="tolerance"):
        verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify(VECTOR_SECRET, {"webhook-id": VECTOR_ID}, VECTOR_BODY, now=VECTOR_TIMESTAMP)
    with pytest.raises(SignatureError):
        verify(generate_secret(), headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_several_signatures_one_valid() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "
        "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + VECTOR_SIGNATURE,
    }
    verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_generated_secrets_round_trip() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32
    assert generate_secret() != secret
    signed = signed_headers(secret, "msg_1", 1700000000, b"{}").as_dict()
    verify(secret, signed, b"{}", now=1700000000)
    with pytest.raises(SignatureError):
        secret_key("whsec_not base64!")
