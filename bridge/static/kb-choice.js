// @ts-check
// The one selected knowledge base. The Chat tab's picker and the Knowledge base tab's picker are two
// views of it; the choice is remembered across reloads (localStorage). A new choice is told as the
// knowledge-base-chosen event.

import { byId, setOptions } from "./dom.js";
import { emit } from "./events.js";

const KEY = "chatllm.knowledge-base";
const PICKERS = ["kb-select", "chat-kb"];
/** @type {string[]} */
let names = [];
/** @type {string[]} made in this page, not stored on the server until a document is uploaded */
const created = [];
let selected = remembered();

function remembered() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

function fill() {
  for (const id of PICKERS) {
    const select = byId(id, HTMLSelectElement);
    setOptions(select, names);
    select.value = selectedKnowledgeBase();
  }
}

export function selectedKnowledgeBase() {
  return selected || "default";
}

/**
 * The server's knowledge bases. Without a remembered choice, the first one that exists is
 * selected (an empty "default" only when the server has none).
 * @param {string[]} serverNames
 */
export function setKnowledgeBaseNames(serverNames) {
  if (!selected) selected = serverNames[0] || null;
  names = [...serverNames];
  for (const name of [...created, selectedKnowledgeBase()]) if (!names.includes(name)) names.push(name);
  fill();
}

/**
 * @param {string} name
 * @param {boolean} [isNew] made in this page (listed although the server has no such one yet)
 */
export function chooseKnowledgeBase(name, isNew = false) {
  if (isNew && !created.includes(name)) created.push(name);
  if (!names.includes(name)) names.push(name);
  const changed = name !== selected;
  selected = name;
  try {
    localStorage.setItem(KEY, name);
  } catch {
    // remembered for this page only
  }
  fill();
  if (changed) emit("knowledge-base-chosen", name);
}

export function initKnowledgeBaseChoice() {
  for (const id of PICKERS) {
    const select = byId(id, HTMLSelectElement);
    select.addEventListener("change", () => chooseKnowledgeBase(select.value));
  }
  names = [selectedKnowledgeBase()];
  fill();
}
