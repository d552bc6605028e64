"""Chatting: the start screen, the thinking state, streamed answers, Stop, regenerate, edit and
resend, copy buttons and highlighted code."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.web.pages import Site, answered, ask, open_with_token, record_sent_frames, settings, wait_server_idle

MODEL = "SmolLM2-135M-Instruct"

# Records whether a "Thinking…" state was on screen before the first token replaced it.
WATCH_THINKING = """() => {
    window.__thinking = [];
    new MutationObserver(() => {
        const shown = document.querySelector('#messages .message.assistant:last-child .thinking');
        if (shown && shown.getBoundingClientRect().height > 0) window.__thinking.push(shown.textContent);
    }).observe(document.getElementById('messages'), {childList: true, subtree: true});
    window.__renders = 0;
    new MutationObserver(() => { window.__renders++; })
        .observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
}"""


def test_start_screen_names_the_model_and_an_example_prompt_asks_it(page: Page, site: Site) -> None:
    open_with_token(page, site)
    expect(page.locator("#start-screen")).to_be_visible()
    expect(page.locator("#start-title")).to_have_text(f"Chat with {MODEL}")
    examples = page.locator("#examples .example")
    assert examples.count() >= 3
    settings(page, max_new_tokens=8)
    example = examples.first.inner_text()
    examples.first.click()
    expect(page.locator("#start-screen")).to_be_hidden()
    expect(page.locator(".message.user .body")).to_have_text(example)
    answered(page.locator(".message.assistant").last)
    expect(page.locator(".message.assistant .speaker")).to_have_text(MODEL)


def test_question_gets_a_streamed_answer_after_a_visible_thinking_state(page: Page, site: Site) -> None:
    frames = record_sent_frames(page)
    open_with_token(page, site)
    page.evaluate(WATCH_THINKING)
    answer = answered(ask(page, "What is the capital of France?"))
    expect(answer.locator(".body")).to_contain_text("Paris")
    expect(answer.locator(".stats")).to_contain_text("tokens/s")
    expect(answer.locator(".stats")).to_contain_text("time to first token")
    assert page.evaluate("window.__thinking")[:1] == ["Thinking…"], "no thinking state before the first token"
    expect(answer.locator(".thinking")).to_have_count(0)
    assert page.evaluate("window.__renders") >= 4, "the answer arrived in one piece, not streamed"
    expect(page.locator(".message.user .body").last).to_have_text("What is the capital of France?")
    # Announced politely once complete, and no Sources block without the knowledge base.
    expect(page.locator("#messages")).to_have_attribute("aria-live", "polite")
    expect(answer).not_to_have_attribute("aria-busy", "true")
    expect(answer.locator(".sources")).to_have_count(0)
    # The sliders' values went out as numbers; one served model: no picker, no `model` field.
    assert frames[-1]["max_new_tokens"] == 24 and frames[-1]["temperature"] == 0
    assert "model" not in frames[-1]
    expect(page.locator("#model-picker")).to_be_hidden()


def test_markdown_from_the_model_cannot_inject_html(page: Page, site: Site) -> None:
    open_with_token(page, site)
    answered(ask(page, 'Repeat exactly: <img src=x onerror="window.__pwned=1"> **bold**', max_new_tokens=40))
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".message.assistant img, .message.assistant [onerror]").count() == 0


def test_stop_keeps_the_partial_answer_in_view_and_in_the_history(page: Page, site: Site) -> None:
    page.set_viewport_size({"width": 1280, "height": 480})  # a short window: the answer soon overflows
    frames = record_sent_frames(page)
    open_with_token(page, site)
    story = "Write a very long story about a lighthouse keeper."
    answer = ask(page, story, max_new_tokens=2000, temperature="0.9")
    page.wait_for_function(
        "() => { const m = document.getElementById('messages'); return m.scrollHeight > m.clientHeight + 60; }",
        timeout=120_000,
    )
    page.click("#stop")
    expect(answer.locator(".note")).to_have_text("Stopped.")
    expect(answer.locator(".note")).to_be_in_viewport(ratio=1)
    expect(page.locator("#send")).to_be_visible()
    assert wait_server_idle(site, within=5) == 0
    partial = answer.locator(".body").inner_text()
    assert partial.strip()
    # The page reconnected, and the next question carries the stopped answer as history.
    expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)
    answered(ask(page, "Give the story a title.", max_new_tokens=12))
    history = frames[-1]["history"]
    assert len(history) == 1 and history[0][0] == story
    longest_word = max(re.findall(r"[A-Za-z]+", history[0][1]), key=len)
    assert longest_word in partial, (history, partial)


def test_regenerate_and_edit_and_resend_replace_the_last_round(page: Page, site: Site) -> None:
    frames = record_sent_frames(page)
    open_with_token(page, site)
    answered(ask(page, "Name a colour.", max_new_tokens=8))
    expect(page.locator(".message.assistant .regenerate")).to_have_count(1)

    page.click(".message.assistant .regenerate")
    answered(page.locator(".message.assistant").last)
    expect(page.locator(".message")).to_have_count(2)
    assert [f["prompt"] for f in frames] == ["Name a colour.", "Name a colour."]
    assert frames[-1]["history"] == []

    page.click(".message.user .edit")
    editor = page.get_by_label("Edit the question")
    expect(editor).to_have_value("Name a colour.")
    editor.fill("Name a fruit.")
    editor.press("Enter")
    answered(page.locator(".message.assistant").last)
    expect(page.locator(".message")).to_have_count(2)
    expect(page.locator(".message.user .body")).to_have_text("Name a fruit.")
    assert frames[-1]["prompt"] == "Name a fruit." and frames[-1]["history"] == []


def test_copy_buttons_on_the_answer_and_on_highlighted_code(
    context: BrowserContext, page: Page, site: Site, output_dir: Path
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url.rstrip("/"))
    open_with_token(page, site)
    answer = answered(
        ask(page, "Write a Python function that adds two numbers, in a Markdown code block.", max_new_tokens=80)
    )
    code = answer.locator(".code-block code")
    expect(code.first).to_contain_text("def ")
    # highlight.js (vendored) coloured it: keywords are spans of its classes.
    expect(code.first.locator(".hljs-keyword").first).to_be_visible()
    answer.locator(".code-block .copy-code").first.click()
    expect(answer.locator(".code-block .copy-code").first).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == code.first.inner_text()

    answer.locator(".copy-answer").click()
    expect(answer.locator(".copy-answer")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "```" in copied and "def " in copied, "the answer is copied as the Markdown the model wrote"
    page.screenshot(path=str(output_dir / "code-answer.png"))
