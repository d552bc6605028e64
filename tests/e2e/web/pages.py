"""What the page tests share: the browser's settings, the stack's address, and the steps a user
takes (open the page with the token, ask a question, wait for the answer)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import BrowserContext, Locator, Page, Route, ViewportSize, expect

from chatllm.clients import ChatClient

TOKEN = "page-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
ANSWER_TIMEOUT_MS = 180_000


@dataclass
class Site:
    url: str
    grpc_target: str


def watch_for_errors(page: Page, site: Site) -> list[str]:
    """Collects JavaScript errors, console errors other than HTTP statuses (a 401 or 413 is an
    expected answer, shown to the user in words), 404s (a missing asset or route) and any request
    to another origin (the page must work offline: no CDN)."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404 else None)
    local = (site.url, site.url.replace("http://", "ws://"), "data:", "blob:")
    page.on("request", lambda r: None if r.url.startswith(local) else errors.append(f"left the server: {r.url}"))
    return errors


def open_with_token(page: Page, site: Site, token: str = TOKEN) -> None:
    page.goto(site.url)
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", token)
    page.click("#token-submit")
    expect(dialog).to_be_hidden()
    expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)


def settings(page: Page, max_new_tokens: int = 24, temperature: str = "0") -> None:
    """Sets the sliders (Playwright fills a range input like a user dragging it to the value)."""
    page.fill("#max-new-tokens", str(max_new_tokens))
    page.fill("#temperature", temperature)


def ask(page: Page, question: str, max_new_tokens: int = 24, temperature: str = "0") -> Locator:
    """Types and sends a question; returns the answer's message element."""
    if page.locator("#settings-toggle").is_visible():  # a phone: the settings are a drawer
        page.click("#settings-toggle")
        settings(page, max_new_tokens, temperature)
        page.keyboard.press("Escape")
    else:
        settings(page, max_new_tokens, temperature)
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")
    return page.locator(".message.assistant").last


def answered(answer: Locator, timeout: float = ANSWER_TIMEOUT_MS) -> Locator:
    """Waits until the answer is complete (its stats line appears); returns it."""
    expect(answer.locator(".stats")).to_be_visible(timeout=timeout)
    return answer


def change_info(context: BrowserContext, change: Callable[[dict[str, Any]], None]) -> None:
    """Routes the page's /api/info through `change`, to check the page's side of what a server
    might send (a 401 before the token goes through as it is)."""

    def handle(route: Route) -> None:
        response = route.fetch()
        if response.status != 200:
            route.fulfill(response=response)
            return
        info = response.json()
        change(info)
        route.fulfill(response=response, body=json.dumps(info))

    context.route("**/api/info", handle)


def record_sent_frames(page: Page) -> list[dict[str, Any]]:
    """Every JSON frame the page sends on its chat socket, decoded."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        ws.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return frames


def wait_server_idle(site: Site, within: float) -> int:
    """Active requests on the server once it is idle or `within` seconds passed."""
    with ChatClient(site.grpc_target) as client:
        deadline = time.monotonic() + within
        while True:
            info = client.server_info()
            if info.active_requests == 0 or time.monotonic() > deadline:
                return info.active_requests
            time.sleep(0.1)
