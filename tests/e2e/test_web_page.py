"""The web chat page in headless Chromium (Debian's), driven by Playwright, against a real
`chatllm serve` (real model, real knowledge base, a token). Any JavaScript error fails the test."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

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
MAX_UPLOAD = 20_000
MANUAL = """# Zephyr-9 field kettle

## Boiling

The Zephyr-9 kettle boils one litre of water in exactly 47 seconds on its turbo setting.

## Warranty

The warranty of the Zephyr-9 covers the heating coil for 11 years.
"""

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


@dataclass
class Site:
    url: str
    grpc_target: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, model_dir: Path) -> Iterator[Site]:
    from tests.conftest import ChatllmProcess

    tmp = tmp_path_factory.mktemp("web")
    args = [
        "serve", "--backend", "hf", "--host", "127.0.0.1", "--port", "0", "--grpc-host", "127.0.0.1",
        "--grpc-port", "0", "--data-dir", str(data_dir), "--milvus-uri", str(tmp / "kb" / "milvus.db"),
        "--token", TOKEN, "--max-upload-bytes", str(MAX_UPLOAD),
    ]  # fmt: skip
    proc = ChatllmProcess(args, tmp / "serve.log")
    try:
        grpc_port = proc.grpc_port()
        http_port = int(proc.wait_for_log(r"HTTP listening on [^:\s]+:(\d+)", 180).group(1))
        proc.wait_for_log(r"ready: ", 240)
        yield Site(f"http://127.0.0.1:{http_port}/", f"127.0.0.1:{grpc_port}")
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, output_dir: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors other than HTTP statuses (a 401 or 413 is an expected answer, shown to the user
    # in words); a 404 is a missing asset or route.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404 else None)
    yield page
    page.screenshot(path=str(output_dir / "last.png"))
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_with_token(page: Page, site: Site) -> None:
    page.goto(site.url)
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    expect(dialog).to_be_hidden()
    expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)


def ask(page: Page, question: str, max_new_tokens: int = 24, temperature: str = "0") -> None:
    page.fill("#max-new-tokens", str(max_new_tokens))
    page.fill("#temperature", temperature)
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")


def wait_server_idle(site: Site, within: float) -> int:
    with ChatClient(site.grpc_target, token=TOKEN) as client:
        deadline = time.monotonic() + within
        while True:
            info = client.server_info()
            if info.active_requests == 0 or time.monotonic() > deadline:
                return info.active_requests
            time.sleep(0.1)


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


def test_question_gets_a_streamed_answer_with_stats(page: Page, site: Site, output_dir: Path) -> None:
    open_with_token(page, site)
    # Count how many times the answer's text grows while it streams.
    page.evaluate(
        """() => {
            window.__renders = 0;
            new MutationObserver(() => { window.__renders++; })
              .observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
        }"""
    )
    ask(page, "What is the capital of France?")
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".stats")).to_contain_text("tokens/s", timeout=120_000)
    expect(answer.locator(".body")).to_contain_text("Paris")
    expect(answer.locator(".stats")).to_contain_text("time to first token")
    assert page.evaluate("window.__renders") >= 4, "the answer arrived in one piece, not streamed"
    expect(page.locator(".message.user").last).to_have_text("What is the capital of France?")
    page.screenshot(path=str(output_dir / "chat-tab.png"), full_page=True)


def test_markdown_from_the_model_cannot_inject_html(page: Page, site: Site) -> None:
    open_with_token(page, site)
    ask(page, 'Repeat exactly: <img src=x onerror="window.__pwned=1"> **bold**', max_new_tokens=40)
    expect(page.locator(".message.assistant").last.locator(".stats")).to_be_visible(timeout=120_000)
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".message.assistant img, .message.assistant [onerror]").count() == 0


def test_stop_cancels_the_answer_on_the_server(page: Page, site: Site) -> None:
    open_with_token(page, site)
    ask(page, "Write a very long story about a lighthouse keeper.", max_new_tokens=2000, temperature="0.9")
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".body")).not_to_be_empty(timeout=120_000)
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    expect(answer.locator(".note")).to_have_text("Stopped.")
    expect(page.locator("#send")).to_be_visible()
    assert wait_server_idle(site, within=5) == 0
    # The page reconnected and keeps working.
    expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)
    ask(page, "What is the capital of France?", max_new_tokens=12)
    expect(page.locator(".message.assistant").last.locator(".stats")).to_be_visible(timeout=120_000)


def test_upload_markdown_then_answer_from_it_with_its_source(
    page: Page, site: Site, tmp_path: Path, output_dir: Path
) -> None:
    manual = tmp_path / "zephyr-manual.md"
    manual.write_text(MANUAL)
    open_with_token(page, site)
    page.click("#tab-kb")
    page.set_input_files("#kb-files", str(manual))
    expect(page.locator("#upload-status")).to_contain_text("Done.", timeout=120_000)
    row = page.locator("#kb-documents tr", has_text="zephyr-manual.md")
    expect(row).to_be_visible()
    assert int(row.locator("td").nth(1).inner_text()) >= 1
    page.screenshot(path=str(output_dir / "knowledge-base-tab.png"), full_page=True)

    page.click("#tab-chat")
    page.check("#use-kb")
    ask(page, "How long does the Zephyr-9 kettle take to boil one litre?", max_new_tokens=48)
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".sources")).to_contain_text("zephyr-manual.md", timeout=180_000)
    expect(answer.locator(".sources")).to_contain_text("47 seconds")
    expect(answer.locator(".sources")).to_contain_text("score 0.")  # the fused relevance score
    page.screenshot(path=str(output_dir / "chat-with-sources.png"), full_page=True)


def test_file_too_large_is_explained(page: Page, site: Site, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("lorem ipsum " * (MAX_UPLOAD // 6))
    open_with_token(page, site)
    page.click("#tab-kb")
    page.set_input_files("#kb-files", str(big))
    expect(page.locator("#upload-status")).to_contain_text("File too large", timeout=60_000)


def test_model_panel_shows_the_model_and_the_catalogue(page: Page, site: Site, output_dir: Path) -> None:
    open_with_token(page, site)
    page.click("#tab-model")
    info = page.locator("#model-info")
    expect(info).to_contain_text("SmolLM2-135M-Instruct")
    expect(info).to_contain_text("hf")
    expect(info).to_contain_text("8192 tokens")
    expect(page.locator("#catalog tr", has_text="Qwen2-7b")).to_contain_text("A10")
    page.screenshot(path=str(output_dir / "model-tab.png"), full_page=True)


def test_keyboard_and_phone_width(browser: Browser, site: Site, output_dir: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_with_token(page, site)
        page.fill("#prompt", "")
        page.type("#prompt", "line one")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("line two")
        assert page.input_value("#prompt") == "line one\nline two"
        assert page.locator(".message").count() == 0, "Shift+Enter must not send"
        expect(page.locator("#send")).to_be_in_viewport()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"horizontal overflow at 375 px: {width}"
        page.screenshot(path=str(output_dir / "phone.png"), full_page=True)
    finally:
        context.close()
    assert not errors, errors
