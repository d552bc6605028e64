// Entry point: tabs, the model panel, and start-up (token first, then the socket).

import { api, showBanner } from "./api.js";
import { initChat, setKnowledgeBases } from "./chat.js";
import { initKnowledgeBase, refreshKnowledgeBases } from "./kb.js";

const $ = (id) => document.getElementById(id);

function initTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      for (const other of tabs) {
        const active = other === tab;
        other.setAttribute("aria-selected", String(active));
        $(other.dataset.panel).hidden = !active;
      }
    });
  }
}

function renderModel(info) {
  const model = info.model || {};
  const rows = [
    ["Model", model.id],
    ["Loaded from", model.model_path],
    ["Backend", model.backend],
    ["Device", model.device],
    ["Precision", model.dtype],
    ["Context length", model.context_length ? `${model.context_length} tokens` : undefined],
    ["Chat template", model.chat_template],
    ["Knowledge base", info.server?.knowledge_base_enabled ? "enabled" : "disabled"],
    ["Version", info.server?.version],
  ];
  $("model-info").replaceChildren(
    ...rows.flatMap(([label, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value ?? "–";
      return [dt, dd];
    }),
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
  document.title = model.id ? `ChatLLM — ${model.id}` : "ChatLLM";
}

async function start() {
  initTabs();
  initKnowledgeBase(setKnowledgeBases);
  try {
    const info = await api("api/info");
    renderModel(info);
    if (info.server?.knowledge_base_enabled) await refreshKnowledgeBases();
    else setKnowledgeBases(["default"]);
  } catch (error) {
    showBanner(error.message);
  }
  initChat();
}

start();
