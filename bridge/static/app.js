// @ts-check
// Entry point: tabs, the model panel, and start-up (the chat first, so the page answers at once;
// then the server's info, which asks for the token when needed; then the socket).

import { api, initTokenDialog, showBanner } from "./api.js";
import { initChat } from "./chat.js";
import { initComposer, showModel } from "./composer.js";
import { byId, el, tableRow } from "./dom.js";
import { on } from "./events.js";
import { initKnowledgeBase, refreshKnowledgeBases, setKnowledgeBaseNameRule } from "./kb.js";
import { initKnowledgeBaseChoice } from "./kb-choice.js";
import { chosenModel, initSettings, setKnowledgeBaseAvailable, setModels } from "./settings.js";
import { initSidebar } from "./sidebar.js";
import { startConnection } from "./socket.js";

/** @typedef {import("./settings.js").ModelInfo} ModelInfo */

/**
 * What /api/info answers. `rules` holds the server's rules that the page checks before asking
 * (absent on a server that does not send them: the server's answer then says what is wrong).
 * @typedef {object} ServerInfo
 * @property {ModelInfo | null} model the first served model
 * @property {ModelInfo[]} [models] every one, adapters included
 * @property {{knowledge_base_enabled?: boolean, version?: string}} [server]
 * @property {{name: string, model_path: string, model_type?: string, recommended_hardware: string}[]} [catalog]
 * @property {{knowledge_base_name?: import("./kb.js").NameRule}} [rules]
 */

let knowledgeBasesLoaded = false;
/** @type {ModelInfo | null} */
let served = null; // the first model /api/info lists

/**
 * @param {HTMLElement} tab
 * @param {boolean} focus
 */
function selectTab(tab, focus) {
  for (const other of tabs()) {
    const active = other === tab;
    other.setAttribute("aria-selected", String(active));
    other.tabIndex = active ? 0 : -1; // one tab stop for the tab list; arrows move inside it
    byId(other.getAttribute("aria-controls") ?? "").hidden = !active;
  }
  if (focus) tab.focus();
}

function tabs() {
  return [...document.querySelectorAll('[role="tab"]')].map((tab) => /** @type {HTMLElement} */ (tab));
}

function initTabs() {
  const all = tabs();
  for (const tab of all) {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (event) => {
      const index = all.indexOf(tab);
      /** @type {Record<string, HTMLElement>} */
      const targets = {
        ArrowRight: all[(index + 1) % all.length],
        ArrowLeft: all[(index - 1 + all.length) % all.length],
        Home: all[0],
        End: all[all.length - 1],
      };
      const target = targets[event.key];
      if (!target) return;
      event.preventDefault();
      selectTab(target, true);
    });
  }
}

/** @param {[string, string | undefined][]} rows */
function definitionRows(rows) {
  return rows.flatMap(([label, value]) => [el("dt", { textContent: label }), el("dd", { textContent: value ?? "–" })]);
}

/** @param {ServerInfo} info */
function renderModel(info) {
  const model = info.model || /** @type {Partial<ModelInfo>} */ ({});
  byId("model-info").replaceChildren(
    ...definitionRows([
      ["Model", model.id],
      ["Loaded from", model.model_path],
      ["Backend", model.backend],
      ["Device", model.device],
      ["Precision", model.dtype],
      ["Context length", model.context_length ? `${model.context_length} tokens` : undefined],
      ["Chat template", model.chat_template],
      ["Knowledge base", info.server?.knowledge_base_enabled ? "enabled" : "disabled"],
      ["Version", info.server?.version],
    ]),
  );
  const models = info.models || (info.model ? [info.model] : []);
  byId("served-models").hidden = models.length < 2;
  byId("served-model-list").replaceChildren(...models.map((entry) => el("li", { textContent: entry.id })));
  byId("catalog").replaceChildren(
    ...(info.catalog || []).map((entry) =>
      tableRow([entry.name, entry.model_path, entry.model_type || "–", entry.recommended_hardware]),
    ),
  );
  setModels(models, model.context_length);
  served = info.model;
  showServedModel();
}

function showServedModel() {
  const name = chosenModel() || served?.id;
  const parts = [served?.backend, served?.device, served?.context_length && `${served.context_length}-token context`];
  showModel(name, parts.filter(Boolean).join(" · "));
  document.title = name ? `ChatLLM — ${name}` : "ChatLLM";
}

// Runs before every (re)connection of the chat socket: a 401 here opens the token dialog.
async function loadInfo() {
  const info = /** @type {ServerInfo} */ (await api("api/info"));
  renderModel(info);
  setKnowledgeBaseNameRule(info.rules?.knowledge_base_name);
  const kbEnabled = Boolean(info.server?.knowledge_base_enabled);
  setKnowledgeBaseAvailable(kbEnabled);
  if (kbEnabled && !knowledgeBasesLoaded) {
    knowledgeBasesLoaded = true;
    refreshKnowledgeBases().catch((error) => {
      knowledgeBasesLoaded = false;
      showBanner(error.message);
    });
  }
}

function start() {
  initTokenDialog();
  initTabs();
  initSettings();
  initKnowledgeBaseChoice();
  initKnowledgeBase();
  initComposer();
  initSidebar();
  initChat();
  on("model-chosen", showServedModel);
  startConnection(loadInfo);
}

start();
