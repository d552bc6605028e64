// @ts-check
// The chat settings: sampling sliders with their values, system prompt, knowledge base switch,
// the model picker (when the server serves more than one model), all remembered in localStorage;
// and the two drawers (conversations, settings) that narrow screens open over the chat.

import { byId, setOptions } from "./dom.js";
import { emit } from "./events.js";
import { selectedKnowledgeBase } from "./kb-choice.js";

const KEY = "chatllm.settings";
const MODEL_KEY = "chatllm.model";
/** @type {Record<string, (value: string) => string>} each slider's id and how its value reads */
const SLIDERS = {
  "max-new-tokens": (v) => String(v),
  temperature: (v) => Number(v).toFixed(2),
  "top-k": (v) => (Number(v) === 0 ? "off" : String(v)),
  "top-p": (v) => Number(v).toFixed(2),
};
const REMEMBERED = ["system-prompt", "use-kb", ...Object.keys(SLIDERS)];
/** @type {string[]} the served models' ids */
let models = [];

/**
 * A served model as /api/info lists it.
 * @typedef {{id: string, model_path?: string, backend?: string, device?: string, dtype?: string,
 *   context_length?: number, chat_template?: string}} ModelInfo
 */

/**
 * The request fields the settings decide.
 * @typedef {{system_prompt: string, max_new_tokens: number, temperature: number, top_k: number,
 *   top_p: number, langchain?: boolean, kb?: string, model?: string}} RequestSettings
 */

/**
 * @param {string} id
 * @returns {HTMLInputElement | HTMLTextAreaElement}
 */
function field(id) {
  const element = byId(id);
  if (element instanceof HTMLInputElement || element instanceof HTMLTextAreaElement) return element;
  throw new Error(`#${id} is not a form field`);
}

/** @param {string} id */
function checkbox(id) {
  return byId(id, HTMLInputElement);
}

/** @param {string} id */
function showValue(id) {
  byId(`${id}-value`).textContent = SLIDERS[id](field(id).value);
}

function save() {
  /** @type {Record<string, string | boolean>} */
  const values = {};
  for (const id of REMEMBERED) values[id] = id === "use-kb" ? checkbox(id).checked : field(id).value;
  try {
    localStorage.setItem(KEY, JSON.stringify(values));
  } catch {
    // remembered for this page only
  }
}

function restore() {
  /** @type {Record<string, unknown>} */
  let values = {};
  try {
    values = JSON.parse(localStorage.getItem(KEY) || "{}") || {};
  } catch {
    values = {};
  }
  for (const id of REMEMBERED) {
    if (!(id in values)) continue;
    if (id === "use-kb") checkbox(id).checked = Boolean(values[id]);
    else field(id).value = String(values[id]);
  }
}

function usesKnowledgeBase() {
  const useKb = checkbox("use-kb");
  return useKb.checked && !useKb.disabled;
}

/** @returns {RequestSettings} */
export function requestSettings() {
  /** @type {RequestSettings} */
  const fields = {
    system_prompt: field("system-prompt").value,
    max_new_tokens: Number(field("max-new-tokens").value),
    temperature: Number(field("temperature").value),
    top_k: Number(field("top-k").value),
    top_p: Number(field("top-p").value),
  };
  if (usesKnowledgeBase()) {
    fields.langchain = true;
    fields.kb = selectedKnowledgeBase();
  }
  if (models.length > 1) fields.model = modelSelect().value;
  return fields;
}

function modelSelect() {
  return byId("model-select", HTMLSelectElement);
}

/** The model the next answer comes from: the picked one, or the only one served. */
export function chosenModel() {
  return models.length > 1 ? modelSelect().value : models[0] || "";
}

/**
 * Every model the server serves (base models and adapters); a picker appears for more than one.
 * @param {ModelInfo[]} served
 * @param {number} [contextLength] the first model's: caps the max-new-tokens slider
 */
export function setModels(served, contextLength) {
  models = served.filter((model) => model && model.id).map((model) => model.id);
  const select = modelSelect();
  setOptions(select, models);
  let remembered = null;
  try {
    remembered = localStorage.getItem(MODEL_KEY);
  } catch {
    remembered = null;
  }
  if (remembered !== null && models.includes(remembered)) select.value = remembered;
  byId("model-picker").hidden = models.length < 2;
  if (contextLength) {
    byId("max-new-tokens", HTMLInputElement).max = String(Math.max(1, Math.min(contextLength, 8192)));
    showValue("max-new-tokens");
  }
}

/** @param {boolean} available */
export function setKnowledgeBaseAvailable(available) {
  const useKb = checkbox("use-kb");
  useKb.disabled = !available;
  /** @type {HTMLElement} */ (useKb.parentElement).title = available ? "" : "The knowledge base is turned off on this server.";
}

/** @param {string} id */
function drawerToggle(id) {
  return /** @type {HTMLElement} */ (document.querySelector(`[aria-controls="${id}"]`));
}

/**
 * @param {string} id "sidebar" or "settings"
 * @param {boolean} open
 */
function openDrawer(id, open) {
  const drawer = byId(id);
  drawer.classList.toggle("open", open);
  const toggle = drawerToggle(id);
  toggle.setAttribute("aria-expanded", String(open));
  const anyOpen = document.querySelector(".drawer.open") !== null;
  byId("drawer-backdrop").hidden = !anyOpen;
  if (open) /** @type {HTMLElement | null} */ (drawer.querySelector("button, input, select, textarea"))?.focus();
  else if (drawer.contains(document.activeElement)) toggle.focus();
}

export function closeDrawers() {
  for (const drawer of document.querySelectorAll(".drawer.open")) openDrawer(drawer.id, false);
}

function initDrawers() {
  for (const id of ["sidebar", "settings"]) {
    drawerToggle(id).addEventListener("click", () => openDrawer(id, !byId(id).classList.contains("open")));
  }
  for (const close of document.querySelectorAll("[data-close]")) {
    close.addEventListener("click", () => openDrawer(/** @type {HTMLElement} */ (close).dataset.close ?? "", false));
  }
  byId("drawer-backdrop").addEventListener("click", closeDrawers);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.querySelector(".drawer.open")) closeDrawers();
  });
}

export function initSettings() {
  restore();
  for (const id of Object.keys(SLIDERS)) {
    showValue(id);
    field(id).addEventListener("input", () => {
      showValue(id);
      save();
    });
  }
  field("system-prompt").addEventListener("change", save);
  checkbox("use-kb").addEventListener("change", save);
  const select = modelSelect();
  select.addEventListener("change", () => {
    try {
      localStorage.setItem(MODEL_KEY, select.value);
    } catch {
      // remembered for this page only
    }
    emit("model-chosen", select.value);
  });
  initDrawers();
}
