// @ts-check
// How messages look: the question, the answer (Markdown, the thinking state, stats, notes,
// sources) and the per-message actions, which emit what the user asked for.

import { copyButton } from "./copy.js";
import { button, el } from "./dom.js";
import { emit } from "./events.js";
import { renderMarkdown } from "./markdown.js";
import { formatScore } from "./store.js";

/** @typedef {import("./store.js").Message} Message */
/** @typedef {import("./store.js").Source} Source */

/**
 * @param {string} className
 * @param {string} [text]
 */
function div(className, text) {
  return el("div", text === undefined ? { className } : { className, textContent: text });
}

/** @param {Source} source */
function sourceItem(source) {
  const head = div("source-head");
  head.append(
    el("span", { className: "source-file", textContent: source.file }),
    el("span", { className: "source-chunk", textContent: `chunk ${source.chunk + 1}` }), // the server counts from 0
    el("span", {
      className: "source-score",
      title: "relevance score (higher is closer)",
      textContent: `relevance ${formatScore(source.score)}`,
    }),
  );
  const summary = el("summary", { textContent: "Show the full chunk" });
  const details = el("details", {}, summary, el("p", { className: "source-text", textContent: source.text }));
  details.addEventListener("toggle", () => {
    summary.textContent = details.open ? "Hide the chunk" : "Show the full chunk";
  });
  const preview = el("p", { className: "source-preview", textContent: source.text });
  return el("li", { className: "source" }, head, preview, details);
}

/** @param {Source[]} sources */
export function sourcesBlock(sources) {
  return el("section", { className: "sources" }, el("h3", { textContent: "Sources" }),
    el("ol", {}, ...sources.map(sourceItem)));
}

/** @param {Message} message */
function statsLine(message) {
  const stats = message.stats || { ttft_s: null, tokens_per_s: null };
  const tokens = message.usage?.completion_tokens ?? 0;
  const ttft = typeof stats.ttft_s === "number" ? `${stats.ttft_s.toFixed(2)} s` : "–";
  const rate = typeof stats.tokens_per_s === "number" ? stats.tokens_per_s.toFixed(1) : "–";
  return `time to first token ${ttft} · ${rate} tokens/s · ${tokens} tokens · ${message.finish_reason}`;
}

/**
 * A question; the last one offers Edit (edit and resend).
 * @param {Message} message
 * @param {boolean} [editable]
 */
export function userElement(message, editable = false) {
  const element = div("message user");
  element.append(div("body", message.content));
  if (editable) {
    const edit = button({ text: "Edit", icon: "edit", className: "edit", onClick: () => emit("question-edit", element) });
    element.append(el("div", { className: "message-actions" }, edit));
  }
  return element;
}

/**
 * The answer's body, in full (a streaming answer draws its body with StreamedMarkdown instead).
 * @param {HTMLElement} body
 * @param {Message} message
 */
function renderAnswerBody(body, message) {
  if (message.pending && !message.content) body.replaceChildren(el("span", { className: "thinking", textContent: "Thinking…" }));
  else renderMarkdown(body, message.content, !message.pending);
}

/**
 * An answer; the last one offers Regenerate.
 * @param {Message} message
 * @param {boolean} [regenerable]
 */
export function assistantElement(message, regenerable = false) {
  const element = div("message assistant");
  if (message.model) element.append(div("speaker", message.model));
  const body = div("body");
  element.append(body);
  renderAnswerBody(body, message);
  if (message.pending) {
    element.ariaBusy = "true"; // announced once complete, not per token
    return element;
  }
  if (message.stopped) element.append(div("note", "Stopped."));
  if (message.interrupted) element.append(div("note", "The page was closed before this answer finished."));
  if (message.error) element.append(div("note", message.error));
  if (message.sources?.length) element.append(sourcesBlock(message.sources));
  if (message.finish_reason) element.append(div("stats", statsLine(message)));
  const row = div("message-actions");
  if (message.content) row.append(copyButton(() => message.content, "copy-answer"));
  if (regenerable) {
    row.append(button({ text: "Regenerate", icon: "redo", className: "regenerate", onClick: () => emit("answer-regenerate") }));
  }
  if (row.childElementCount) element.append(row);
  return element;
}

/** @param {HTMLElement} answer an assistant message element */
export function answerBody(answer) {
  return /** @type {HTMLElement} */ (answer.querySelector(".body"));
}

/**
 * Edit and resend: the question in a text box; emits question-resend or question-edit-cancel.
 * @param {string} text
 */
export function editBox(text) {
  const area = el("textarea", { value: text, rows: Math.min(8, text.split("\n").length + 1), ariaLabel: "Edit the question" });
  const cancel = button({ text: "Cancel", className: "secondary", onClick: () => emit("question-edit-cancel") });
  const send = button({
    text: "Send",
    className: "resend",
    onClick: () => {
      const edited = area.value.trim();
      if (edited) emit("question-resend", edited);
    },
  });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send.click();
    } else if (event.key === "Escape") {
      emit("question-edit-cancel");
    }
  });
  return el("div", { className: "edit-box" }, area, el("div", { className: "dialog-buttons" }, cancel, send));
}
