"""The chat page against a server with a base model and a LoRA adapter (Debian Chromium): the picker
appears, the frame names the adapter, the answer is the adapter's, and an unknown name is an error."""

from __future__ import annotations

import asyncio
import json

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from chatllm.clients import ChatClient
from tests.component.contract.conftest import ADAPTER, MODEL, QUESTION
from tests.e2e.web.pages import CHROMIUM, CHROMIUM_ARGS, DESKTOP, answered, ask, record_sent_frames
from tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


def adapter_answer(stack: Stack) -> str:
    with ChatClient(stack.grpc_target) as client:
        return client.chat(QUESTION, model=ADAPTER, temperature=0, max_new_tokens=24).text


def pick_and_ask(stack: Stack) -> tuple[list[str], list[dict[str, object]], str, str]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page: Page = browser.new_page(viewport=DESKTOP)
            frames = record_sent_frames(page)
            page.goto(stack.http_url + "/")
            expect(page.locator("#model-picker")).to_be_visible(timeout=30_000)
            options = page.locator("#model-select option").all_text_contents()
            page.select_option("#model-select", ADAPTER)
            answer = answered(ask(page, QUESTION)).locator(".body").inner_text()
            # A name the server does not serve (a stale choice, say) is a readable error, not the base model.
            page.evaluate(
                "name => { const s = document.getElementById('model-select'); s.add(new Option(name, name));"
                " s.value = name; s.dispatchEvent(new Event('change')); }",
                "retired-adapter",
            )
            error = ask(page, QUESTION)
            expect(error).to_contain_text("not served", timeout=60_000)
            return options, frames, answer, error.inner_text()
        finally:
            browser.close()


async def test_the_picker_sends_the_adapter_and_shows_its_answer(stack: Stack) -> None:
    options, frames, answer, error = await asyncio.to_thread(pick_and_ask, stack)
    assert MODEL in " ".join(options) and ADAPTER in " ".join(options)
    chat_frames = [f for f in frames if isinstance(f, dict) and "prompt" in f]
    assert chat_frames[0]["model"] == ADAPTER and chat_frames[-1]["model"] == "retired-adapter"
    expected = await asyncio.to_thread(adapter_answer, stack)
    assert " ".join(answer.split()) == " ".join(expected.split()), json.dumps({"page": answer, "grpc": expected})
    assert "retired-adapter" in error
