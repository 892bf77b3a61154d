"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright for
Python against `carrier dev` (a real process, the offline model answering).

Playwright's own browser downloads are never used: the system's Chromium is launched
(`apt-get install chromium`; .ci/run installs it). Without it the test is skipped, except
in CI (CI=true), where it fails. Screenshots are written to the test's temporary folder:
the desktop in light and dark, and a phone (390 px wide) in light and dark.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from carrier_core.store.store import Store
from tests.conftest import ROOT
from tests.dev_server import DevServer, carrier_dev, offline_environment

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

#: The browser: Debian's Chromium, or the one CARRIER_TEST_CHROMIUM names.
CHROMIUM = Path(os.environ.get("CARRIER_TEST_CHROMIUM") or "/usr/bin/chromium")
#: Headless, and quiet on the network: without the background-networking flags Chromium
#: reaches for Google's services, which a closed network refuses.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADA_FIRST_REPLY = "Nice to meet you, Grace. What would you like to talk about?"
TIMEOUT_MS = 30_000


def missing(what: str) -> None:
    """Skip where the browser cannot run, but fail in CI, which must run it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (.ci/run installs it)")
    pytest.skip(what)


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        missing(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def dev(database_url: str, store: Store, tmp_path: Path) -> Iterator[DevServer]:
    ada = str(ROOT / "characters" / "ada.json")
    env = offline_environment(DATABASE_URL=database_url, CARRIER_HOME=str(tmp_path / "home"))
    with carrier_dev(env, tmp_path / "dev.log", "--character", ada) as server:
        yield server


def console_link(dev: DevServer) -> str:
    """The console link `carrier dev` printed: the page, with the local key in its fragment."""
    found = re.search(r"^Console: (\S+)$", dev.log.read_text(), re.MULTILINE)
    assert found, dev.log.read_text()
    return found.group(1)


def api(dev: DevServer, key: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A call to the API `carrier dev` serves, as any client makes it."""
    request = urllib.request.Request(
        dev.base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def dev_agent(dev: DevServer, key: str) -> str:
    """The id of the one agent `carrier dev` registered (Ada)."""
    [agent] = api(dev, key, "/v1/agents")["data"]
    found: str = agent["id"]
    return found


def watch_errors(page: Page) -> list[str]:
    """The page's uncaught exceptions and console errors (a refused policy shows there)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    return errors


def computed(page: Page, selector: str, prop: str) -> str:
    value: str = page.locator(selector).first.evaluate(
        "(el, prop) => getComputedStyle(el).getPropertyValue(prop)", prop
    )
    return value


def test_the_console_chats_live_and_inspects_the_turn(
    browser: Browser, dev: DevServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    link = console_link(dev)
    key = (Path(dev.env["CARRIER_HOME"]) / "dev-api-key").read_text().strip()
    assert link == f"{dev.base}/#key={key}"
    # The key is printed once, in that link; the other lines read it from its file.
    assert dev.log.read_text().count(key) == 1

    # A webhook to a port nothing listens on: its delivery stays pending, with the error.
    agent = dev_agent(dev, key)
    hook = api(dev, key, f"/v1/agents/{agent}/webhooks", {"url": "http://127.0.0.1:9/hook"})
    assert hook["url"] == "http://127.0.0.1:9/hook"

    context = browser.new_context(
        viewport={"width": 1280, "height": 820}, color_scheme="light", reduced_motion="reduce"
    )
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(link)

    # The key left the address bar for the tab's sessionStorage; the agent is chosen.
    expect(page.locator("#app")).to_be_visible()
    assert "key=" not in page.url and page.url == f"{dev.base}/"
    stored = page.evaluate("() => sessionStorage.getItem('carrier.console.key')")
    assert stored == key
    expect(page.locator("#agent-select option:checked")).to_have_text(re.compile("^ada$", re.I))
    expect(page.locator("#live")).to_have_attribute("data-state", "live")

    # Chat: the message goes over the WebSocket; its frames show the turn's progress live.
    page.fill("#message-input", "My name is Grace")
    page.click("#send")
    reply = page.locator(".message.from-agent .bubble").last
    expect(reply).to_have_text(ADA_FIRST_REPLY)
    progress = page.locator(".progress.done").last
    expect(progress).to_contain_text("Answered in")
    frames = progress.locator(".progress-step").all_text_contents()
    assert frames[0] == "Accepted", frames
    assert frames[-1] == "Done", frames
    assert "Decided: REPLY" in frames and "REPLY done" in frames, frames
    expect(page.locator(".message.from-user .bubble").last).to_have_text("My name is Grace")

    # The turn inspector: its steps, the decision, the prompt sent, the model calls.
    page.locator(".message.from-agent .inspect").last.click()
    inspector = page.locator("#inspector")
    expect(inspector).to_be_visible()
    expect(inspector.locator(".step-name").first).to_have_text("ingest")
    steps = inspector.locator(".step-name").all_text_contents()
    assert steps[:3] == ["ingest", "decide", "act:REPLY"], steps
    expect(inspector.locator(".decision-text")).to_have_text(ADA_FIRST_REPLY)
    expect(inspector.locator(".stat").filter(has_text="Model calls")).to_contain_text(
        re.compile(r"Model calls\s*[1-9]")
    )
    expect(inspector.locator(".stat").filter(has_text="Est. cost")).to_contain_text("$")
    expect(inspector.locator(".call-task").filter(has_text="decide")).to_have_count(1)
    inspector.locator("summary").filter(has_text="Prompt sent").click()
    expect(inspector.locator(".prompt-text")).to_contain_text("My name is Grace")
    expect(inspector.locator(".prompt-system")).to_contain_text("Ada")
    inspector.locator(".step-name").filter(has_text="decide").click()
    expect(inspector.locator(".step.ok[open] .kv")).to_contain_text("prompt_tokens")
    page.screenshot(path=tmp_path / "console-desktop-light.png")

    # Dark: the colours follow the system's preference.
    light_background = computed(page, "body", "background-color")
    page.emulate_media(color_scheme="dark")
    expect(page.locator("body")).not_to_have_css("background-color", light_background)
    page.screenshot(path=tmp_path / "console-desktop-dark.png")

    # Facts and knowledge, with semantic search.
    page.click(".tab[data-view=memory]")
    expect(page.locator("#documents .doc").first).to_be_visible()
    page.fill("#search-query", "Grace")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-results .result").first).to_be_visible()
    page.screenshot(path=tmp_path / "console-memory-dark.png")

    # The webhook and its delivery of the reply; the delivery opens its turn.
    page.click(".tab[data-view=webhooks]")
    expect(page.locator(".webhook-url")).to_have_text("http://127.0.0.1:9/hook")
    delivery = page.locator("#deliveries tbody tr")
    expect(delivery).to_have_count(1)
    expect(delivery).to_contain_text(re.compile("pending|failed"))
    expect(delivery).to_contain_text("Nice to meet you, Grace.")
    page.screenshot(path=tmp_path / "console-webhooks-dark.png")
    delivery.click()
    expect(inspector.locator(".decision-text")).to_have_text(ADA_FIRST_REPLY)
    page.click(".tab[data-view=chat]")
    expect(inspector).to_be_hidden()

    # A phone: one column, nothing wider than the screen, the inspector as a sheet.
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("#message-input")).to_be_visible()
    expect(reply).to_be_in_viewport()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=tmp_path / "console-phone-light.png")
    page.locator(".message.from-agent .inspect").last.click()
    expect(inspector.locator(".step-name").first).to_have_text("ingest")
    box: Any = inspector.bounding_box()
    assert box["x"] == 0 and box["width"] == 390
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=tmp_path / "console-phone-inspector-dark.png")
    page.click("#inspector-close")
    expect(inspector).to_be_hidden()
    page.screenshot(path=tmp_path / "console-phone-dark.png")

    assert errors == []
    context.close()
    for name in ("desktop-light", "desktop-dark", "phone-light", "phone-dark"):
        assert (tmp_path / f"console-{name}.png").stat().st_size > 10_000
    # Kept where a person can look: the test's temporary folder (see --basetemp).
    print(f"screenshots: {tmp_path}")


def test_without_a_key_the_console_asks_for_one(browser: Browser, dev: DevServer) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    key = (Path(dev.env["CARRIER_HOME"]) / "dev-api-key").read_text().strip()
    page = browser.new_page()
    errors = watch_errors(page)
    page.goto(f"{dev.base}/")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()

    page.fill("#signin-key", "carrier_not-a-real-key")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("refused")
    page.fill("#signin-key", key)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#agent-select option:checked")).to_have_text(re.compile("^ada$", re.I))

    # Signing out forgets the key in this tab.
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('carrier.console.key')") is None
    # The refused key's 401 is the one error the browser logs.
    assert all("401" in e for e in errors), errors
    page.close()
