// @ts-check
// The conversation list: new, open one, and on the open one rename, export (Markdown, JSON),
// delete. What the user picks is told as conversation-* events.

import { button, byId, el } from "./dom.js";
import { emit } from "./events.js";
import { listConversations } from "./store.js";

/** @typedef {import("./store.js").ConversationEntry} ConversationEntry */

/** @type {string | null} the open conversation, as last drawn */
let activeId = null;

/**
 * @param {HTMLLIElement} item
 * @param {ConversationEntry} entry
 */
function startRename(item, entry) {
  const input = el("input", { className: "conversation-rename", value: entry.title, ariaLabel: "Conversation name" });
  let finished = false;
  /** @param {boolean} keep */
  const finish = (keep) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (keep && title && title !== entry.title) emit("conversation-rename", { id: entry.id, title });
    else renderSidebar(activeId);
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  item.replaceChildren(input);
  input.focus();
  input.select();
}

/**
 * @param {ConversationEntry} entry
 * @param {boolean} active
 */
function conversationItem(entry, active) {
  const item = el("li", { className: `conversation${active ? " active" : ""}` });
  const open = el("button", {
    type: "button",
    className: "conversation-open",
    textContent: entry.title,
    title: entry.title,
    onclick: () => emit("conversation-open", entry.id),
  });
  if (active) open.ariaCurrent = "true";
  item.append(open);
  if (!active) return item;
  /** @param {"md" | "json"} format */
  const exportAs = (format) => emit("conversation-export", { id: entry.id, format });
  item.append(
    el(
      "div",
      { className: "conversation-actions" },
      // The icon alone does not say which export is which: ".md" / ".json" beside it.
      button({ icon: "edit", label: "Rename conversation", className: "icon-button edit", onClick: () => startRename(item, entry) }),
      button({ icon: "download", text: ".md", label: "Export as Markdown", className: "icon-button download", onClick: () => exportAs("md") }),
      button({ icon: "download", text: ".json", label: "Export as JSON", className: "icon-button download", onClick: () => exportAs("json") }),
      button({ icon: "trash", label: "Delete conversation", className: "icon-button trash", onClick: () => emit("conversation-delete", entry.id) }),
    ),
  );
  return item;
}

/**
 * Redraws the list.
 * @param {string | null} active the open conversation (listed once it has a message)
 */
export function renderSidebar(active) {
  activeId = active;
  const items = listConversations().map((entry) => conversationItem(entry, entry.id === active));
  if (!items.length) items.push(el("li", { className: "muted sidebar-empty", textContent: "No saved conversations yet." }));
  byId("conversation-list").replaceChildren(...items);
}

export function initSidebar() {
  byId("new-chat").addEventListener("click", () => emit("conversation-new"));
}
