// @ts-check
// Where questions are written: the input (Enter sends, Shift+Enter adds a line, it grows with its
// text), Send and Stop, and the start screen (which model answers, example prompts). A question is
// told as question-send, Stop as answer-stop.

import { button, byId } from "./dom.js";
import { emit } from "./events.js";

const EXAMPLES = [
  "Explain what a knowledge base adds to a chat model, in three sentences.",
  "Write a Python function that checks whether a number is prime.",
  "Give me a one-week study plan for learning SQL.",
  "Summarise the plot of Hamlet for a ten-year-old.",
];
let busy = false; // an answer is streaming: Stop instead of Send

const promptBox = () => byId("prompt", HTMLTextAreaElement);

// The input grows with its text; CSS caps it (max-height), then it scrolls.
function fitPrompt() {
  const prompt = promptBox();
  prompt.style.height = "auto";
  prompt.style.height = `${prompt.scrollHeight}px`;
}

function send() {
  const prompt = promptBox().value.trim();
  if (!prompt || busy) return;
  promptBox().value = "";
  fitPrompt();
  emit("question-send", prompt);
}

/** @param {boolean} answering whether an answer is streaming */
export function setBusy(answering) {
  busy = answering;
  byId("send").hidden = answering;
  byId("stop").hidden = !answering;
}

export function focusPrompt() {
  promptBox().focus();
}

/**
 * The start screen names the model that will answer.
 * @param {string | undefined} model
 * @param {string} detail backend, device, context
 */
export function showModel(model, detail) {
  byId("start-title").textContent = model ? `Chat with ${model}` : "Chat with the model";
  byId("start-detail").textContent = detail;
}

function renderExamples() {
  /** @param {string} text */
  const askExample = (text) => {
    promptBox().value = text;
    send();
  };
  byId("examples").replaceChildren(
    ...EXAMPLES.map((text) => button({ text, className: "example", onClick: () => askExample(text) })),
  );
}

export function initComposer() {
  const prompt = promptBox();
  byId("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  prompt.addEventListener("input", fitPrompt);
  // The long hint wraps on a phone: a short one there.
  const narrow = window.matchMedia("(max-width: 600px)");
  const hint = () => {
    prompt.placeholder = narrow.matches ? "Ask something…" : "Ask something… (Enter sends, Shift+Enter adds a line)";
    fitPrompt();
  };
  narrow.addEventListener("change", hint);
  hint();
  byId("stop").addEventListener("click", () => emit("answer-stop"));
  renderExamples();
}
