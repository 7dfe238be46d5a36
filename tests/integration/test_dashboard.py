"""The operator dashboard in a real browser: Debian's headless Chromium, driven by
Playwright, against `sandbox-broker serve` on a real port.

Playwright cannot download its own browser here, so it drives /usr/bin/chromium
(`make programs`, part of `make test`, installs it); where that is missing the tests skip and
say why. The page runs under the dashboard's strict CSP: a violation fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, TRACK_TOKEN, owner_headers
from tests.support.processes import Server, broker_env, run_cli, serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these, Chromium keeps dialling Google hosts this machine cannot reach.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STATUSES = ("available", "allocated", "pending_deletion", "deleting", "stale",
            "deletion_failed", "total")
# 6 seeded dev- sandboxes, 4 of them leased: sync then adds the simulated provider's 20
# and stales the 2 free dev- rows it does not list (2 of 6 is under the 50% guard).
LEASES = {"learner-1": "intro-lab", "learner-2": "intro-lab", "learner-3": "intro-lab",
          "learner-4": "advanced-lab"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A production-mode server on SQLite with 6 dev- sandboxes, 4 of them leased."""
    workdir = tmp_path_factory.mktemp("dashboard")
    env = broker_env(
        BROKER_ENV="production", BROKER_API_TOKEN=TRACK_TOKEN, BROKER_ADMIN_TOKEN=ADMIN_TOKEN,
        BROKER_STORE="sqlite", BROKER_SQLITE_PATH=str(workdir / "broker.db"),
        BROKER_PROVIDER="simulated", BROKER_SIMULATED_POOL_SIZE="20", SYNC_ENABLED="false",
        CLEANUP_ENABLED="false", AUTO_EXPIRY_ENABLED="false", STALE_DELETION_ENABLED="false",
    )
    seeded = run_cli("seed", "--count", "6", "--prefix", "dev-", env=env)
    assert seeded.returncode == 0, seeded.stderr
    with serve(env, workdir) as server:
        for owner, track in LEASES.items():
            headers = owner_headers(owner, **{"X-Instruqt-Track-ID": track,
                                              "X-Sandbox-Name-Prefix": "dev-"})
            answer = httpx.post(f"{server.url}/v1/allocate", headers=headers, timeout=10)
            assert answer.status_code == 201, answer.text
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not installed: {CHROMIUM} is missing "
                    "(run `make programs` to install it or see why not)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Tab:
    """A fresh browser tab (own sessionStorage) and what its console complained about."""

    page: Page
    url: str
    problems: list[str] = field(default_factory=list)

    def open(self) -> None:
        response = self.page.goto(f"{self.url}/dashboard")
        assert response is not None and response.ok

    def sign_in(self, token: str = ADMIN_TOKEN) -> None:
        self.open()
        self.page.get_by_label("Admin token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()

    def tile(self, status: str) -> Any:
        return self.page.locator(f"#tile-{status} .tile-value")


@pytest.fixture
def tab(browser: Browser, broker: Server) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    page.set_default_timeout(10_000)
    opened = Tab(page, broker.url)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            opened.problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.problems.append(f"uncaught: {error}"))
    yield opened
    context.close()
    assert not opened.problems, f"the page broke its CSP or threw: {opened.problems}"


def admin_stats(server: Server) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/v1/admin/stats", headers=ADMIN, timeout=10)
    answer.raise_for_status()
    stats: dict[str, Any] = answer.json()
    return stats


def expect_tiles(tab: Tab, stats: dict[str, Any]) -> None:
    for status in STATUSES:
        expect(tab.tile(status)).to_have_text(str(stats[status]))


def test_a_wrong_token_shows_an_error_and_keeps_the_pool_hidden(tab: Tab) -> None:
    tab.sign_in("not-a-valid-token-0123456789abcdef")
    expect(tab.page.get_by_role("alert")).to_contain_text("Sign-in failed")
    expect(tab.page.locator("#login-error")).to_contain_text("not valid")
    expect(tab.page.locator("#dashboard")).to_be_hidden()
    assert tab.page.evaluate("sessionStorage.length") == 0

    tab.page.get_by_label("Admin token").fill(TRACK_TOKEN)  # a real token, wrong role
    tab.page.get_by_role("button", name="Sign in").click()
    expect(tab.page.locator("#login-error")).to_contain_text("admin")


def test_tiles_tracks_and_jobs_match_the_admin_api(tab: Tab, broker: Server) -> None:
    tab.sign_in()
    expect(tab.page.locator("#dashboard")).to_be_visible()
    expect_tiles(tab, admin_stats(broker))
    assert tab.page.evaluate("Object.keys(sessionStorage)") == ["sandbox-broker.admin-token"]
    tracks = tab.page.locator("#tracks-body tr")
    expect(tracks).to_have_count(2)
    expect(tracks.nth(0)).to_have_text(re.compile(r"intro-lab\s*3"))
    expect(tracks.nth(1)).to_have_text(re.compile(r"advanced-lab\s*1"))
    expect(tab.page.locator("#oldest")).to_have_text("No deletion is pending.")
    jobs = httpx.get(f"{broker.url}/v1/admin/jobs", headers=ADMIN, timeout=10).json()
    expect(tab.page.locator("#breaker")).to_have_text(jobs["provider_breaker"])
    expect(tab.page.locator("#jobs-body tr th")).to_have_text([j["job"] for j in jobs["jobs"]])
    expect(tab.page.locator("#chart svg[role=img] polyline, #chart svg circle").first)\
        .to_be_attached()


def test_the_table_filters_by_status_prefix_and_owner(tab: Tab) -> None:
    tab.sign_in()
    rows = tab.page.locator("#sandbox-body tr.row")
    expect(rows).to_have_count(6)
    tab.page.get_by_label("Status", exact=True).select_option("allocated")
    tab.page.get_by_label("Name starts with").fill("dev-")
    expect(rows).to_have_count(4)
    for row in rows.all():
        expect(row.locator("td").nth(1)).to_have_text("Allocated")
        expect(row.locator("td").first).to_have_text(re.compile(r"^dev-"))

    tab.page.get_by_label("Owner").fill("learner-4")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("advanced-lab")
    rows.first.locator("td").nth(3).click()  # any cell opens the row's details
    details = tab.page.locator("#details")
    expect(details).to_be_visible()
    expect(details).to_contain_text("learner-4")
    expect(tab.page.locator("#timeline li")).to_contain_text(["allocated"])  # the event log
    tab.page.keyboard.press("Escape")
    expect(details).to_be_hidden()

    tab.page.get_by_label("Name starts with").fill("nothing-like-this")
    expect(tab.page.locator("#sandbox-body")).to_contain_text("No sandbox matches.")


def test_keyboard_reaches_the_login_field_and_the_actions(tab: Tab) -> None:
    tab.open()
    page = tab.page
    page.evaluate("document.activeElement.blur()")
    assert focus_by_tab(page, "#token", 5), "Tab never reached the token field"
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#dashboard")).to_be_visible()
    assert focus_by_tab(page, "[data-action=sync]", 20), "Tab never reached the Sync action"
    page.keyboard.press("Enter")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-cancel")).to_be_focused()  # the safe default
    page.keyboard.press("Escape")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator("[data-action=sync]")).to_be_focused()
    expect(page.locator("#action-result")).to_have_text("")


def focus_by_tab(page: Page, selector: str, presses: int) -> bool:
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return True
    return False


def test_sync_after_confirmation_changes_the_counts(tab: Tab, broker: Server) -> None:
    before = admin_stats(broker)
    assert (before["available"], before["stale"]) == (2, 0)
    tab.sign_in()
    expect_tiles(tab, before)

    tab.page.get_by_role("button", name="Sync", exact=True).click()
    dialog = tab.page.get_by_role("dialog")
    expect(dialog).to_contain_text("Sync with the provider")
    dialog.get_by_role("button", name="Run now").click()
    expect(tab.page.locator("#action-result")).to_contain_text("synced 20")

    after = admin_stats(broker)
    assert (after["available"], after["stale"], after["total"]) == (20, 2, 26)
    expect_tiles(tab, after)
    expect(tab.page.locator("#jobs-body tr", has_text="sync")).to_contain_text("ok")
    expect(tab.page.locator("#sandbox-body tr.row")).to_have_count(26)
    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
