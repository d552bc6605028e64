"""The access token: a wrong one, a dismissed dialog, and a bridge restarted with a new token."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.e2e.web.conftest import start_bridge
from tests.e2e.web.pages import DESKTOP, TOKEN, Site, answered, ask, open_with_token, watch_for_errors


def test_wrong_token_shows_an_error_then_the_right_one_works(page: Page, site: Site) -> None:
    page.goto(site.url)
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", "not-the-token")
    page.click("#token-submit")
    expect(page.locator("#token-error")).to_have_text(re.compile("Wrong token"))
    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)


def test_escape_on_the_token_dialog_says_what_to_do_and_a_later_token_works(page: Page, site: Site) -> None:
    page.goto(site.url)
    expect(page.locator("#token-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#banner")).to_contain_text("needs an access token")
    expect(page.locator("#conn-status")).to_have_text("token needed")
    # Sending asks for the token again, and the question is answered once it is given.
    answer = ask(page, "What is the capital of France?", max_new_tokens=8)
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    answered(answer)
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#conn-status")).to_have_text("connected")

    # The banner's own button opens the dialog as well.
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.click("#token-cancel")
    page.click("#banner-action")
    expect(page.locator("#token-dialog")).to_be_visible()


def test_a_bridge_restarted_with_a_new_token_asks_for_it_without_a_stale_banner(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    bridge, port = start_bridge(site.grpc_target, tmp_path / "bridge-1.log", "first-token")
    context = browser.new_context(viewport=DESKTOP)
    try:
        own = Site(f"http://127.0.0.1:{port}/", site.grpc_target)
        page = context.new_page()
        errors = watch_for_errors(page, own)
        open_with_token(page, own, "first-token")
        assert bridge.terminate() == 0
        expect(page.locator("#banner")).to_contain_text("Retrying", timeout=30_000)
        expect(page.locator("#conn-status")).to_have_text("disconnected")

        bridge, _ = start_bridge(site.grpc_target, tmp_path / "bridge-2.log", "second-token", port)
        expect(page.locator("#token-dialog")).to_be_visible(timeout=30_000)
        expect(page.locator("#token-error")).to_have_text(re.compile("Wrong token"))
        expect(page.locator("#banner")).to_be_hidden()  # the server answered: "cannot reach" is stale
        page.fill("#token-input", "second-token")
        page.click("#token-submit")
        expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)
        answered(ask(page, "What is the capital of France?", max_new_tokens=8))
        assert not errors, errors
    finally:
        context.close()
        bridge.stop()
