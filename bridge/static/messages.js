// How messages look: Markdown through DOMPurify, highlighted code blocks with a copy button,
// the thinking state, stats, notes, sources and the per-message actions.

import { formatScore } from "./store.js";

// Model output is untrusted: Markdown is rendered, then only formatting tags survive
// (no images, media, forms or styles: nothing that runs or fetches anything).
const ALLOWED_TAGS = ["p", "br", "hr", "strong", "em", "b", "i", "del", "code", "pre", "blockquote", "ul", "ol",
  "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a", "span"];
const LANGUAGE_CLASS = /^language-([\w+#.-]{1,30})$/;
let purifierReady = false;

function sanitize(html) {
  if (!purifierReady) {
    // The one attribute beyond links: a code block's `language-x` class, which picks its highlighting.
    window.DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
      if (data.attrName === "class") data.keepAttr = node.nodeName === "CODE" && LANGUAGE_CLASS.test(data.attrValue);
    });
    purifierReady = true;
  }
  return window.DOMPurify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR: ["href", "title", "class"] });
}

/** Copies text; falls back to execCommand where the Clipboard API is missing (plain http). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // denied: try the old way
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

function button(label, icon, onClick, className = "") {
  const element = document.createElement("button");
  element.type = "button";
  if (className) element.className = className;
  if (icon) {
    const glyph = document.createElement("span");
    glyph.className = `icon icon-${icon}`;
    glyph.setAttribute("aria-hidden", "true");
    element.append(glyph);
  }
  const text = document.createElement("span");
  text.textContent = label;
  element.append(text);
  element.addEventListener("click", onClick);
  return element;
}

function copyButton(label, getText, className) {
  const element = button(label, "copy", async () => {
    const copied = await copyText(getText());
    const text = element.lastElementChild;
    text.textContent = copied ? "Copied" : "Copy failed";
    setTimeout(() => {
      text.textContent = label;
    }, 1500);
  }, className);
  return element;
}

function decorateCodeBlock(pre, final) {
  const code = pre.querySelector("code");
  if (!code) return;
  const language = LANGUAGE_CLASS.exec(code.className)?.[1] || "";
  const hljs = window.hljs;
  const text = code.textContent;
  if (hljs && language && hljs.getLanguage(language)) {
    code.innerHTML = hljs.highlight(text, { language, ignoreIllegals: true }).value; // hljs escapes the text
    code.classList.add("hljs");
  } else if (hljs && !language && final) {
    // Guessing the language is costly: only once the answer is complete.
    const guess = hljs.highlightAuto(text);
    code.innerHTML = guess.value;
    code.classList.add("hljs");
  }
  const block = document.createElement("div");
  block.className = "code-block";
  const head = document.createElement("div");
  head.className = "code-head";
  const name = document.createElement("span");
  name.textContent = language || "code";
  head.append(name, copyButton("Copy", () => text, "copy-code"));
  pre.replaceWith(block);
  block.append(head, pre);
}

export function renderMarkdown(element, text, final = true) {
  const html = window.marked.parse(text, { gfm: true, breaks: true });
  element.innerHTML = sanitize(html);
  for (const link of element.querySelectorAll("a")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
  for (const pre of element.querySelectorAll("pre")) decorateCodeBlock(pre, final);
}

function div(className, text) {
  const element = document.createElement("div");
  element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

export function sourcesBlock(sources) {
  const section = document.createElement("section");
  section.className = "sources";
  const heading = document.createElement("h3");
  heading.textContent = "Sources";
  const list = document.createElement("ol");
  for (const source of sources) {
    const item = document.createElement("li");
    item.className = "source";
    const head = div("source-head");
    const file = document.createElement("span");
    file.className = "source-file";
    file.textContent = source.file;
    const chunk = document.createElement("span");
    chunk.className = "source-chunk";
    chunk.textContent = `chunk ${source.chunk + 1}`; // the server counts from 0
    const score = document.createElement("span");
    score.className = "source-score";
    score.title = "relevance score (higher is closer)";
    score.textContent = `relevance ${formatScore(source.score)}`;
    head.append(file, chunk, score);
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Show the full chunk";
    const full = document.createElement("p");
    full.className = "source-text";
    full.textContent = source.text;
    details.append(summary, full);
    details.addEventListener("toggle", () => {
      summary.textContent = details.open ? "Hide the chunk" : "Show the full chunk";
    });
    const preview = document.createElement("p");
    preview.className = "source-preview";
    preview.textContent = source.text;
    item.append(head, preview, details);
    list.append(item);
  }
  section.append(heading, list);
  return section;
}

function statsLine(message) {
  const stats = message.stats || {};
  const tokens = message.usage?.completion_tokens ?? 0;
  const ttft = typeof stats.ttft_s === "number" ? `${stats.ttft_s.toFixed(2)} s` : "–";
  const rate = typeof stats.tokens_per_s === "number" ? stats.tokens_per_s.toFixed(1) : "–";
  return `time to first token ${ttft} · ${rate} tokens/s · ${tokens} tokens · ${message.finish_reason}`;
}

function thinking() {
  const element = document.createElement("span");
  element.className = "thinking";
  element.textContent = "Thinking…";
  return element;
}

/** A user message; `actions.edit` (only on the last question) offers edit-and-resend. */
export function userElement(message, actions = {}) {
  const element = div("message user");
  element.append(div("body", message.content));
  if (actions.edit) {
    const row = div("message-actions");
    row.append(button("Edit", "edit", () => actions.edit(element), "edit"));
    element.append(row);
  }
  return element;
}

/** The answer body only: cheap enough for every animation frame while streaming. */
export function renderAnswerBody(element, message) {
  const body = element.querySelector(".body");
  if (message.pending && !message.content) body.replaceChildren(thinking());
  else renderMarkdown(body, message.content, !message.pending);
}

/** A whole assistant message; `actions.regenerate` (only on the last answer) offers a new answer. */
export function assistantElement(message, actions = {}) {
  const element = div("message assistant");
  if (message.model) element.append(div("speaker", message.model));
  element.append(div("body"));
  renderAnswerBody(element, message);
  if (message.pending) {
    element.setAttribute("aria-busy", "true"); // announced once complete, not per token
    return element;
  }
  if (message.stopped) element.append(div("note", "Stopped."));
  if (message.interrupted) element.append(div("note", "The page was closed before this answer finished."));
  if (message.error) element.append(div("note", message.error));
  if (message.sources?.length) element.append(sourcesBlock(message.sources));
  if (message.finish_reason) element.append(div("stats", statsLine(message)));
  const row = div("message-actions");
  if (message.content) row.append(copyButton("Copy", () => message.content, "copy-answer"));
  if (actions.regenerate) row.append(button("Regenerate", "redo", actions.regenerate, "regenerate"));
  if (row.childElementCount) element.append(row);
  return element;
}

/** Edit and resend: the question in a text box; `send(text)` or `cancel()`. */
export function editBox(text, send, cancel) {
  const box = div("edit-box");
  const area = document.createElement("textarea");
  area.value = text;
  area.rows = Math.min(8, text.split("\n").length + 1);
  area.setAttribute("aria-label", "Edit the question");
  const buttons = div("dialog-buttons");
  const cancelButton = button("Cancel", null, cancel, "secondary");
  const sendButton = button("Send", null, () => {
    const edited = area.value.trim();
    if (edited) send(edited);
  }, "resend");
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendButton.click();
    } else if (event.key === "Escape") {
      cancel();
    }
  });
  buttons.append(cancelButton, sendButton);
  box.append(area, buttons);
  return box;
}
