// The knowledge-base tab: pick or create a knowledge base, upload files (button or
// drag and drop) with progress, list documents with their chunk counts, delete.

import { api, askToken, auth, describe, showBanner, url } from "./api.js";

const $ = (id) => document.getElementById(id);
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
let onChange = () => {};
let known = ["default"];
let stored = new Set(); // knowledge bases the server has (a new one exists once it has a document)

function selected() {
  return $("kb-select").value || "default";
}

function fillSelect(names, choose) {
  const select = $("kb-select");
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  select.value = choose && names.includes(choose) ? choose : names[0];
}

export async function refreshKnowledgeBases(choose) {
  const body = await api("api/kb");
  const names = body.knowledge_bases.map((kb) => kb.name);
  stored = new Set(names);
  for (const name of known) if (!names.includes(name)) names.push(name);
  known = names.length ? names : ["default"];
  fillSelect(known, choose || selected());
  onChange(known);
  await refreshDocuments();
}

function formatSize(bytes) {
  if (bytes >= 1048576) return `${(bytes / 1048576).toFixed(1)} MB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${bytes} B`;
}

async function refreshDocuments() {
  const kb = selected();
  const documents = stored.has(kb) ? (await api(`api/kb/${encodeURIComponent(kb)}/documents`)).documents : [];
  const rows = documents.map((doc) => {
    const row = document.createElement("tr");
    const cells = [doc.filename, String(doc.chunks), formatSize(doc.size_bytes),
      new Date(doc.created_unix * 1000).toLocaleString()];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const action = document.createElement("td");
    const remove = document.createElement("button");
    remove.className = "secondary";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${doc.filename}`);
    remove.addEventListener("click", () => deleteDocument(kb, doc));
    action.append(remove);
    row.append(action);
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 5;
    cell.className = "muted";
    cell.textContent = "No documents yet: upload some above.";
    row.append(cell);
    rows.push(row);
  }
  $("kb-documents").replaceChildren(...rows);
}

async function deleteDocument(kb, doc) {
  try {
    await api(`api/kb/${encodeURIComponent(kb)}/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    $("upload-status").textContent = `Deleted ${doc.filename}.`;
    await refreshKnowledgeBases(kb);
  } catch (error) {
    showBanner(error.message);
  }
}

// XMLHttpRequest rather than fetch: it reports upload progress.
function postFiles(kb, files) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", url(`api/kb/${encodeURIComponent(kb)}/documents`));
    for (const [name, value] of Object.entries(auth.headers())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) $("upload-progress").value = (100 * event.loaded) / event.total;
    };
    request.onload = () => {
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        // keep null
      }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject({ status: request.status, message: body?.error?.message || request.statusText });
    };
    request.onerror = () => reject({ status: 0, message: "" });
    request.send(form);
  });
}

async function upload(files) {
  if (!files.length) return;
  const kb = selected();
  const progress = $("upload-progress");
  const status = $("upload-status");
  progress.hidden = false;
  progress.value = 0;
  status.className = "muted";
  status.textContent = `Uploading ${files.length} file(s) to “${kb}”… (then splitting and embedding)`;
  for (let attempt = 0; ; attempt++) {
    try {
      const body = await postFiles(kb, files);
      const parts = body.documents.map((d) => `${d.filename}: ${d.chunks} chunks${d.unchanged ? " (unchanged)" : ""}`);
      status.textContent = `Done. ${parts.join("; ")}`;
      break;
    } catch (error) {
      if (error.status === 401 && attempt < 3) {
        await askToken(attempt > 0 || Boolean(auth.token));
        continue;
      }
      status.className = "error";
      status.textContent = describe(error.status, error.message);
      break;
    }
  }
  progress.hidden = true;
  $("kb-files").value = "";
  await refreshKnowledgeBases(kb).catch((error) => showBanner(error.message));
}

export function initKnowledgeBase(changed) {
  onChange = changed;
  $("kb-select").addEventListener("change", () => refreshDocuments().catch((error) => showBanner(error.message)));
  $("kb-files").addEventListener("change", () => upload([...$("kb-files").files]));
  $("kb-create").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("kb-new-name").value.trim();
    if (!NAME.test(name)) {
      $("upload-status").className = "error";
      $("upload-status").textContent = "Knowledge-base names use 1-64 letters, digits, _ or -.";
      return;
    }
    if (!known.includes(name)) known.push(name);
    $("kb-new-name").value = "";
    fillSelect(known, name);
    onChange(known);
    refreshDocuments().catch((error) => showBanner(error.message));
  });
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload([...event.dataTransfer.files]);
  });
}
