"""Conversations kept in the browser: the sidebar (new, open, rename, delete), a reload restores
the open one, and exports as Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.web.pages import Site, answered, ask, open_with_token, record_sent_frames

FIRST = "What is the capital of France?"
SECOND = "What is two plus two?"


def test_conversations_are_kept_across_reloads_and_switched_in_the_sidebar(page: Page, site: Site) -> None:
    frames = record_sent_frames(page)
    open_with_token(page, site)
    first = answered(ask(page, FIRST, max_new_tokens=12))
    first_answer = first.locator(".body").inner_text()
    items = page.locator("#conversation-list .conversation")
    expect(items).to_have_count(1)
    expect(items.first).to_have_class("conversation active")
    expect(page.locator("#conversation-title")).to_have_text(FIRST)

    page.reload()  # the token is kept for the tab: no dialog
    expect(page.locator("#conn-status")).to_have_text("connected", timeout=30_000)
    expect(page.locator(".message.user .body")).to_have_text(FIRST)
    expect(page.locator(".message.assistant .body")).to_have_text(first_answer)
    expect(page.locator(".message.assistant .stats")).to_contain_text("tokens/s")

    page.click("#new-chat")
    expect(page.locator("#start-screen")).to_be_visible()
    answered(ask(page, SECOND, max_new_tokens=8))
    assert frames[-1]["history"] == [], "a new conversation starts without the old one's history"
    expect(items).to_have_count(2)
    expect(items.first.locator(".conversation-open")).to_have_text(SECOND)  # most recent first

    items.filter(has_text=FIRST).locator(".conversation-open").click()
    expect(page.locator(".message.user .body")).to_have_text(FIRST)
    answered(ask(page, "And of Germany?", max_new_tokens=8))
    history = frames[-1]["history"]
    assert len(history) == 1 and history[0][0] == FIRST, "the reopened conversation's history goes along"
    page.reload()
    expect(page.locator(".message.user")).to_have_count(2)  # the open conversation came back
    expect(page.locator(".message.user .body").first).to_have_text(FIRST)


def test_rename_export_and_delete(page: Page, site: Site, tmp_path: Path) -> None:
    open_with_token(page, site)
    answer = answered(ask(page, FIRST, max_new_tokens=12)).locator(".body").inner_text()
    active = page.locator("#conversation-list .conversation.active")

    active.get_by_label("Rename conversation").click()
    name = page.get_by_label("Conversation name")
    name.fill("Capitals")
    name.press("Enter")
    expect(active.locator(".conversation-open")).to_have_text("Capitals")
    expect(page.locator("#conversation-title")).to_have_text("Capitals")
    page.reload()
    expect(page.locator("#conversation-title")).to_have_text("Capitals")

    with page.expect_download() as markdown_download:
        active.get_by_label("Export as Markdown").click()
    assert markdown_download.value.suggested_filename == "capitals.md"
    markdown = Path(markdown_download.value.path()).read_text()
    assert markdown.startswith("# Capitals\n")
    assert f"## You\n\n{FIRST}\n" in markdown and "## Assistant (SmolLM2-135M-Instruct)" in markdown
    assert answer.split()[0] in markdown

    with page.expect_download() as json_download:
        active.get_by_label("Export as JSON").click()
    assert json_download.value.suggested_filename == "capitals.json"
    exported = json.loads(Path(json_download.value.path()).read_text())
    assert exported["title"] == "Capitals"
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert exported["messages"][0]["content"] == FIRST
    assert exported["messages"][1]["usage"]["completion_tokens"] >= 1

    page.once("dialog", lambda dialog: dialog.accept())
    active.get_by_label("Delete conversation").click()
    expect(page.locator("#conversation-list .conversation")).to_have_count(0)
    expect(page.locator("#start-screen")).to_be_visible()
    page.reload()
    expect(page.locator("#conversation-list .conversation")).to_have_count(0)
    expect(page.locator("#start-screen")).to_be_visible()
