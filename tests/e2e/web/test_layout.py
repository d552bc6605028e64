"""How the page holds up: a phone after a long answer, keyboard use, focus, the growing input,
dark mode, the model tab and the model picker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.web.pages import (
    PHONE,
    TOKEN,
    Site,
    answered,
    ask,
    change_info,
    open_with_token,
    record_sent_frames,
    watch_for_errors,
)


def test_phone_after_a_long_answer_the_input_stays_on_screen_and_the_messages_scroll(
    browser: Browser, site: Site, output_dir: Path
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        errors = watch_for_errors(page, site)
        open_with_token(page, site)
        answered(ask(page, "Write a detailed study plan for learning French in one year.", max_new_tokens=160))
        page.screenshot(path=str(output_dir / "phone-long-answer.png"))
        box = page.locator("#prompt").bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], box
        expect(page.locator("#send")).to_be_in_viewport()
        pushed = page.evaluate(
            "[document.scrollingElement, ...document.querySelectorAll('main, #panel-chat, .chat-main')]"
            ".filter(e => e.scrollTop !== 0).map(e => e.id || e.tagName)"
        )
        assert pushed == [], f"the auto-scroll moved the page or the chat panel: {pushed}"
        messages = page.locator("#messages")
        assert messages.evaluate("el => el.scrollHeight > el.clientHeight"), "the answer should overflow"
        # The user can scroll back to the question, and the input stays where it is.
        page.locator(".message.user").scroll_into_view_if_needed()
        expect(page.locator(".message.user")).to_be_in_viewport()
        assert messages.evaluate("el => el.scrollTop") == 0
        expect(page.locator("#prompt")).to_be_in_viewport()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"horizontal overflow: {width}"
        assert not errors, errors
    finally:
        context.close()


def test_keyboard_and_phone_width(browser: Browser, site: Site, output_dir: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        errors = watch_for_errors(page, site)
        open_with_token(page, site)
        page.fill("#prompt", "")
        page.type("#prompt", "line one")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("line two")
        assert page.input_value("#prompt") == "line one\nline two"
        assert page.locator(".message").count() == 0, "Shift+Enter must not send"
        expect(page.locator("#send")).to_be_in_viewport()
        # Conversations and settings open as drawers.
        page.click("#sidebar-toggle")
        expect(page.locator("#sidebar")).to_be_in_viewport()
        expect(page.locator("#sidebar-toggle")).to_have_attribute("aria-expanded", "true")
        page.keyboard.press("Escape")
        expect(page.locator("#sidebar")).to_be_hidden()
        page.click("#settings-toggle")
        expect(page.locator("#temperature")).to_be_visible()
        page.screenshot(path=str(output_dir / "phone-settings.png"))
        page.click("#drawer-backdrop", position={"x": 10, "y": 200})
        expect(page.locator("#settings")).to_be_hidden()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"horizontal overflow at 375 px: {width}"
        page.screenshot(path=str(output_dir / "phone.png"))
        assert not errors, errors
    finally:
        context.close()


def test_tabs_switch_by_keyboard_with_roles_and_a_visible_focus(page: Page, site: Site) -> None:
    open_with_token(page, site)
    page.keyboard.press("Tab")
    chat, kb, model = (page.locator(f"#tab-{name}") for name in ("chat", "kb", "model"))
    expect(chat).to_be_focused()
    outline = chat.evaluate("el => [getComputedStyle(el).outlineStyle, parseFloat(getComputedStyle(el).outlineWidth)]")
    assert outline[0] != "none" and outline[1] >= 2, f"no visible focus: {outline}"
    expect(page.locator('[role="tablist"] [role="tab"]')).to_have_count(3)
    for key, focused, panel in (
        ("ArrowRight", kb, "#panel-kb"),
        ("ArrowRight", model, "#panel-model"),
        ("ArrowRight", chat, "#panel-chat"),
        ("ArrowLeft", model, "#panel-model"),
        ("Home", chat, "#panel-chat"),
        ("End", model, "#panel-model"),
    ):
        page.keyboard.press(key)
        expect(focused).to_be_focused()
        expect(focused).to_have_attribute("aria-selected", "true")
        expect(focused).to_have_attribute("tabindex", "0")
        expect(page.locator(panel)).to_be_visible()
        expect(page.locator('[role="tab"][aria-selected="true"]')).to_have_count(1)
        expect(page.locator('[role="tabpanel"]:visible')).to_have_count(1)
    # One tab stop for the whole list: Tab leaves it.
    page.keyboard.press("Tab")
    expect(page.locator('[role="tab"]:focus')).to_have_count(0)


def test_the_input_grows_with_its_text_up_to_a_limit(page: Page, site: Site) -> None:
    open_with_token(page, site)
    prompt = page.locator("#prompt")

    def height() -> float:
        return float(prompt.evaluate("el => el.getBoundingClientRect().height"))

    prompt.fill("one line")
    one = height()
    prompt.fill("\n".join(f"line {i}" for i in range(5)))
    five = height()
    assert five > one * 2, (one, five)
    prompt.fill("\n".join(f"line {i}" for i in range(80)))
    many = height()
    assert five < many <= 0.4 * 860 + 1, (five, many)
    assert prompt.evaluate("el => el.scrollHeight > el.clientHeight"), "past the limit it scrolls"
    prompt.fill("")
    assert height() == one


def background(page: Page) -> str:
    return str(page.evaluate("getComputedStyle(document.body).backgroundColor"))


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(browser: Browser, site: Site) -> None:
    context = browser.new_context(color_scheme="dark")
    try:
        page = context.new_page()
        errors = watch_for_errors(page, site)
        open_with_token(page, site)
        dark = background(page)
        toggle = page.locator("#theme-toggle")
        expect(toggle).to_have_attribute("aria-pressed", "true")
        toggle.click()
        expect(toggle).to_have_attribute("aria-pressed", "false")
        light = background(page)
        assert luminance(dark) < 0.1 < 0.8 < luminance(light), (dark, light)
        page.reload()
        expect(page.locator("#theme-toggle")).to_have_attribute("aria-pressed", "false")
        assert background(page) == light
        assert not errors, errors
    finally:
        context.close()


def luminance(css_color: str) -> float:
    red, green, blue = (int(part) for part in css_color[css_color.index("(") + 1 : -1].split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_model_panel_shows_the_model_and_the_catalogue(page: Page, site: Site, output_dir: Path) -> None:
    open_with_token(page, site)
    page.click("#tab-model")
    info = page.locator("#model-info")
    expect(info).to_contain_text("SmolLM2-135M-Instruct")
    expect(info).to_contain_text("hf")
    expect(info).to_contain_text("8192 tokens")
    expect(page.locator("#served-models")).to_be_hidden()  # one model
    info = page.request.get(site.url + "api/info", headers={"Authorization": TOKEN}).json()
    assert [model["id"] for model in info["models"]] == ["SmolLM2-135M-Instruct"]
    expect(page.locator("#catalog tr", has_text="Qwen2-7b")).to_contain_text("A10")
    page.screenshot(path=str(output_dir / "model-tab.png"), full_page=True)


def test_model_picker_for_more_than_one_model_names_it_in_each_frame(
    context: BrowserContext, page: Page, site: Site
) -> None:
    """The server serves one model here; /api/info is given a second entry (as a server with an
    adapter lists it) to check the page's side: the picker, and `model` in the chat frames."""

    def two_models(info: dict[str, Any]) -> None:
        info["models"] = [info["model"], {**info["model"], "id": "kettle-adapter"}]

    change_info(context, two_models)
    frames = record_sent_frames(page)
    open_with_token(page, site)
    picker = page.locator("#model-select")
    expect(page.locator("#model-picker")).to_be_visible()
    expect(picker.locator("option")).to_have_count(2)
    picker.select_option("kettle-adapter")
    expect(page.locator("#start-title")).to_have_text("Chat with kettle-adapter")
    answer = ask(page, "What is the capital of France?", max_new_tokens=8)
    expect(answer.locator(".stats, .note").first).to_be_visible(timeout=120_000)
    assert frames[-1]["model"] == "kettle-adapter"
    page.click("#tab-model")
    expect(page.locator("#served-model-list li")).to_have_count(2)
    page.reload()
    expect(page.locator("#model-select")).to_have_value("kettle-adapter")  # remembered
