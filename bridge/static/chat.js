// @ts-check
// The chat tab: the open conversation, streaming answers over the page's socket (the legacy
// WebSocket protocol with `stream_format: "events"`), Stop, regenerate, edit and resend, and what
// the conversation list asks for (open, new, rename, delete, export).

import { describe, showBanner } from "./api.js";
import { focusPrompt, setBusy } from "./composer.js";
import { byId } from "./dom.js";
import { on } from "./events.js";
import { StreamedMarkdown } from "./markdown.js";
import { answerBody, assistantElement, editBox, userElement } from "./messages.js";
import { chosenModel, closeDrawers, requestSettings } from "./settings.js";
import { renderSidebar } from "./sidebar.js";
import { dropWaitingFrame, restartSocket, sendFrame } from "./socket.js";
import * as store from "./store.js";

/** @typedef {import("./store.js").Message} Message */
/** @typedef {import("./store.js").Source} Source */

/**
 * The answer being streamed: its message, its element, how its body is drawn, and its timing.
 * @typedef {{message: Message, element: HTMLElement, view: StreamedMarkdown | null, sentAt: number,
 *   firstAt: number | null, renderQueued: boolean}} Answering
 */

/**
 * One frame of an answer (the "events" stream format).
 * @typedef {{delta?: string, error?: {status: number, message: string}, final?: {finish_reason: string,
 *   usage: Message["usage"], timings: object, sources?: Source[]}}} AnswerEvent
 */

const EOS = "<EOS>";
const STICK_PX = 80; // follow a streaming answer while the reader is this close to the bottom

const chat = {
  conversation: store.newConversation(),
  /** @type {Answering | null} */
  current: null,
};

const messagesBox = () => byId("messages");

function saveConversation() {
  if (!chat.conversation.messages.length) return;
  if (!store.saveConversation(chat.conversation)) {
    showBanner("This browser refused to store the conversation (storage full or disabled): export it to keep it.");
  }
  store.setActiveConversationId(chat.conversation.id);
  renderSidebar(chat.conversation.id);
}

function nearBottom() {
  const box = messagesBox();
  return box.scrollHeight - box.scrollTop - box.clientHeight < STICK_PX;
}

// Scrolls the message list only: scrollIntoView would also scroll the page and push the
// composer off a phone's screen.
function scrollToBottom() {
  const box = messagesBox();
  box.scrollTop = box.scrollHeight;
}

/** @param {boolean} empty */
function showStartScreen(empty) {
  byId("start-screen").hidden = !empty;
  messagesBox().hidden = empty;
}

function renderHeader() {
  byId("conversation-title").textContent = store.titleOf(chat.conversation);
}

/**
 * Only the last question can be edited and only the last answer regenerated.
 * @param {Message} message
 * @param {number} index
 */
function messageElement(message, index) {
  const messages = chat.conversation.messages;
  if (message.role === "user") {
    const lastQuestion = index >= messages.length - 2 && messages.findLastIndex((m) => m.role === "user") === index;
    return userElement(message, lastQuestion && !chat.current);
  }
  return assistantElement(message, index === messages.length - 1 && !chat.current);
}

function renderConversation() {
  const messages = chat.conversation.messages;
  messagesBox().replaceChildren(...messages.map(messageElement));
  showStartScreen(messages.length === 0);
  renderHeader();
  scrollToBottom();
}

/** @param {string} data a socket frame */
function onFrame(data) {
  const current = chat.current;
  if (!current) return;
  if (data === EOS) {
    endCurrent({});
    return;
  }
  /** @type {AnswerEvent} */
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

/**
 * Draws the answer at most once per animation frame, however many deltas came.
 * @param {Answering} current
 */
function scheduleRender(current) {
  if (current.renderQueued) return;
  current.renderQueued = true;
  requestAnimationFrame(() => {
    current.renderQueued = false;
    if (chat.current !== current || !current.message.content) return;
    const follow = nearBottom();
    current.view ??= new StreamedMarkdown(answerBody(current.element));
    current.view.update(current.message.content);
    if (follow) scrollToBottom();
  });
}

/** @param {Answering} current */
function statsOf(current) {
  const tokens = current.message.usage?.completion_tokens ?? 0;
  if (current.firstAt === null) return { ttft_s: null, tokens_per_s: null };
  const seconds = (performance.now() - current.firstAt) / 1000;
  return {
    ttft_s: (current.firstAt - current.sentAt) / 1000,
    tokens_per_s: seconds > 0 && tokens > 1 ? (tokens - 1) / seconds : null,
  };
}

/**
 * Ends the answer in progress (done, failed or stopped): drawn in full, saved, the composer back.
 * @param {Partial<Message>} changes
 */
function endCurrent(changes) {
  const current = chat.current;
  if (!current) return;
  chat.current = null;
  Object.assign(current.message, { pending: false, stats: statsOf(current) }, changes);
  if (!current.message.model) current.message.model = chosenModel(); // asked before the server's info came
  const follow = nearBottom();
  const messages = messagesBox();
  // Redraw the last question too: its Edit button comes back.
  const index = chat.conversation.messages.length - 2;
  if (index >= 0 && messages.children.length >= 2) {
    messages.children[messages.children.length - 2].replaceWith(messageElement(chat.conversation.messages[index], index));
  }
  current.element.replaceWith(messageElement(current.message, chat.conversation.messages.length - 1));
  setBusy(false);
  saveConversation();
  if (follow || changes.stopped) scrollToBottom();
}

/**
 * @param {string} prompt
 * @param {[string, string][]} history
 */
function buildFrame(prompt, history) {
  return JSON.stringify({ prompt, history, ...requestSettings(), use_stream_chat: true, stream_format: "events" });
}

/** @param {string} prompt */
function ask(prompt) {
  if (chat.current) return;
  const messages = chat.conversation.messages;
  const history = store.historyOf(messages);
  /** @type {Message} */
  const question = { role: "user", content: prompt };
  /** @type {Message} */
  const answer = { role: "assistant", content: "", model: chosenModel(), pending: true };
  // Only the last question and answer offer Edit and Regenerate.
  for (const action of messagesBox().querySelectorAll(".message-actions .edit, .message-actions .regenerate")) {
    const row = /** @type {HTMLElement} */ (action.parentElement);
    action.remove();
    if (!row.childElementCount) row.remove();
  }
  messages.push(question, answer);
  const element = assistantElement(answer);
  messagesBox().append(userElement(question), element);
  showStartScreen(false);
  renderHeader();
  scrollToBottom();
  chat.current = { message: answer, element, view: null, sentAt: performance.now(), firstAt: null, renderQueued: false };
  setBusy(true);
  saveConversation();
  sendFrame(buildFrame(prompt, history));
}

// Closing the socket cancels the answer's gRPC call (and so the engine request). The partial
// answer stays, in the conversation and in the history the next question sends.
function stop() {
  if (!chat.current) return;
  dropWaitingFrame();
  endCurrent({ stopped: true });
  restartSocket();
}

/**
 * Removes the last question and its answer, then asks `prompt` in their place.
 * @param {string} prompt
 */
function askAgain(prompt) {
  if (chat.current) return;
  const messages = chat.conversation.messages;
  if (messages.at(-1)?.role === "assistant") messages.pop();
  if (messages.at(-1)?.role === "user") messages.pop();
  renderConversation();
  ask(prompt);
}

function lastQuestion() {
  return chat.conversation.messages.findLast((m) => m.role === "user");
}

function regenerate() {
  const question = lastQuestion();
  if (question) askAgain(question.content);
}

/** @param {HTMLElement} element the last question's */
function startEdit(element) {
  const question = lastQuestion();
  if (chat.current || !question) return;
  element.replaceChildren(editBox(question.content));
  element.querySelector("textarea")?.focus();
}

/** @param {string} id */
function openConversation(id) {
  if (chat.current) stop();
  const conversation = store.loadConversation(id);
  if (!conversation) {
    renderSidebar(chat.conversation.id);
    return;
  }
  // An answer that was streaming when the page closed cannot be resumed.
  for (const message of conversation.messages) {
    if (message.pending) Object.assign(message, { pending: false, interrupted: true });
  }
  chat.conversation = conversation;
  store.setActiveConversationId(id);
  renderConversation();
  renderSidebar(id);
  closeDrawers();
}

function newConversation() {
  if (chat.current) stop();
  chat.conversation = store.newConversation();
  store.setActiveConversationId(null);
  renderConversation();
  renderSidebar(chat.conversation.id);
  closeDrawers();
  focusPrompt();
}

/** @param {string} id */
function conversationById(id) {
  return id === chat.conversation.id ? chat.conversation : store.loadConversation(id);
}

/** @param {{id: string, title: string}} rename */
function renameConversation({ id, title }) {
  const conversation = conversationById(id);
  if (!conversation) return;
  conversation.title = title;
  store.saveConversation(conversation, false);
  renderHeader();
  renderSidebar(chat.conversation.id);
}

/** @param {string} id */
function deleteConversation(id) {
  const conversation = conversationById(id);
  if (!conversation || !window.confirm(`Delete “${store.titleOf(conversation)}”? This cannot be undone.`)) return;
  store.deleteConversation(id);
  if (id === chat.conversation.id) newConversation();
  else renderSidebar(chat.conversation.id);
}

/** @param {{id: string, format: "md" | "json"}} request */
function exportConversation({ id, format }) {
  const conversation = conversationById(id);
  if (conversation) store.download(conversation, format);
}

/** Wires the chat tab and reopens the conversation that was open; the socket is started apart. */
export function initChat() {
  on("question-send", ask);
  on("answer-stop", stop);
  on("socket-frame", onFrame);
  on("socket-lost", () => endCurrent({ error: "Connection lost while answering." }));
  on("conversation-new", newConversation);
  on("conversation-open", openConversation);
  on("conversation-rename", renameConversation);
  on("conversation-delete", deleteConversation);
  on("conversation-export", exportConversation);
  on("question-edit", startEdit);
  on("question-resend", askAgain);
  on("question-edit-cancel", renderConversation);
  on("answer-regenerate", regenerate);
  const saved = store.activeConversationId();
  if (saved && store.loadConversation(saved)) openConversation(saved);
  else renderConversation();
  renderSidebar(chat.conversation.id);
}
