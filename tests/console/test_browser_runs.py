"""A pipeline run in a real browser (Debian's Chromium, Playwright, phone width) against the real
app, Postgres, Temporal and a sandboxed build worker: sign in, run a pipeline from its page,
watch its log lines arrive live in the page that was served before they existed, see the run
fail and re-run it from the failed stage (the passing stage reused). Every page visited passes
the label / focus / contrast / width audit and is kept as a screenshot in artifacts/console/."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from playwright.async_api import Page
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.pipelines import Pipeline, PipelineRun, StageExecution
from forgeline.settings import PIPELINES_TASK_QUEUE, Settings
from tests.console.browser import chromium, phone_page, serve, shot, sign_in
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, pipeline_worker, stage
from tests.runs.sandbox import sandbox_runner

SHOTS: list[str] = []


async def _served_then_followed(page: Page, click: Any) -> str:
    """Click, and answer the HTML of the run page the click led to (as the server sent it)."""
    async with page.expect_response(
        lambda r: (
            "/runs/" in r.url
            and r.request.method == "GET"
            and r.request.resource_type == "document"
        )
    ) as answer:
        await click()
    response = await answer.value
    await page.wait_for_load_state("domcontentloaded")
    await page.evaluate("window.sameDocument = true")
    return await response.text()


async def test_run_watch_live_and_rerun_from_failed_in_the_browser(
    app: Any,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage(
                "build",
                [
                    "sleep 1",
                    "printf '\\033[32mcompiled <i>step</i> 1\\033[0m\\n'",
                    "echo step 2",
                    "echo built > app.bin",
                ],
                artifact_paths=["app.bin"],
            ),
            *(
                stage(name, [f"echo {name} ok"], 1, depends_on=["build"])
                for name in ("lint", "docs", "pack")
            ),
            stage("test", ["echo '3 tests failed'", "exit 1"], 2),
        ],
    )
    async with session_maker() as session:
        project_id = await session.scalar(
            select(Pipeline.project_id).where(Pipeline.id == pipeline_id)
        )
    csp: list[str] = []
    worker = pipeline_worker(
        temporal_client,
        PIPELINES_TASK_QUEUE,
        settings,
        session_maker,
        sandbox_runner(tmp_path / "sandbox"),
    )
    async with serve(app) as base, worker, chromium() as browser:
        page = await phone_page(browser, csp)
        await sign_in(page, base, org)
        SHOTS.append(await shot(page, "projects"))
        await page.goto(f"{base}/projects/{project_id}")
        SHOTS.append(await shot(page, "project"))
        await page.get_by_role("link", name="ci").click()
        await page.get_by_role("heading", name="Pipeline ci").wait_for()
        SHOTS.append(await shot(page, "pipeline"))

        # Run it: the run page is served before any line exists; the lines arrive into it.
        await page.get_by_label("Branch (optional)").fill("main")
        served = await _served_then_followed(
            page, lambda: page.get_by_role("button", name="Run pipeline").click()
        )
        assert "compiled" not in served and "3 tests failed" not in served
        build = page.locator('li[data-stage="build"] pre.log')
        green = build.locator("span.ansi-fg32")
        await green.wait_for()
        assert await green.text_content() == "compiled <i>step</i> 1"
        assert await build.locator("i").count() == 0  # markup in a log line stays text
        failing = page.locator('li[data-stage="test"] pre.log')
        await failing.get_by_text("3 tests failed").wait_for()
        # Five logs followed, at most three streams at once: every line arrives.
        for name in ("lint", "docs", "pack"):
            pane = page.locator(f'li[data-stage="{name}"] pre.log')
            await pane.get_by_text(f"{name} ok").wait_for()
        assert await page.evaluate("window.sameDocument") is True  # no reload: streamed
        # The header follows the run to its end and offers the re-run from the failed stage.
        rerun_button = page.get_by_role("button", name="Re-run from failed")
        await rerun_button.wait_for()
        assert await page.locator("[data-run-status]").text_content() == "failed"
        status = page.locator('li[data-stage="build"] [data-stage-status]')
        assert await status.text_content() == "success"
        # A link to a line: its number is the link; the anchor marks the line, and opened
        # afresh, the page opens that stage's log at the line.
        line = failing.locator("span.line", has_text="3 tests failed")
        await line.locator("a.ln").click()
        anchor = await line.get_attribute("id")
        assert anchor and page.url.endswith(f"#{anchor}")
        await failing.locator(f"#{anchor}.target").wait_for()
        await page.reload()
        await page.locator(f"#{anchor}.target").wait_for()
        await page.get_by_label("Search the logs").fill("STEP 2")
        await page.get_by_text("1 matching line").wait_for()
        assert await page.locator("span.line.hit").count() == 1
        await page.get_by_label("Search the logs").fill("")
        await page.reload()  # the artifact list is the server's
        async with page.expect_download() as download:
            await page.get_by_role("link", name="app.bin").click()
        saved = await (await download.value).path()
        assert saved.read_bytes() == b"built\n"
        SHOTS.append(await shot(page, "run-failed"))
        first_url = page.url.split("#")[0]

        served = await _served_then_followed(
            page, lambda: page.get_by_role("button", name="Re-run from failed").click()
        )
        assert page.url != first_url
        await page.locator('li[data-stage="test"] pre.log').get_by_text("3 tests failed").wait_for()
        await page.get_by_role("button", name="Re-run from failed").wait_for()
        await page.reload()
        await page.locator('li[data-stage="build"] summary').get_by_text("reused").wait_for()
        SHOTS.append(await shot(page, "run-rerun-from-failed"))

        await page.goto(f"{base}/projects/{project_id}/runs?status=failed&trigger=api")
        SHOTS.append(await shot(page, "runs-filtered"))
        assert await page.get_by_role("cell", name="#2").count() == 1
        assert await page.get_by_role("cell", name="#1").count() == 0  # #1 was manual
        # The YAML editor: a schema error is shown with its path, focusable and announced.
        await page.goto(f"{base}/pipelines/{pipeline_id}/edit")
        SHOTS.append(await shot(page, "pipeline-edit"))
        editor = page.get_by_label("Pipeline (YAML)")
        await editor.fill(
            (await editor.input_value()).replace("timeout_seconds: 60", "timeout_seconds: -1")
        )
        await page.get_by_role("button", name="Save as a new version").click()
        await page.get_by_role("alert").get_by_text("/stages/0/timeout_seconds").wait_for()
        SHOTS.append(await shot(page, "pipeline-edit-errors"))
        await editor.fill(
            (await editor.input_value()).replace("timeout_seconds: -1", "timeout_seconds: 90")
        )
        await page.get_by_role("button", name="Save as a new version").click()
        await page.get_by_role("heading", name="Versions of ci").wait_for()
        await page.locator("span.d-add", has_text="timeout_seconds: 90").first.wait_for()
        SHOTS.append(await shot(page, "pipeline-versions"))
        for path, name in (
            (f"/projects/{project_id}/settings", "project-settings"),
            ("/projects/new", "project-new"),
            ("/members", "members"),
            ("/billing", "billing"),
        ):
            await page.goto(base + path)
            SHOTS.append(await shot(page, name))
    async with session_maker() as session:
        runs = (
            await session.scalars(
                select(PipelineRun)
                .where(PipelineRun.pipeline_id == pipeline_id)
                .order_by(PipelineRun.run_number)
            )
        ).all()
        reused = await session.scalar(
            select(StageExecution.reused_from_id).where(
                StageExecution.run_id == runs[1].id, StageExecution.stage_name == "build"
            )
        )
    assert [r.status for r in runs] == ["failed", "failed"]
    assert runs[0].trigger == "manual" and runs[1].reuse_from_run_id == runs[0].id
    assert isinstance(reused, uuid.UUID)
    assert csp == []
    print("screenshots:", " ".join(f"{name}" for name in SHOTS))
