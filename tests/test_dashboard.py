"""The dashboard page (SPEC 6.3, issue 10) in Debian's Chromium via Playwright.

The daemon runs in-process on the simulated clock (Friday 20 Nov 2026; Monday
23 Nov is a Japanese holiday); the browser is /usr/bin/chromium, driven by
Playwright's async API on the test's own event loop. Every page is watched
for console errors, uncaught exceptions and requests that leave the daemon
(no CDN: the machines have no internet). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright, expect

from tests.support.daemon import RunningDaemon, running, webhook_receiver, write_config

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FRIDAY = "2026-11-20T10:00:00+09:00"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium (`make test-deps` installs it)",
)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watched:
    """A page and what it did: console errors and every request it made."""

    page: Page
    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def list_loads(self) -> int:
        return sum(1 for url in self.requests if "/api/v1/incidents?" in url)

    def assert_clean(self, allowed: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allowed)]
        assert errors == [], errors
        # Nothing but the daemon itself (and the empty data: icon) is ever fetched.
        foreign = [u for u in self.requests if not u.startswith((self.origin, "data:"))]
        assert foreign == [], foreign


async def open_page(
    browser: Browser, d: RunningDaemon, path: str, *, width: int = 1400, height: int = 900
) -> Watched:
    context = await browser.new_context(
        viewport={"width": width, "height": height}, timezone_id="Asia/Tokyo", locale="en-GB"
    )
    page = await context.new_page()
    page.set_default_timeout(10_000)
    watched = Watched(page, d.url)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            watched.errors.append(f"console: {msg.text}")

    def on_request(request: Request) -> None:
        watched.requests.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.errors.append(f"pageerror: {exc}"))
    page.on("request", on_request)
    await page.goto(d.url + path)
    return watched


async def raise_incident(d: RunningDaemon, report: str, serial: str, code: str, **kw: str) -> int:
    status, body = await d.alarm(id=report, serial=serial, code=code, **kw)
    assert status == 202, body
    incident: int = (await d.get(f"/api/v1/alarms/{body['seq']}"))["incident"]
    return incident


async def test_customer_sees_only_its_incidents_and_new_ones_live(tmp_path: Path) -> None:
    async with webhook_receiver() as hook:
        cfg = write_config(tmp_path, hook=hook.url, clock_start=FRIDAY)
        async with running(cfg) as d, chromium() as browser:
            other = await raise_incident(d, "o-1", "JPN0012345", "OTHER-1")
            own = await raise_incident(d, "w-1", "JPN0099999", "OWN-1", severity="critical")
            await hook.wait_for(2)

            w = await open_page(browser, d, "/#token=t-customer")
            page = w.page
            own_row = page.locator(f'#sec-open tr[data-id="{own}"]')
            await expect(own_row).to_be_visible()
            await expect(page.locator("#role")).to_contain_text("customer")
            await expect(page.locator("#live")).to_have_attribute("data-live", "live")
            # The token left the address bar; it lives in sessionStorage.
            assert "token" not in page.url
            assert await page.evaluate("sessionStorage.getItem('monitor.token')") == "t-customer"

            # Severity is a word as well as a colour.
            await expect(own_row.locator(".c-severity .badge")).to_have_text("critical")
            await expect(own_row.locator(".c-code")).to_have_text("OWN-1")
            await expect(own_row.locator(".c-due")).to_contain_text("respond by")
            # Times: the browser's local time, the RFC 3339 from the API on hover.
            first = own_row.locator(".c-first_seen time")
            assert (await first.get_attribute("title") or "").startswith("2026-11-20T10:00")
            await expect(first).to_have_text(re.compile(r"Fri 20 Nov,? 10:00"))

            # Nothing of C-0001 anywhere: rows, contracts, device serials.
            await expect(page.locator("#sec-contracts tbody tr")).to_have_count(1)
            await expect(page.locator('#sec-contracts tr[data-contract="C-0002"]')).to_be_visible()
            assert await page.locator(f'tr[data-id="{other}"]').count() == 0
            text = await page.inner_text("body")
            assert "C-0001" not in text and "JPN0012345" not in text and "OTHER-1" not in text
            # A customer is offered no actions.
            assert await page.locator("[data-action]").count() == 0
            await expect(page.locator("#actor-row")).to_be_hidden()

            # New incidents: the other contract's first, then the customer's.
            # Events are delivered in order, so once the customer's row is
            # there, the other one has been filtered, not merely delayed.
            loads = w.list_loads()
            await raise_incident(d, "o-2", "JPN0012345", "OTHER-2")
            status, _ = await d.alarm(id="w-2", serial="JPN0099999", code="OWN-2")
            assert status == 202
            fresh = page.locator("#sec-open tbody tr").filter(has_text="OWN-2")
            await expect(fresh).to_be_visible(timeout=2000)  # the "within 2 s"
            assert "OTHER-2" not in await page.inner_text("body")
            assert w.list_loads() == loads, "the new row came over SSE, not a reload or a poll"
            await expect(page.locator("#count-open")).to_have_text("2")

            # The detail view: alarms and every notice attempt.
            await own_row.locator("button.link").click()
            dialog = page.locator("#detail")
            await expect(dialog).to_be_visible()
            await expect(dialog.locator("#detail-h")).to_have_text(f"INC-{own}")
            await expect(dialog.locator("table.alarms tbody tr")).to_have_count(1)
            await expect(dialog.locator('li[data-outcome="delivered"]')).to_have_count(1)
            await expect(dialog.locator("table.notices")).to_contain_text("Night")
            await page.keyboard.press("Escape")
            await expect(dialog).to_be_hidden()
            # Focus goes back to the button that opened it.
            focused = await page.evaluate("document.activeElement.textContent")
            assert focused == f"INC-{own}"

            w.assert_clean()
            await page.context.close()


async def test_staff_acknowledge_and_resolve_show_everywhere(tmp_path: Path) -> None:
    async with webhook_receiver() as hook:
        cfg = write_config(tmp_path, hook=hook.url, clock_start=FRIDAY)
        async with running(cfg) as d, chromium() as browser:
            shared = await raise_incident(d, "w-1", "JPN0099999", "DISK-1", severity="critical")
            staff_only = await raise_incident(d, "o-1", "JPN0012345", "PSU-0003")
            await hook.wait_for(2)

            staff = await open_page(browser, d, "/#token=t-staff")
            customer = await open_page(browser, d, "/#token=t-customer", width=390, height=844)
            s, c = staff.page, customer.page
            await expect(s.locator(f'#sec-open tr[data-id="{staff_only}"]')).to_be_visible()
            await expect(c.locator(f'#sec-open tr[data-id="{shared}"]')).to_be_visible()
            await expect(s.locator("#role")).to_contain_text("staff")
            await expect(s.locator("#live")).to_have_attribute("data-live", "live")
            await expect(c.locator("#live")).to_have_attribute("data-live", "live")

            # Acknowledge from the row, as "Sato".
            await s.locator("#actor").fill("Sato")
            await s.locator(f'#sec-open tr[data-id="{shared}"] [data-action="ack"]').click()
            for page in (s, c):  # the staff's page, and the customer's over SSE
                badge = page.locator(f'#sec-open tr[data-id="{shared}"] .c-state .badge')
                await expect(badge).to_have_attribute("data-value", "acknowledged")
            inc = await d.incident(shared)
            assert inc["state"] == "acknowledged" and inc["acknowledged_by"] == "Sato"
            ack = s.locator(f'#sec-open tr[data-id="{shared}"] [data-action="ack"]')
            await expect(ack).to_have_attribute("aria-disabled", "true")

            # Keyboard only: open the other incident's detail, acknowledge and
            # resolve it there (resolve asks for a second press).
            await s.locator(f'#sec-open tr[data-id="{staff_only}"] button.link').focus()
            await s.keyboard.press("Enter")
            dialog = s.locator("#detail")
            await expect(dialog).to_be_visible()
            await expect(dialog.locator('li[data-outcome="delivered"]')).to_have_count(1)
            await dialog.locator('[data-action="ack"]').focus()
            await s.keyboard.press("Enter")
            await expect(dialog.locator(".detail-title")).to_contain_text("acknowledged")
            resolve = dialog.locator('[data-action="resolve"]')
            await resolve.focus()
            await s.keyboard.press("Enter")
            await expect(resolve).to_have_text("Confirm resolve")
            assert (await d.incident(staff_only))["state"] == "acknowledged"
            await s.keyboard.press("Enter")
            await expect(s.locator(f'#sec-recent tr[data-id="{staff_only}"]')).to_be_visible()
            await expect(dialog.locator(".detail-title")).to_contain_text("resolved")
            # The resolve button is gone; the keyboard lands on "Close".
            await expect(s.locator("#detail-close")).to_be_focused()
            assert (await d.incident(staff_only))["state"] == "resolved"
            await s.keyboard.press("Escape")

            # Resolve the shared one from its row: it moves to "recently
            # resolved" on both pages, and the customer never saw the other.
            button = s.locator(f'#sec-open tr[data-id="{shared}"] [data-action="resolve"]')
            await button.click()
            await button.click()
            for page in (s, c):
                await expect(page.locator(f'#sec-recent tr[data-id="{shared}"]')).to_be_visible()
                await expect(page.locator("#sec-open .empty")).to_have_text("No open incidents.")
            assert await c.locator(f'tr[data-id="{staff_only}"]').count() == 0

            # Narrow screens get cards: every row is a block with labelled cells.
            display = await c.locator(f'#sec-recent tr[data-id="{shared}"]').evaluate(
                "el => getComputedStyle(el).display"
            )
            assert display == "block"

            ARTIFACTS.mkdir(exist_ok=True)
            await s.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            await c.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            staff.assert_clean()
            customer.assert_clean()
            await s.context.close()
            await c.context.close()


async def test_sign_in_deferred_countdown_language_and_windows(tmp_path: Path) -> None:
    # Friday 17:45, after hours: the alarm waits for Tuesday 08:30.
    cfg = write_config(tmp_path, clock_start="2026-11-20T17:45:00+09:00")
    async with running(cfg) as d, chromium() as browser:
        deferred = await raise_incident(d, "l-1", "JPN0012345", "FAN-0001")
        assert (await d.incident(deferred))["state"] == "deferred"

        w = await open_page(browser, d, "/")
        page = w.page
        # No token: the sign-in form, focused; a wrong token is refused.
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#token-input")).to_be_focused()
        await page.keyboard.type("wrong-token")
        await page.keyboard.press("Enter")
        await expect(page.locator("#login-error")).to_have_text("This token was not accepted.")
        await page.locator("#token-input").fill("t-admin")
        await page.keyboard.press("Enter")
        await expect(page.locator("#board")).to_be_visible()
        await expect(page.locator("#role")).to_contain_text("admin")

        # Empty states, and the deferred row with its due time and countdown
        # (run on the daemon's simulated clock, not the browser's).
        await expect(page.locator("#sec-open .empty")).to_have_text("No open incidents.")
        late = page.locator(f'#sec-deferred tr[data-id="{deferred}"]')
        await expect(late.locator(".c-due .countdown")).to_have_text("in 3d 14h")
        due = late.locator(".c-due time")
        assert (await due.get_attribute("datetime") or "").startswith("2026-11-24T08:30:00")
        await expect(due).to_have_text(re.compile(r"Tue 24 Nov,? 08:30"))
        window = page.locator('#sec-contracts tr[data-contract="C-0001"] .c-window .badge')
        await expect(window).to_have_attribute("data-value", "closed")
        # C-0003 ran 2020-2023: its window no longer matters.
        lapsed = page.locator('#sec-contracts tr[data-contract="C-0003"] .c-window .badge')
        await expect(lapsed).to_have_text("Expired")

        # Both languages label the same things.
        en, ja = await page.evaluate(
            "async () => { const m = await import('/static/i18n.js');"
            " return [m.keys('en').sort(), m.keys('ja').sort()]; }"
        )
        assert en == ja and len(en) > 50

        # 日本語, remembered across a reload (the token too, for this tab).
        await page.locator("#lang").click()
        await expect(page.locator("html")).to_have_attribute("lang", "ja")
        await expect(page.locator("#h-deferred")).to_have_text("保留（時間外）")
        await expect(late.locator(".c-due .countdown")).to_have_text("あと 3日 14時間")
        await page.reload()
        await expect(page.locator("#h-deferred")).to_have_text("保留（時間外）")
        await expect(page.locator("#lang")).to_have_text("English")
        await expect(late.locator(".c-state .badge")).to_have_text("保留")
        loads = w.list_loads()

        # Tuesday 08:30: the scheduler raises it; the page follows over SSE,
        # and re-reads the service windows once the window has opened.
        await d.set_clock("2026-11-24T08:30:30+09:00")
        await expect(page.locator(f'#sec-open tr[data-id="{deferred}"]')).to_be_visible()
        await expect(page.locator("#sec-deferred .empty")).to_have_text(
            "保留中のインシデントはありません。"
        )
        await expect(window).to_have_attribute("data-value", "open")
        assert w.list_loads() == loads

        # Back to English, then sign out: the token is forgotten.
        await page.locator("#lang").click()
        await expect(page.locator("#h-open")).to_have_text("Open")
        await page.locator("#signout").click()
        await expect(page.locator("#login")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('monitor.token')") is None

        # Another token in the same tab: the customer's view, nothing left over.
        await page.locator("#token-input").fill("t-customer")
        await page.keyboard.press("Enter")
        await expect(page.locator("#role")).to_contain_text("customer")
        await expect(page.locator("#sec-open .empty")).to_have_text("No open incidents.")
        await expect(page.locator("#sec-open thead th")).to_have_count(11)  # no actions
        assert await page.locator(f'tr[data-id="{deferred}"]').count() == 0
        assert "C-0001" not in await page.inner_text("body")

        # The refused token is the only error the browser logged (its 401).
        w.assert_clean(allowed=("401",))
        assert sum("401" in e for e in w.errors) == 1, w.errors
        await page.context.close()
