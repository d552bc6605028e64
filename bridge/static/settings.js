// The chat settings: sampling sliders with their values, system prompt, knowledge base switch,
// the model picker (when the server serves more than one model), all remembered in localStorage;
// and the two drawers (conversations, settings) that narrow screens open over the chat.

import { selectedKnowledgeBase } from "./kb-choice.js";

const $ = (id) => document.getElementById(id);
const KEY = "chatllm.settings";
const MODEL_KEY = "chatllm.model";
const SLIDERS = {
  "max-new-tokens": (v) => String(v),
  temperature: (v) => Number(v).toFixed(2),
  "top-k": (v) => (Number(v) === 0 ? "off" : String(v)),
  "top-p": (v) => Number(v).toFixed(2),
};
const REMEMBERED = ["system-prompt", "use-kb", ...Object.keys(SLIDERS)];
let models = [];

function showValue(id) {
  $(`${id}-value`).textContent = SLIDERS[id]($(id).value);
}

function save() {
  const values = {};
  for (const id of REMEMBERED) values[id] = $(id).type === "checkbox" ? $(id).checked : $(id).value;
  try {
    localStorage.setItem(KEY, JSON.stringify(values));
  } catch {
    // remembered for this page only
  }
}

function restore() {
  let values = {};
  try {
    values = JSON.parse(localStorage.getItem(KEY) || "{}") || {};
  } catch {
    values = {};
  }
  for (const id of REMEMBERED) {
    if (!(id in values)) continue;
    if ($(id).type === "checkbox") $(id).checked = Boolean(values[id]);
    else $(id).value = String(values[id]);
  }
}

/** The request fields the settings decide. */
export function requestSettings() {
  const fields = {
    system_prompt: $("system-prompt").value,
    max_new_tokens: Number($("max-new-tokens").value),
    temperature: Number($("temperature").value),
    top_k: Number($("top-k").value),
    top_p: Number($("top-p").value),
  };
  if ($("use-kb").checked && !$("use-kb").disabled) {
    fields.langchain = true;
    fields.kb = selectedKnowledgeBase();
  }
  if (models.length > 1) fields.model = $("model-select").value;
  return fields;
}

export function usesKnowledgeBase() {
  return $("use-kb").checked && !$("use-kb").disabled;
}

/** The model the next answer comes from: the picked one, or the only one served. */
export function chosenModel() {
  return models.length > 1 ? $("model-select").value : models[0]?.id || "";
}

/** Every model the server serves (base models and adapters); a picker appears for more than one. */
export function setModels(served, contextLength) {
  models = served.filter((model) => model && model.id);
  const select = $("model-select");
  select.replaceChildren(...models.map((model) => new Option(model.id, model.id)));
  let remembered = null;
  try {
    remembered = localStorage.getItem(MODEL_KEY);
  } catch {
    remembered = null;
  }
  if (models.some((model) => model.id === remembered)) select.value = remembered;
  $("model-picker").hidden = models.length < 2;
  if (contextLength) {
    const slider = $("max-new-tokens");
    slider.max = String(Math.max(1, Math.min(contextLength, 8192)));
    showValue("max-new-tokens");
  }
}

export function setKnowledgeBaseAvailable(available) {
  $("use-kb").disabled = !available;
  $("use-kb").parentElement.title = available ? "" : "The knowledge base is turned off on this server.";
}

function openDrawer(id, open) {
  const drawer = $(id);
  drawer.classList.toggle("open", open);
  const toggle = document.querySelector(`[aria-controls="${id}"]`);
  toggle.setAttribute("aria-expanded", String(open));
  const anyOpen = document.querySelector(".drawer.open") !== null;
  $("drawer-backdrop").hidden = !anyOpen;
  if (open) drawer.querySelector("button, input, select, textarea")?.focus();
  else if (drawer.contains(document.activeElement)) toggle.focus();
}

export function closeDrawers() {
  for (const drawer of document.querySelectorAll(".drawer.open")) openDrawer(drawer.id, false);
}

function initDrawers() {
  for (const id of ["sidebar", "settings"]) {
    const toggle = document.querySelector(`[aria-controls="${id}"]`);
    toggle.addEventListener("click", () => openDrawer(id, !$(id).classList.contains("open")));
  }
  for (const close of document.querySelectorAll("[data-close]")) {
    close.addEventListener("click", () => openDrawer(close.dataset.close, false));
  }
  $("drawer-backdrop").addEventListener("click", closeDrawers);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.querySelector(".drawer.open")) closeDrawers();
  });
}

export function initSettings() {
  restore();
  for (const id of Object.keys(SLIDERS)) {
    showValue(id);
    $(id).addEventListener("input", () => {
      showValue(id);
      save();
    });
  }
  $("system-prompt").addEventListener("change", save);
  $("use-kb").addEventListener("change", save);
  $("model-select").addEventListener("change", () => {
    try {
      localStorage.setItem(MODEL_KEY, $("model-select").value);
    } catch {
      // remembered for this page only
    }
    document.dispatchEvent(new CustomEvent("chatllm:model", { detail: $("model-select").value }));
  });
  initDrawers();
}
