"""The knowledge-base tab and answers from it: uploads (mixed, too large), one knowledge-base
choice for both tabs, sources people can check; and the screenshots of such a conversation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.web.conftest import MAX_UPLOAD
from tests.e2e.web.pages import PHONE, TOKEN, Site, answered, ask, change_info, open_with_token, watch_for_errors

MANUAL = """# Zephyr-9 field kettle

## Boiling

The Zephyr-9 kettle boils one litre of water in exactly 47 seconds on its turbo setting.

## Warranty

The warranty of the Zephyr-9 covers the heating coil for 11 years.
"""
TEA = "Oolong tea from the Wuyi mountains is roasted over charcoal for twelve hours.\n"


def create_knowledge_base(page: Page, name: str) -> None:
    page.click("#tab-kb")
    page.fill("#kb-new-name", name)
    page.press("#kb-new-name", "Enter")
    expect(page.locator("#kb-select")).to_have_value(name)


def upload(page: Page, *files: Path) -> None:
    page.set_input_files("#kb-files", [str(f) for f in files])
    expect(page.locator("#upload-progress")).to_be_hidden(timeout=120_000)


def three_digits(score: float) -> str:
    """As the page writes a score: three significant digits, no trailing zeros."""
    return f"{float(f'{score:.3g}'):g}"


def record_final_events(page: Page) -> list[dict[str, Any]]:
    finals: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        ws.on("framereceived", lambda p: finals.append(json.loads(p)["final"]) if '"final"' in p[:10] else None)

    page.on("websocket", on_socket)
    return finals


def test_answer_from_an_upload_shows_sources_then_screenshots(
    browser: Browser, context: BrowserContext, page: Page, site: Site, tmp_path: Path, output_dir: Path
) -> None:
    manual = tmp_path / "zephyr-manual.md"
    manual.write_text(MANUAL)
    finals = record_final_events(page)
    open_with_token(page, site)
    create_knowledge_base(page, "zephyr")
    upload(page, manual)
    expect(page.locator("#upload-status")).to_contain_text("Done.")
    row = page.locator("#kb-documents tr", has_text="zephyr-manual.md")
    assert int(row.locator("td").nth(1).inner_text()) >= 1
    page.screenshot(path=str(output_dir / "knowledge-base-tab.png"), full_page=True)

    page.click("#tab-chat")
    page.check("#use-kb")
    answer = answered(ask(page, "How long does the Zephyr-9 kettle take to boil one litre?", max_new_tokens=48))
    sources = answer.locator(".sources")
    expect(sources.locator("h3")).to_have_text("Sources")
    sent = finals[-1]["sources"]
    items = sources.locator(".source")
    expect(items).to_have_count(len(sent))  # the page shows what the server sent, all of it
    for item, source in zip(items.all(), sent, strict=True):
        expect(item.locator(".source-file")).to_have_text(source["file"])
        expect(item.locator(".source-chunk")).to_have_text(f"chunk {source['chunk'] + 1}")
        expect(item.locator(".source-score")).to_have_text(f"relevance {three_digits(source['score'])}")
    kettle = items.filter(has_text="47 seconds").first
    full = kettle.locator(".source-text")
    expect(full).to_be_hidden()
    kettle.locator("summary").click()
    expect(full).to_be_visible()
    expect(full).to_contain_text("boils one litre of water in exactly 47 seconds")
    page.screenshot(path=str(output_dir / "desktop.png"))
    take_screenshots_elsewhere(browser, context, site, output_dir)


def take_screenshots_elsewhere(browser: Browser, context: BrowserContext, site: Site, output_dir: Path) -> None:
    """The same saved conversation on a phone and in dark mode (a reload restores it)."""
    saved = context.storage_state()
    for name, options in {
        "phone": {"viewport": PHONE, "is_mobile": True, "has_touch": True},
        "dark": {"viewport": {"width": 1280, "height": 860}, "color_scheme": "dark"},
    }.items():
        other = browser.new_context(storage_state=saved, **options)  # type: ignore[arg-type]
        try:
            page = other.new_page()
            errors = watch_for_errors(page, site)
            open_with_token(page, site)
            expect(page.locator(".message.assistant .sources")).to_be_visible()
            page.locator(".message.assistant").last.scroll_into_view_if_needed()
            page.screenshot(path=str(output_dir / f"{name}.png"))
            assert not errors, errors
        finally:
            other.close()


def test_the_two_pickers_are_one_choice_remembered_across_reloads(page: Page, site: Site, tmp_path: Path) -> None:
    tea = tmp_path / "tea.txt"
    tea.write_text(TEA)
    open_with_token(page, site)
    create_knowledge_base(page, "product-docs")
    upload(page, tea)
    page.click("#tab-chat")
    expect(page.locator("#chat-kb")).to_have_value("product-docs")
    page.check("#use-kb")
    answer = answered(ask(page, "How long is oolong tea roasted?", max_new_tokens=16))
    expect(answer.locator(".note")).to_have_count(0)
    expect(answer.locator(".sources .source-file").first).to_have_text("tea.txt")

    page.reload()
    expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)
    expect(page.locator("#chat-kb")).to_have_value("product-docs")
    page.click("#tab-kb")
    expect(page.locator("#kb-select")).to_have_value("product-docs")
    expect(page.locator("#kb-documents")).to_contain_text("tea.txt")
    # Creating one selects it in both tabs; picking in the chat tab picks for the other tab too.
    create_knowledge_base(page, "second-choice")
    page.click("#tab-chat")
    expect(page.locator("#chat-kb")).to_have_value("second-choice")
    page.select_option("#chat-kb", "product-docs")
    page.click("#tab-kb")
    expect(page.locator("#kb-select")).to_have_value("product-docs")
    expect(page.locator("#kb-documents")).to_contain_text("tea.txt")


def test_mixed_upload_lists_the_stored_file_and_explains_the_rejected_one(
    page: Page, site: Site, tmp_path: Path
) -> None:
    tea, program = tmp_path / "tea.txt", tmp_path / "setup.exe"
    tea.write_text(TEA)
    program.write_bytes(b"MZ\x90\x00" + bytes(200))
    open_with_token(page, site)
    create_knowledge_base(page, "mixed")
    upload(page, tea, program)
    results = page.locator("#upload-results li")
    expect(results.filter(has_text="tea.txt")).to_contain_text("stored, 1 chunk")
    expect(results.filter(has_text="setup.exe")).to_contain_text("not stored")
    expect(results.filter(has_text="setup.exe")).to_have_class("rejected")
    expect(page.locator("#upload-status")).to_contain_text("Stored 1 of 2")
    expect(page.locator("#kb-documents")).to_contain_text("tea.txt")


def test_file_too_large_is_explained(page: Page, site: Site, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("lorem ipsum " * (MAX_UPLOAD // 6))
    open_with_token(page, site)
    create_knowledge_base(page, "big")
    upload(page, big)
    expect(page.locator("#upload-results li.rejected")).to_contain_text("File too large")
    expect(page.locator("#upload-status")).to_contain_text("Stored 0 of 1")


def with_rules(rules: dict[str, Any] | None) -> Callable[[dict[str, Any]], None]:
    """/api/info with `rules` replaced (None: without any, as a server that sends none)."""

    def change(info: dict[str, Any]) -> None:
        info.pop("rules", None)
        if rules is not None:
            info["rules"] = rules

    return change


def test_a_knowledge_base_name_is_checked_by_the_servers_rule_from_api_info(
    context: BrowserContext, page: Page, site: Site
) -> None:
    """The rule the real /api/info sends (the kernel's), not a copy in the test."""
    name_rule = requests.get(f"{site.url}api/info", headers={"Authorization": TOKEN}, timeout=30).json()["rules"][
        "knowledge_base_name"
    ]
    assert re.fullmatch(name_rule["pattern"].strip("^$"), "rule-abiding")
    open_with_token(page, site)
    page.click("#tab-kb")
    page.fill("#kb-new-name", "no spaces allowed")
    page.press("#kb-new-name", "Enter")
    expect(page.locator("#upload-status")).to_have_text(f"Knowledge-base names: {name_rule['rule']}.")
    expect(page.locator("#upload-status")).to_have_class("error")
    expect(page.locator("#kb-select option", has_text="no spaces allowed")).to_have_count(0)
    expect(page.locator("#kb-new-name")).to_have_attribute("title", name_rule["rule"])
    create_knowledge_base(page, "rule-abiding")


def test_without_the_rule_the_server_refuses_a_bad_name_on_upload(
    context: BrowserContext, page: Page, site: Site, tmp_path: Path
) -> None:
    tea = tmp_path / "tea.txt"
    tea.write_text(TEA)
    change_info(context, with_rules(None))
    open_with_token(page, site)
    create_knowledge_base(page, "no spaces allowed")
    upload(page, tea)
    rejected = page.locator("#upload-results li.rejected")
    expect(rejected).to_contain_text("tea.txt: not stored.")
    expect(rejected).to_contain_text("letters, digits")
    expect(page.locator("#upload-status")).to_contain_text("Stored 0 of 1")
