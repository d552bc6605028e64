// Conversations kept in this browser (localStorage): one entry per conversation plus an index,
// so opening the list does not parse every conversation. Also their exports (Markdown, JSON).
//
// A conversation: {id, title, created, updated, messages}. A message is {role: "user", content}
// or {role: "assistant", content, model, pending, stopped, error, finish_reason, usage, timings,
// sources, stats}. An empty title means "named after the first question".

const INDEX_KEY = "chatllm.conversations";
const ENTRY_PREFIX = "chatllm.conversation.";
const ACTIVE_KEY = "chatllm.active-conversation";
const TITLE_CHARS = 60;

function readJson(key, fallback) {
  try {
    const value = localStorage.getItem(key);
    return value === null ? fallback : JSON.parse(value);
  } catch {
    return fallback; // unreadable entry or storage disabled
  }
}

export function newConversation() {
  const now = Date.now();
  const id = crypto.randomUUID ? crypto.randomUUID() : `${now}-${Math.random().toString(36).slice(2)}`;
  return { id, title: "", created: now, updated: now, messages: [] };
}

export function titleOf(conversation) {
  if (conversation.title) return conversation.title;
  const first = conversation.messages.find((m) => m.role === "user");
  if (!first) return "New conversation";
  const line = first.content.replace(/\s+/g, " ").trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1)}…` : line;
}

/** [{id, title, updated}], most recently used first. */
export function listConversations() {
  const index = readJson(INDEX_KEY, []);
  return Array.isArray(index) ? index.sort((a, b) => b.updated - a.updated) : [];
}

export function loadConversation(id) {
  const conversation = readJson(ENTRY_PREFIX + id, null);
  return conversation && Array.isArray(conversation.messages) ? conversation : null;
}

/** Saves the conversation; returns false when the browser refused (storage full or disabled). */
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

export function setActiveConversationId(id) {
  try {
    if (id) localStorage.setItem(ACTIVE_KEY, id);
    else localStorage.removeItem(ACTIVE_KEY);
  } catch {
    // not remembered across reloads
  }
}

/** The [question, answer] rounds the server needs as history: every answered round, a stopped
 * answer with what it had so far, never a failed one. */
export function historyOf(messages) {
  const rounds = [];
  for (let i = 0; i + 1 < messages.length; i++) {
    const [question, answer] = [messages[i], messages[i + 1]];
    if (question.role !== "user" || answer.role !== "assistant") continue;
    if (answer.error || answer.pending || !answer.content) continue;
    rounds.push([question.content, answer.content]);
  }
  return rounds;
}

export function formatScore(score) {
  return typeof score === "number" ? String(Number(score.toPrecision(3))) : "–";
}

function sourceLine(source, index) {
  return `${index + 1}. ${source.file}, chunk ${source.chunk + 1}, relevance ${formatScore(source.score)}`;
}

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

export function fileNameFor(conversation, extension) {
  const slug = titleOf(conversation)
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 50);
  return `${slug || "conversation"}.${extension}`;
}

/** Saves the conversation as a file (Markdown or JSON) through the browser's downloads. */
export function download(conversation, format) {
  const text = format === "md" ? toMarkdown(conversation) : toJson(conversation);
  const type = format === "md" ? "text/markdown" : "application/json";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  link.download = fileNameFor(conversation, format);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}
