// The one selected knowledge base. The Chat tab's picker and the Knowledge base tab's picker are two
// views of it; the choice is remembered across reloads (localStorage).

const KEY = "chatllm.knowledge-base";
const PICKERS = ["kb-select", "chat-kb"];
const listeners = [];
let names = [];
let created = []; // made in this page, not stored on the server until a document is uploaded
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
    const select = document.getElementById(id);
    select.replaceChildren(...names.map((name) => new Option(name, name)));
    select.value = selectedKnowledgeBase();
  }
}

export function selectedKnowledgeBase() {
  return selected || "default";
}

export function knowledgeBaseNames() {
  return [...names];
}

/** The server's knowledge bases. Without a remembered choice, the first one that exists is
 * selected (an empty "default" only when the server has none). */
export function setKnowledgeBaseNames(serverNames) {
  if (!selected) selected = serverNames[0] || null;
  names = [...serverNames];
  for (const name of [...created, selectedKnowledgeBase()]) if (!names.includes(name)) names.push(name);
  fill();
}

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
  if (changed) for (const listener of listeners) listener(name);
}

export function onKnowledgeBaseChange(listener) {
  listeners.push(listener);
}

export function initKnowledgeBaseChoice() {
  for (const id of PICKERS) {
    document.getElementById(id).addEventListener("change", (event) => chooseKnowledgeBase(event.target.value));
  }
  names = [selectedKnowledgeBase()];
  fill();
}
