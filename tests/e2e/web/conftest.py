"""The web chat page in headless Chromium (Debian's), driven by Playwright, against a real stack:
the run's `chatllm serve` (real model, real knowledge base: tests/e2e/conftest.py) on loopback and a
`chatllm bridge` with a token in front of it, shared by every test of this folder. Any JavaScript error,
404 or request that leaves the server fails the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.conftest import ChatllmProcess
from tests.e2e.conftest import ServeProcess
from tests.e2e.web.pages import CHROMIUM, CHROMIUM_ARGS, DESKTOP, TOKEN, Site, watch_for_errors

MAX_UPLOAD = 20_000
HTTP_LISTENING = r"HTTP listening on [^:\s]+:(\d+)"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


def start_bridge(grpc_target: str, log: Path, token: str, port: int = 0) -> tuple[ChatllmProcess, int]:
    """A `chatllm bridge` process; returns it and its HTTP port."""
    args = ["bridge", "--upstream", grpc_target, "--host", "127.0.0.1", "--port", str(port), "--token", token]
    args += ["--max-upload-bytes", str(MAX_UPLOAD)]
    bridge = ChatllmProcess(args, log)
    try:
        return bridge, int(bridge.wait_for_log(HTTP_LISTENING, 60).group(1))
    except BaseException:
        bridge.stop()
        raise


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory, real_serve: ServeProcess) -> Iterator[Site]:
    """The server holds no token and listens on loopback only; the bridge checks the page's token
    (so a test can restart the bridge with another one)."""
    tmp = tmp_path_factory.mktemp("web")
    bridge, http_port = start_bridge(real_serve.grpc, tmp / "bridge.log", TOKEN)
    try:
        yield Site(f"http://127.0.0.1:{http_port}/", real_serve.grpc)
    finally:
        bridge.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no saved conversations, no token) at the desktop size."""
    context = browser.new_context(viewport=DESKTOP)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, site: Site, output_dir: Path) -> Iterator[Page]:
    page = context.new_page()
    errors = watch_for_errors(page, site)
    yield page
    page.screenshot(path=str(output_dir / "last.png"))
    assert not errors, f"errors on the page: {errors}"
