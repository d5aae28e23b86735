"""The console in a real browser: Debian's Chromium, driven by Playwright, against a real
gateway on PostgreSQL with API keys and runs on both backends.

One browser and one gateway for the module; each test opens its own page (a fresh
``sessionStorage``, so a fresh key).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.store import create_database_engine
from backends.store.api_keys import ApiKeys, NewKey
from tests.support.api_client import Gateway
from tests.support.gateway import running_gateway
from tests.support.migration import MigrationRuns, run_on_both_backends, write_rules

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra")

CHROMIUM = shutil.which("chromium")
#: Headless, and nothing that reaches beyond the machine or writes a profile of note.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where the README's screenshots come from: set to a folder to write them there.
SCREENSHOTS = os.environ.get("FIGWAY_CONSOLE_SCREENSHOTS")
WAIT_MS = 60_000

pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: run `make tools`"),
]


@dataclass
class Console:
    gateway: Gateway
    keys: dict[str, NewKey]
    made: MigrationRuns

    def api(self, scope: str) -> httpx.Client:
        client = httpx.Client(base_url=self.gateway.base_url, timeout=30)
        client.headers["Authorization"] = f"Bearer {self.keys[scope].token}"
        return client


@pytest.fixture(scope="module")
def console(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    directory = tmp_path_factory.mktemp("console")
    with running_gateway(
        directory, database_url=pg_url, auth="on", routing_rules=write_rules(directory)
    ) as gateway:
        engine = create_database_engine(gateway.settings.resolved_database_url())
        store = ApiKeys(engine)
        # A migration engineer's key reads runs too; the others hold one scope each.
        scopes = {"admin": ["admin", "runs"], "runs": ["runs"], "workflows": ["workflows"]}
        keys = {
            name: store.create(name=f"console {name}", scopes=held, created_by="test")
            for name, held in scopes.items()
        }
        engine.dispose()
        found = Console(gateway, keys, made=None)  # type: ignore[arg-type]
        with found.api("runs") as runs, found.api("admin") as admin, found.api("workflows") as d:
            found.made = run_on_both_backends(runs, admin, definer=d)
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    yield opened
    context.close()


def open_with_key(page: Any, console: Console, scope: str) -> None:
    """Open the console and paste the key, as a person does; wait for its panel."""
    page.goto(console.gateway.base_url + "/")
    page.fill("#key", console.keys[scope].token)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#panel p.who")


def test_the_charts_show_each_backend_s_runs(page: Any, console: Console) -> None:
    open_with_key(page, console, "admin")
    made = console.made
    article = page.locator(f'article.workflow[data-workflow="{made.compared}"]')
    article.wait_for()
    with console.api("admin") as admin:
        report = admin.get("/routing/compare", params={"workflow": made.compared}).json()
    backends = {row["backend"]: row for row in report["workflows"][0]["backends"]}
    for backend in ("rq", "prefect"):
        bar = article.locator(f'svg.failures g[data-backend="{backend}"]')
        assert bar.get_attribute("data-runs") == str(made.per_backend)
        assert bar.get_attribute("data-failed") == "0"
        for chart, figure in (("queue wait", "queue_wait"), ("execution time", "execution_time")):
            line = article.locator(f'svg[data-chart="{chart}"] [data-backend="{backend}"].line')
            expected = backends[backend][f"{figure}_seconds"]
            assert int(line.get_attribute("data-count")) == expected["count"] == made.per_backend
            assert float(line.get_attribute("data-p50")) == pytest.approx(
                expected["p50"], abs=0.0011
            )
            assert line.evaluate("e => e.getBoundingClientRect().width") > 0  # drawn
    assert article.get_attribute("data-answer") == report["workflows"][0]["judgement"]["answer"]
    # The rest of the migration: rules, rollouts, shadows, recent runs.
    stepped = page.locator('#rules .share[data-backend="prefect"][data-percent="5"]')
    assert stepped.count() == 1
    assert page.locator('#rollouts article[data-rule="stepped"]').count() == 1
    assert made.shadowed in page.locator("#shadows").inner_text()
    for run_id in made.run_ids:
        assert page.locator(f'#runs a[href="/console/runs/{run_id}"]').count() == 1
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / "console.png"), full_page=True)


def test_a_run_s_link_opens_its_live_view(page: Any, console: Console) -> None:
    open_with_key(page, console, "admin")
    run_id = console.made.run_ids[-1]
    page.click(f'#runs a[href="/console/runs/{run_id}"]')
    page.wait_for_selector('#summary[data-status="succeeded"]')
    assert page.locator("#nodes tbody tr").count() == 3
    assert page.locator('#nodes tr[data-node="last"] .status').inner_text() == "succeeded"
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / "console-run.png"), full_page=True)


def test_an_admin_pauses_and_resumes_a_rollout(page: Any, console: Console) -> None:
    open_with_key(page, console, "admin")
    page.on("dialog", lambda dialog: dialog.accept())
    rollout = '#rollouts article[data-rule="stepped"]'
    page.click(f"{rollout} button.action")  # Pause
    page.wait_for_selector(f'{rollout}[data-state="paused"]')
    assert "done: Pause" in page.inner_text("#message")
    page.click(f"{rollout} button.action")  # Resume
    page.wait_for_selector(f'{rollout}[data-state="running"]')
    with console.api("admin") as admin:
        events = admin.get("/routing/rollouts/history", params={"rule_id": "stepped"}).json()
    by = f"key {console.keys['admin'].key.key_id} (api)"
    assert [(e["action"], e["by"]) for e in events[:2]] == [("resumed", by), ("paused", by)]


def test_a_key_without_the_admin_scope_reads_runs_and_cannot_act(
    page: Any, console: Console
) -> None:
    open_with_key(page, console, "runs")
    assert page.get_attribute("#panel p.who", "data-admin") == "false"
    assert "lacks the admin scope" in page.inner_text("#panel .withheld")
    assert page.locator("button.action").count() == 0
    assert page.locator("#runs a").count() >= len(console.made.run_ids)
    status = page.evaluate(
        "async () => (await window.figwayConsole.act('/routing/rollouts/stepped/pause')).status"
    )
    assert status == 403
    with console.api("admin") as admin:
        rollout = next(
            r for r in admin.get("/routing/rules").json()["rollouts"] if r["rule_id"] == "stepped"
        )
    assert rollout["state"] == "running"


def test_without_a_key_the_page_says_one_is_needed(page: Any, console: Console) -> None:
    page.goto(console.gateway.base_url + "/console")
    page.wait_for_selector("#message.error")
    assert "401" in page.inner_text("#message")
    assert "API key is required" in page.inner_text("#message")
