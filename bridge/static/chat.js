// The chat tab: the open conversation, streaming answers over the page's socket (the legacy
// WebSocket protocol with `stream_format: "events"`), Stop, regenerate, edit and resend, the
// start screen, and the conversation list.

import { describe, showBanner } from "./api.js";
import { assistantElement, editBox, renderAnswerBody, userElement } from "./messages.js";
import { chosenModel, closeDrawers, requestSettings } from "./settings.js";
import { renderSidebar } from "./sidebar.js";
import { dropWaitingFrame, restartSocket, sendFrame, startConnection } from "./socket.js";
import * as store from "./store.js";

const EOS = "<EOS>";
const STICK_PX = 80; // follow a streaming answer while the reader is this close to the bottom
const $ = (id) => document.getElementById(id);
const EXAMPLES = [
  "Explain what a knowledge base adds to a chat model, in three sentences.",
  "Write a Python function that checks whether a number is prime.",
  "Give me a one-week study plan for learning SQL.",
  "Summarise the plot of Hamlet for a ten-year-old.",
];

const chat = {
  conversation: store.newConversation(),
  current: null, // {message, element, sentAt, firstAt, renderQueued}
};

function saveConversation() {
  if (!chat.conversation.messages.length) return;
  if (!store.saveConversation(chat.conversation)) {
    showBanner("This browser refused to store the conversation (storage full or disabled): export it to keep it.");
  }
  store.setActiveConversationId(chat.conversation.id);
  refreshSidebar();
}

function nearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < STICK_PX;
}

// Scrolls the message list only: scrollIntoView would also scroll the page and push the
// composer off a phone's screen.
function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function showStartScreen(empty) {
  $("start-screen").hidden = !empty;
  $("messages").hidden = empty;
}

function renderHeader() {
  $("conversation-title").textContent = store.titleOf(chat.conversation);
}

// Only the last question can be edited and only the last answer regenerated.
function messageElement(message, index) {
  const messages = chat.conversation.messages;
  const last = index === messages.length - 1;
  if (message.role === "user") {
    const lastQuestion = index >= messages.length - 2 && messages.findLastIndex((m) => m.role === "user") === index;
    return userElement(message, lastQuestion && !chat.current ? { edit: startEdit } : {});
  }
  return assistantElement(message, last && !chat.current ? { regenerate } : {});
}

function renderConversation() {
  const messages = chat.conversation.messages;
  $("messages").replaceChildren(...messages.map(messageElement));
  showStartScreen(messages.length === 0);
  renderHeader();
  scrollToBottom();
}

function refreshSidebar() {
  renderSidebar(chat.conversation.id, {
    open: openConversation,
    rename: renameConversation,
    remove: deleteConversation,
    exportAs: exportConversation,
    refresh: refreshSidebar,
  });
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
  const message = current.message;
  if (event.error) {
    message.error = describe(event.error.status, event.error.message);
  } else if (typeof event.delta === "string") {
    if (current.firstAt === null && event.delta) current.firstAt = performance.now();
    message.content += event.delta;
    scheduleRender(current);
  } else if (event.final) {
    const { finish_reason, usage, timings, sources } = event.final;
    Object.assign(message, { finish_reason, usage, timings, sources: sources || [] });
  }
}

function scheduleRender(current) {
  if (current.renderQueued) return;
  current.renderQueued = true;
  requestAnimationFrame(() => {
    current.renderQueued = false;
    if (chat.current !== current) return;
    const follow = nearBottom();
    renderAnswerBody(current.element, current.message);
    if (follow) scrollToBottom();
  });
}

function statsOf(current) {
  const tokens = current.message.usage?.completion_tokens ?? 0;
  if (current.firstAt === null) return { ttft_s: null, tokens_per_s: null };
  const seconds = (performance.now() - current.firstAt) / 1000;
  return {
    ttft_s: (current.firstAt - current.sentAt) / 1000,
    tokens_per_s: seconds > 0 && tokens > 1 ? (tokens - 1) / seconds : null,
  };
}

// Ends the answer in progress (done, failed or stopped): drawn in full, saved, the composer back.
function endCurrent(changes) {
  const current = chat.current;
  chat.current = null;
  Object.assign(current.message, { pending: false, stats: statsOf(current) }, changes);
  if (!current.message.model) current.message.model = chosenModel(); // asked before the server's info came
  const follow = nearBottom();
  const messages = $("messages");
  // Redraw the last question too: its Edit button comes back.
  const index = chat.conversation.messages.length - 2;
  if (index >= 0 && messages.children.length >= 2) {
    messages.children[messages.children.length - 2].replaceWith(messageElement(chat.conversation.messages[index], index));
  }
  const element = messageElement(current.message, chat.conversation.messages.length - 1);
  current.element.replaceWith(element);
  setBusy(false);
  saveConversation();
  if (follow || changes.stopped) scrollToBottom();
}

function finishCurrent() {
  endCurrent({});
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

function buildFrame(prompt, history) {
  return JSON.stringify({
    prompt,
    history,
    ...requestSettings(),
    use_stream_chat: true,
    stream_format: "events",
  });
}

function ask(prompt) {
  const messages = chat.conversation.messages;
  const history = store.historyOf(messages);
  const question = { role: "user", content: prompt };
  const answer = { role: "assistant", content: "", model: chosenModel(), pending: true };
  // Only the last question and answer offer Edit and Regenerate.
  for (const button of $("messages").querySelectorAll(".message-actions .edit, .message-actions .regenerate")) {
    const row = button.parentElement;
    button.remove();
    if (!row.childElementCount) row.remove();
  }
  messages.push(question, answer);
  const element = assistantElement(answer);
  $("messages").append(userElement(question), element);
  showStartScreen(false);
  renderHeader();
  scrollToBottom();
  chat.current = { message: answer, element, sentAt: performance.now(), firstAt: null, renderQueued: false };
  setBusy(true);
  saveConversation();
  sendFrame(buildFrame(prompt, history));
}

function send() {
  const prompt = $("prompt").value.trim();
  if (!prompt || chat.current) return;
  $("prompt").value = "";
  fitPrompt();
  ask(prompt);
}

// Closing the socket cancels the answer's gRPC call (and so the engine request). The partial
// answer stays, in the conversation and in the history the next question sends.
function stop() {
  if (!chat.current) return;
  dropWaitingFrame();
  endCurrent({ stopped: true });
  restartSocket();
}

// Removes the last question and its answer, then asks `prompt` in their place.
function askAgain(prompt) {
  if (chat.current) return;
  const messages = chat.conversation.messages;
  if (messages.at(-1)?.role === "assistant") messages.pop();
  if (messages.at(-1)?.role === "user") messages.pop();
  renderConversation();
  ask(prompt);
}

function regenerate() {
  const question = chat.conversation.messages.findLast((m) => m.role === "user");
  if (question) askAgain(question.content);
}

function startEdit(element) {
  if (chat.current) return;
  const question = chat.conversation.messages.findLast((m) => m.role === "user");
  element.replaceChildren(editBox(question.content, askAgain, renderConversation));
  element.querySelector("textarea").focus();
}

function openConversation(id) {
  if (chat.current) stop();
  const conversation = store.loadConversation(id);
  if (!conversation) {
    refreshSidebar();
    return;
  }
  // An answer that was streaming when the page closed cannot be resumed.
  for (const message of conversation.messages) {
    if (message.pending) Object.assign(message, { pending: false, interrupted: true });
  }
  chat.conversation = conversation;
  store.setActiveConversationId(id);
  renderConversation();
  refreshSidebar();
  closeDrawers();
}

function newConversation() {
  if (chat.current) stop();
  chat.conversation = store.newConversation();
  store.setActiveConversationId(null);
  renderConversation();
  refreshSidebar();
  closeDrawers();
  $("prompt").focus();
}

function renameConversation(id, title) {
  const conversation = id === chat.conversation.id ? chat.conversation : store.loadConversation(id);
  if (!conversation) return;
  conversation.title = title;
  store.saveConversation(conversation, false);
  renderHeader();
  refreshSidebar();
}

function deleteConversation(id) {
  const conversation = id === chat.conversation.id ? chat.conversation : store.loadConversation(id);
  if (!conversation || !window.confirm(`Delete “${store.titleOf(conversation)}”? This cannot be undone.`)) return;
  store.deleteConversation(id);
  if (id === chat.conversation.id) newConversation();
  else refreshSidebar();
}

function exportConversation(id, format) {
  const conversation = id === chat.conversation.id ? chat.conversation : store.loadConversation(id);
  if (conversation) store.download(conversation, format);
}

// The input grows with its text; CSS caps it (max-height), then it scrolls.
function fitPrompt() {
  const prompt = $("prompt");
  prompt.style.height = "auto";
  prompt.style.height = `${prompt.scrollHeight}px`;
}

/** The start screen names the model that will answer and offers a few example prompts. */
export function showModel(model, detail) {
  $("start-title").textContent = model ? `Chat with ${model}` : "Chat with the model";
  $("start-detail").textContent = detail;
}

function renderExamples() {
  $("examples").replaceChildren(
    ...EXAMPLES.map((text) => {
      const example = document.createElement("button");
      example.type = "button";
      example.className = "example";
      example.textContent = text;
      example.addEventListener("click", () => {
        $("prompt").value = text;
        send();
      });
      return example;
    }),
  );
}

export function initChat(prepare) {
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
  $("prompt").addEventListener("input", fitPrompt);
  // The long hint wraps on a phone: a short one there.
  const narrow = window.matchMedia("(max-width: 600px)");
  const hint = () => {
    $("prompt").placeholder = narrow.matches ? "Ask something…" : "Ask something… (Enter sends, Shift+Enter adds a line)";
    fitPrompt();
  };
  narrow.addEventListener("change", hint);
  hint();
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newConversation);
  renderExamples();
  const saved = store.activeConversationId();
  if (saved && store.loadConversation(saved)) openConversation(saved);
  else renderConversation();
  refreshSidebar();
  startConnection({
    prepare,
    onFrame,
    onLost: () => {
      if (chat.current) endCurrent({ error: "Connection lost while answering." });
    },
  });
}
