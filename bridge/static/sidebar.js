// The conversation list: open one, and on the open one rename, export (Markdown, JSON), delete.

import { listConversations } from "./store.js";

const $ = (id) => document.getElementById(id);

function iconButton(icon, label, onClick, text = "") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `icon-button ${icon}`;
  button.setAttribute("aria-label", label);
  button.title = label;
  const glyph = document.createElement("span");
  glyph.className = `icon icon-${icon}`;
  glyph.setAttribute("aria-hidden", "true");
  button.append(glyph);
  if (text) button.append(text); // the icon alone does not say which export is which
  button.addEventListener("click", onClick);
  return button;
}

function startRename(item, entry, handlers) {
  const input = document.createElement("input");
  input.className = "conversation-rename";
  input.value = entry.title;
  input.setAttribute("aria-label", "Conversation name");
  let finished = false;
  const finish = (keep) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (keep && title && title !== entry.title) handlers.rename(entry.id, title);
    else handlers.refresh();
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

function conversationItem(entry, active, handlers) {
  const item = document.createElement("li");
  item.className = `conversation${active ? " active" : ""}`;
  item.dataset.id = entry.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "conversation-open";
  open.textContent = entry.title;
  open.title = entry.title;
  if (active) open.setAttribute("aria-current", "true");
  open.addEventListener("click", () => handlers.open(entry.id));
  item.append(open);
  if (active) {
    const actions = document.createElement("div");
    actions.className = "conversation-actions";
    actions.append(
      iconButton("edit", "Rename conversation", () => startRename(item, entry, handlers)),
      iconButton("download", "Export as Markdown", () => handlers.exportAs(entry.id, "md"), ".md"),
      iconButton("download", "Export as JSON", () => handlers.exportAs(entry.id, "json"), ".json"),
      iconButton("trash", "Delete conversation", () => handlers.remove(entry.id)),
    );
    item.append(actions);
  }
  return item;
}

/** Redraws the list; `activeId` is the open conversation (listed once it has a message). */
export function renderSidebar(activeId, handlers) {
  const entries = listConversations();
  const items = entries.map((entry) => conversationItem(entry, entry.id === activeId, handlers));
  if (!items.length) {
    const empty = document.createElement("li");
    empty.className = "muted sidebar-empty";
    empty.textContent = "No saved conversations yet.";
    items.push(empty);
  }
  $("conversation-list").replaceChildren(...items);
}
