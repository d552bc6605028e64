// The knowledge-base tab: pick or create a knowledge base, upload files (button or drag and drop)
// with progress and a result per file, list documents with their chunk counts, delete.

import { api, askToken, auth, describe, showBanner, url } from "./api.js";
import {
  chooseKnowledgeBase,
  onKnowledgeBaseChange,
  selectedKnowledgeBase,
  setKnowledgeBaseNames,
} from "./kb-choice.js";

const $ = (id) => document.getElementById(id);
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
let stored = new Set(); // knowledge bases the server has (a new one exists once it has a document)

export async function refreshKnowledgeBases() {
  const body = await api("api/kb");
  const names = body.knowledge_bases.map((kb) => kb.name);
  stored = new Set(names);
  setKnowledgeBaseNames(names);
  await refreshDocuments();
}

function formatSize(bytes) {
  if (bytes >= 1048576) return `${(bytes / 1048576).toFixed(1)} MB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${bytes} B`;
}

function documentRow(kb, doc) {
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
}

async function refreshDocuments() {
  const kb = selectedKnowledgeBase();
  const documents = stored.has(kb) ? (await api(`api/kb/${encodeURIComponent(kb)}/documents`)).documents : [];
  if (kb !== selectedKnowledgeBase()) return; // the user picked another one meanwhile
  const rows = documents.map((doc) => documentRow(kb, doc));
  if (!rows.length) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 5;
    cell.className = "muted";
    cell.textContent = `No documents in “${kb}” yet: upload some above.`;
    row.append(cell);
    rows.push(row);
  }
  $("kb-documents").replaceChildren(...rows);
}

async function deleteDocument(kb, doc) {
  try {
    await api(`api/kb/${encodeURIComponent(kb)}/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    $("upload-status").className = "muted";
    $("upload-status").textContent = `Deleted ${doc.filename}.`;
    $("upload-results").replaceChildren();
    await refreshKnowledgeBases();
  } catch (error) {
    showBanner(error.message);
  }
}

// XMLHttpRequest rather than fetch: it reports upload progress.
function postFile(kb, file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", url(`api/kb/${encodeURIComponent(kb)}/documents`));
    for (const [name, value] of Object.entries(auth.headers())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        // keep null
      }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject({ status: request.status, message: body?.error?.message || request.statusText, body });
    };
    request.onerror = () => reject({ status: 0, message: "" });
    request.send(form);
  });
}

// One file per request: each gets its own answer, and a rejected file does not keep the
// files after it from being stored.
async function uploadOne(kb, file, onProgress) {
  for (let attempt = 0; ; attempt++) {
    try {
      const body = await postFile(kb, file, onProgress);
      return { stored: body.documents, error: null };
    } catch (error) {
      if (error.status === 401 && attempt < 3) {
        await askToken(attempt > 0 || Boolean(auth.token));
        continue;
      }
      // A failed upload still lists what it stored before the failure.
      return { stored: error.body?.documents || [], error: describe(error.status, error.message) };
    }
  }
}

function resultItem(className, text) {
  const item = document.createElement("li");
  item.className = className;
  item.textContent = text;
  return item;
}

async function upload(files) {
  if (!files.length) return;
  const kb = selectedKnowledgeBase();
  const progress = $("upload-progress");
  const status = $("upload-status");
  const results = $("upload-results");
  const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
  let done = 0;
  let storedCount = 0;
  progress.hidden = false;
  progress.value = 0;
  results.replaceChildren();
  status.className = "muted";
  for (const [index, file] of files.entries()) {
    status.textContent = `Uploading ${file.name} (${index + 1} of ${files.length}) to “${kb}”… then splitting and embedding`;
    const outcome = await uploadOne(kb, file, (fraction) => {
      progress.value = (100 * (done + fraction * file.size)) / total;
    });
    done += file.size;
    for (const doc of outcome.stored) {
      storedCount++;
      const chunks = `${doc.chunks} chunk${doc.chunks === 1 ? "" : "s"}`;
      results.append(resultItem("stored", `${doc.filename}: stored, ${chunks}${doc.unchanged ? " (unchanged)" : ""}`));
    }
    if (outcome.error) results.append(resultItem("rejected", `${file.name}: not stored. ${outcome.error}`));
  }
  progress.hidden = true;
  const failed = files.length - storedCount;
  status.className = failed ? "error" : "muted";
  status.textContent = failed
    ? `Stored ${storedCount} of ${files.length} file(s) in “${kb}”; ${failed} not stored (see below).`
    : `Done. Stored ${storedCount} file(s) in “${kb}”.`;
  $("kb-files").value = "";
  await refreshKnowledgeBases().catch((error) => showBanner(error.message));
}

function createKnowledgeBase(event) {
  event.preventDefault();
  const name = $("kb-new-name").value.trim();
  if (!NAME.test(name)) {
    $("upload-status").className = "error";
    $("upload-status").textContent = "Knowledge-base names use 1-64 letters, digits, _ or -.";
    return;
  }
  $("kb-new-name").value = "";
  $("upload-status").className = "muted";
  $("upload-status").textContent = `“${name}” is selected: upload documents to create it.`;
  chooseKnowledgeBase(name, true);
}

export function initKnowledgeBase() {
  onKnowledgeBaseChange(() => {
    $("upload-results").replaceChildren();
    refreshDocuments().catch((error) => showBanner(error.message));
  });
  $("kb-files").addEventListener("change", () => upload([...$("kb-files").files]));
  $("kb-create").addEventListener("submit", createKnowledgeBase);
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
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("kb-files").click();
    }
  });
}
