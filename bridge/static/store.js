// @ts-check
// Conversations kept in this browser (localStorage): one entry per conversation plus an index,
// so opening the list does not parse every conversation. Also their exports (Markdown, JSON).

import { el } from "./dom.js";

/**
 * A retrieved chunk an answer used (the server's `sources`).
 * @typedef {{file: string, chunk: number, score: number, text: string}} Source
 */

/**
 * A question (role "user": only content) or an answer (role "assistant": the rest, as it arrives).
 * @typedef {object} Message
 * @property {"user" | "assistant"} role
 * @property {string} content
 * @property {string} [model]
 * @property {boolean} [pending] still streaming
 * @property {boolean} [stopped] stopped by the user
 * @property {boolean} [interrupted] the page closed while it streamed
 * @property {string} [error]
 * @property {string} [finish_reason]
 * @property {{prompt_tokens?: number, completion_tokens?: number}} [usage]
 * @property {object} [timings]
 * @property {Source[]} [sources]
 * @property {{ttft_s: number | null, tokens_per_s: number | null}} [stats] measured by the page
 */

/**
 * An empty title means "named after the first question"; times are milliseconds since the epoch.
 * @typedef {{id: string, title: string, created: number, updated: number, messages: Message[]}} Conversation
 */

/** @typedef {{id: string, title: string, updated: number}} ConversationEntry */

const INDEX_KEY = "chatllm.conversations";
const ENTRY_PREFIX = "chatllm.conversation.";
const ACTIVE_KEY = "chatllm.active-conversation";
const TITLE_CHARS = 60;

/**
 * @template T
 * @param {string} key
 * @param {T} fallback
 * @returns {T}
 */
function readJson(key, fallback) {
  try {
    const value = localStorage.getItem(key);
    return value === null ? fallback : JSON.parse(value);
  } catch {
    return fallback; // unreadable entry or storage disabled
  }
}

/** @returns {Conversation} */
export function newConversation() {
  const now = Date.now();
  const id = crypto.randomUUID ? crypto.randomUUID() : `${now}-${Math.random().toString(36).slice(2)}`;
  return { id, title: "", created: now, updated: now, messages: [] };
}

/** @param {Conversation} conversation */
export function titleOf(conversation) {
  if (conversation.title) return conversation.title;
  const first = conversation.messages.find((m) => m.role === "user");
  if (!first) return "New conversation";
  const line = first.content.replace(/\s+/g, " ").trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1)}…` : line;
}

/** @returns {ConversationEntry[]} most recently used first */
export function listConversations() {
  const index = readJson(INDEX_KEY, /** @type {ConversationEntry[]} */ ([]));
  return Array.isArray(index) ? index.sort((a, b) => b.updated - a.updated) : [];
}

/**
 * @param {string} id
 * @returns {Conversation | null}
 */
export function loadConversation(id) {
  const conversation = readJson(ENTRY_PREFIX + id, /** @type {Conversation | null} */ (null));
  return conversation && Array.isArray(conversation.messages) ? conversation : null;
}

/**
 * Saves the conversation; returns false when the browser refused (storage full or disabled).
 * @param {Conversation} conversation
 * @param {boolean} [touch] whether it counts as used now
 */
export function saveConversation(conversation, touch = true) {
  if (touch) conversation.updated = Date.now();
  try {
    localStorage.setItem(ENTRY_PREFIX + conversation.id, JSON.stringify(conversation));
    const index = listConversations().filter((entry) => entry.id !== conversation.id);
    index.push({ id: conversation.id, title: titleOf(conversation), updated: conversation.updated });
    localStorage.setItem(INDEX_KEY, JSON.stringify(index));
    return true;
  } catch {
    return false;
  }
}

/** @param {string} id */
export function deleteConversation(id) {
  try {
    localStorage.removeItem(ENTRY_PREFIX + id);
    const index = listConversations().filter((entry) => entry.id !== id);
    localStorage.setItem(INDEX_KEY, JSON.stringify(index));
    if (activeConversationId() === id) localStorage.removeItem(ACTIVE_KEY);
  } catch {
    // storage disabled: nothing was stored
  }
}

export function activeConversationId() {
  try {
    return localStorage.getItem(ACTIVE_KEY);
  } catch {
    return null;
  }
}

/** @param {string | null} id */
export function setActiveConversationId(id) {
  try {
    if (id) localStorage.setItem(ACTIVE_KEY, id);
    else localStorage.removeItem(ACTIVE_KEY);
  } catch {
    // not remembered across reloads
  }
}

/**
 * The [question, answer] rounds the server needs as history: every answered round, a stopped
 * answer with what it had so far, never a failed one.
 * @param {Message[]} messages
 */
export function historyOf(messages) {
  /** @type {[string, string][]} */
  const rounds = [];
  for (let i = 0; i + 1 < messages.length; i++) {
    const [question, answer] = [messages[i], messages[i + 1]];
    if (question.role !== "user" || answer.role !== "assistant") continue;
    if (answer.error || answer.pending || !answer.content) continue;
    rounds.push([question.content, answer.content]);
  }
  return rounds;
}

/** @param {number | undefined} score */
export function formatScore(score) {
  return typeof score === "number" ? String(Number(score.toPrecision(3))) : "–";
}

/**
 * @param {Source} source
 * @param {number} index
 */
function sourceLine(source, index) {
  return `${index + 1}. ${source.file}, chunk ${source.chunk + 1}, relevance ${formatScore(source.score)}`;
}

/** @param {Conversation} conversation */
export function toMarkdown(conversation) {
  const lines = [`# ${titleOf(conversation)}`, "", `_Exported from ChatLLM on ${new Date().toISOString()}_`, ""];
  for (const message of conversation.messages) {
    if (message.role === "user") {
      lines.push("## You", "", message.content, "");
      continue;
    }
    lines.push(`## Assistant${message.model ? ` (${message.model})` : ""}`, "", message.content || "", "");
    if (message.stopped) lines.push("_(stopped)_", "");
    if (message.error) lines.push(`_Error: ${message.error}_`, "");
    if (message.sources?.length) lines.push("Sources:", "", ...message.sources.map(sourceLine), "");
  }
  return lines.join("\n");
}

/** @param {Conversation} conversation */
export function toJson(conversation) {
  const messages = conversation.messages.map((message) => {
    const { pending, ...kept } = message; // page-internal state
    return kept;
  });
  const exported = {
    id: conversation.id,
    title: titleOf(conversation),
    created: new Date(conversation.created).toISOString(),
    updated: new Date(conversation.updated).toISOString(),
    messages,
  };
  return JSON.stringify(exported, null, 2);
}

/**
 * @param {Conversation} conversation
 * @param {string} extension
 */
export function fileNameFor(conversation, extension) {
  const slug = titleOf(conversation)
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 50);
  return `${slug || "conversation"}.${extension}`;
}

/**
 * Saves the conversation as a file (Markdown or JSON) through the browser's downloads.
 * @param {Conversation} conversation
 * @param {"md" | "json"} format
 */
export function download(conversation, format) {
  const text = format === "md" ? toMarkdown(conversation) : toJson(conversation);
  const type = format === "md" ? "text/markdown" : "application/json";
  const link = el("a", {
    href: URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` })),
    download: fileNameFor(conversation, format),
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}
