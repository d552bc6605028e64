// The chat tab: one WebSocket on api/chat (the legacy protocol with `stream_format: "events"`),
// streaming answers, Stop (closes the socket, which cancels the answer server-side),
// automatic reconnect, Markdown rendered through DOMPurify.

import { api, auth, describe, showBanner, wsUrl } from "./api.js";

const EOS = "<EOS>";
const $ = (id) => document.getElementById(id);

const chat = {
  ws: null,
  history: [], // completed [question, answer] pairs, sent with every prompt
  current: null, // the answer being streamed
  reconnectDelay: 500,
  reconnectTimer: null,
  pending: null, // a prompt waiting for the socket to open
};

// Model output is untrusted: Markdown is rendered, then only formatting tags survive
// (no images, media, forms or styles: nothing that runs or fetches anything).
const ALLOWED_TAGS = ["p", "br", "hr", "strong", "em", "b", "i", "del", "code", "pre", "blockquote", "ul", "ol",
  "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a", "span"];

function renderMarkdown(element, text) {
  const html = window.marked.parse(text, { gfm: true, breaks: true });
  element.innerHTML = window.DOMPurify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR: ["href", "title"] });
  for (const link of element.querySelectorAll("a")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "body";
  if (role === "user") body.textContent = text;
  div.append(body);
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

function setConnection(state, text) {
  const el = $("conn-status");
  el.className = `conn ${state}`;
  el.textContent = text;
}

function connect() {
  clearTimeout(chat.reconnectTimer);
  auth.setCookie();
  const ws = new WebSocket(wsUrl("api/chat"));
  chat.ws = ws;
  setConnection("", "connecting…");
  ws.onopen = () => {
    chat.reconnectDelay = 500;
    setConnection("ok", "connected");
    showBanner("");
    if (chat.pending) {
      ws.send(chat.pending);
      chat.pending = null;
    }
  };
  ws.onmessage = (event) => onFrame(event.data);
  ws.onclose = () => onClose(ws);
}

function onClose(ws) {
  if (ws !== chat.ws) return; // an old socket we replaced on purpose (Stop)
  chat.ws = null;
  if (chat.current) failCurrent("Connection lost while answering.");
  const seconds = Math.round(chat.reconnectDelay / 100) / 10;
  setConnection("down", "disconnected");
  showBanner(`Connection to the server lost — reconnecting in ${seconds}s…`);
  chat.reconnectTimer = setTimeout(reconnect, chat.reconnectDelay);
  chat.reconnectDelay = Math.min(chat.reconnectDelay * 2, 10000);
}

// A refused handshake looks like any lost connection to the browser: ask the HTTP
// API first, which prompts for the token on a 401, then open the socket again.
async function reconnect() {
  try {
    await api("api/info");
  } catch (error) {
    showBanner(`${error.message} Retrying…`);
    chat.reconnectTimer = setTimeout(reconnect, chat.reconnectDelay);
    chat.reconnectDelay = Math.min(chat.reconnectDelay * 2, 10000);
    return;
  }
  connect();
}

function onFrame(data) {
  const current = chat.current;
  if (!current) return;
  if (data === EOS) {
    finishCurrent();
    return;
  }
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    event = { delta: data };
  }
  if (event.error) {
    current.error = describe(event.error.status, event.error.message);
  } else if (typeof event.delta === "string") {
    if (current.firstAt === null && event.delta) current.firstAt = performance.now();
    current.text += event.delta;
    scheduleRender(current);
  } else if (event.final) {
    current.final = event.final;
  }
}

function scheduleRender(current) {
  if (current.renderQueued) return;
  current.renderQueued = true;
  requestAnimationFrame(() => {
    current.renderQueued = false;
    renderMarkdown(current.body, current.text);
    current.element.scrollIntoView({ block: "end" });
  });
}

function finishCurrent() {
  const current = chat.current;
  chat.current = null;
  setBusy(false);
  renderMarkdown(current.body, current.text);
  if (current.error) {
    addNote(current.element, current.error);
    return;
  }
  chat.history.push([current.prompt, current.text]);
  const final = current.final;
  if (!final) return;
  const stats = document.createElement("div");
  stats.className = "stats";
  const tokens = final.usage?.completion_tokens ?? 0;
  const ttft = current.firstAt !== null ? (current.firstAt - current.sentAt) / 1000 : null;
  const genSeconds = current.firstAt !== null ? (performance.now() - current.firstAt) / 1000 : 0;
  const rate = genSeconds > 0 && tokens > 1 ? (tokens - 1) / genSeconds : null;
  stats.textContent =
    `time to first token ${ttft !== null ? ttft.toFixed(2) + " s" : "–"} · ` +
    `${rate !== null ? rate.toFixed(1) : "–"} tokens/s · ${tokens} tokens · ${final.finish_reason}`;
  current.element.append(stats);
  if (final.sources?.length) current.element.append(sourcesList(final.sources));
}

function sourcesList(sources) {
  const list = document.createElement("ol");
  list.className = "sources";
  for (const source of sources) {
    const item = document.createElement("li");
    const file = document.createElement("span");
    file.className = "file";
    file.textContent = `${source.file} #${source.chunk} · score ${Number(source.score).toFixed(2)}`;
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    snippet.textContent = ` — ${source.text.slice(0, 160)}${source.text.length > 160 ? "…" : ""}`;
    item.append(file, snippet);
    list.append(item);
  }
  return list;
}

function addNote(element, text) {
  const note = document.createElement("div");
  note.className = "note";
  note.textContent = text;
  element.append(note);
}

function failCurrent(text) {
  const current = chat.current;
  chat.current = null;
  setBusy(false);
  renderMarkdown(current.body, current.text);
  addNote(current.element, text);
}

function numberOrUndefined(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

function buildRequest(prompt) {
  const request = {
    prompt,
    history: chat.history,
    system_prompt: $("system-prompt").value,
    max_new_tokens: numberOrUndefined("max-new-tokens"),
    temperature: numberOrUndefined("temperature"),
    top_k: numberOrUndefined("top-k"),
    top_p: numberOrUndefined("top-p"),
    use_stream_chat: true,
    stream_format: "events",
  };
  if ($("use-kb").checked) {
    request.langchain = true;
    request.kb = $("chat-kb").value || "default";
  }
  return JSON.stringify(request);
}

function send() {
  const prompt = $("prompt").value.trim();
  if (!prompt || chat.current) return;
  $("prompt").value = "";
  addMessage("user", prompt);
  const element = addMessage("assistant", "");
  chat.current = {
    prompt, element, body: element.querySelector(".body"), text: "", final: null, error: null,
    sentAt: performance.now(), firstAt: null, renderQueued: false,
  };
  setBusy(true);
  const frame = buildRequest(prompt);
  if (chat.ws && chat.ws.readyState === WebSocket.OPEN) chat.ws.send(frame);
  else {
    chat.pending = frame;
    if (!chat.ws) connect();
  }
}

// Closing the socket cancels the answer's gRPC call (and so the engine request).
function stop() {
  if (!chat.current) return;
  const ws = chat.ws;
  chat.ws = null;
  failCurrent("Stopped.");
  if (ws) ws.close(1000, "stopped by the user");
  connect();
}

function newConversation() {
  if (chat.current) stop();
  chat.history = [];
  $("messages").replaceChildren();
}

export function setKnowledgeBases(names) {
  const select = $("chat-kb");
  const previous = select.value;
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.includes(previous)) select.value = previous;
}

export function initChat() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newConversation);
  connect();
}
