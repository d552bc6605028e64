// Entry point: tabs, the model panel, and start-up (the chat first, so the page answers at once;
// then the server's info, which asks for the token when needed; then the socket).

import { api, initTokenDialog, showBanner } from "./api.js";
import { initChat, showModel } from "./chat.js";
import { initKnowledgeBase, refreshKnowledgeBases } from "./kb.js";
import { initKnowledgeBaseChoice } from "./kb-choice.js";
import { chosenModel, initSettings, setKnowledgeBaseAvailable, setModels } from "./settings.js";

const $ = (id) => document.getElementById(id);
let knowledgeBasesLoaded = false;
let served = null; // the first model /api/info lists

function selectTab(tab, focus) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const active = other === tab;
    other.setAttribute("aria-selected", String(active));
    other.tabIndex = active ? 0 : -1; // one tab stop for the tab list; arrows move inside it
    $(other.getAttribute("aria-controls")).hidden = !active;
  }
  if (focus) tab.focus();
}

function initTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (event) => {
      const index = tabs.indexOf(tab);
      const target = {
        ArrowRight: tabs[(index + 1) % tabs.length],
        ArrowLeft: tabs[(index - 1 + tabs.length) % tabs.length],
        Home: tabs[0],
        End: tabs[tabs.length - 1],
      }[event.key];
      if (!target) return;
      event.preventDefault();
      selectTab(target, true);
    });
  }
}

function definitionRows(rows) {
  return rows.flatMap(([label, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value ?? "–";
    return [dt, dd];
  });
}

function renderModel(info) {
  const model = info.model || {};
  $("model-info").replaceChildren(
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
  $("served-models").hidden = models.length < 2;
  $("served-model-list").replaceChildren(
    ...models.map((entry) => Object.assign(document.createElement("li"), { textContent: entry.id })),
  );
  $("catalog").replaceChildren(
    ...(info.catalog || []).map((entry) => {
      const row = document.createElement("tr");
      for (const text of [entry.name, entry.model_path, entry.model_type || "–", entry.recommended_hardware]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }),
  );
  setModels(models, model.context_length);
  served = model;
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
  const info = await api("api/info");
  renderModel(info);
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
  document.addEventListener("chatllm:model", showServedModel);
  initChat(loadInfo);
}

start();
