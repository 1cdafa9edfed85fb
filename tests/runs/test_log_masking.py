"""Secrets a stage prints in transformed forms, or across the 64 KiB line cut, never reach the
stored log: a real run on real Temporal + Postgres, over each runner."""

from __future__ import annotations

from tests.runs.helpers import executions, log_text, run_pipeline, stage

SECRET = "s3cr3t-Value/with+chars"


async def test_transformed_and_straddling_secrets_are_masked(ctx) -> None:
    commands = [
        'echo "hex: $(printf %s "$TOKEN" | od -An -tx1 | tr -d " \\n")"',
        'echo "b64 with newline: $(echo "$TOKEN" | base64)"',
        'echo "basic: $(printf %s "user:$TOKEN" | base64)"',
        # One line whose 64 KiB cut falls inside the secret, written in several pieces.
        "head -c 65530 /dev/zero | tr '\\0' x; printf %s \"$TOKEN\"; echo ' end'",
        # An endless line (no newline) with the secret across the cut.
        "head -c 65533 /dev/zero | tr '\\0' y; printf %s \"$TOKEN\"",
    ]
    run, result = await run_pipeline(
        ctx,
        [stage("leak", commands)],
        variables=[{"name": "TOKEN", "value": SECRET, "secret": True}],
    )
    assert result.status == "success"
    rows = await executions(ctx["session_maker"], run.id)
    text = await log_text(ctx["session_maker"], rows[0].id)
    flat = text.replace("\n", "")
    assert SECRET not in flat
    assert SECRET.encode().hex() not in flat
    assert "hex: ***" in text and "b64 with newline: ***" in text
    assert flat.count("***") >= 5
    assert "x" * 65530 + "*** end" in flat
