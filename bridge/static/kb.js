// @ts-check
// The knowledge-base tab: pick or create a knowledge base, upload files (button or drag and drop)
// with progress and a result per file, list documents with their chunk counts, delete.

import { api, askToken, auth, describe, showBanner, url } from "./api.js";
import { button, byId, el, tableRow } from "./dom.js";
import { on } from "./events.js";
import { chooseKnowledgeBase, selectedKnowledgeBase, setKnowledgeBaseNames } from "./kb-choice.js";

/**
 * A stored document, as /api/kb/{kb}/documents lists it and an upload returns it.
 * @typedef {{id: string, filename: string, chunks: number, size_bytes: number, created_unix: number,
 *   unchanged?: boolean}} StoredDocument
 */

/**
 * The server's rule for knowledge-base names (/api/info's `rules.knowledge_base_name`).
 * @typedef {{pattern: string, rule: string}} NameRule
 */

/** @type {Set<string>} knowledge bases the server has (a new one exists once it has a document) */
let stored = new Set();
/** @type {{pattern: RegExp, rule: string} | null} null: the server judges the name on upload */
let nameRule = null;

export async function refreshKnowledgeBases() {
  const body = /** @type {{knowledge_bases: {name: string}[]}} */ (await api("api/kb"));
  const names = body.knowledge_bases.map((kb) => kb.name);
  stored = new Set(names);
  setKnowledgeBaseNames(names);
  await refreshDocuments();
}

/**
 * Takes the server's rule for knowledge-base names (from /api/info), so a bad name is refused
 * before anything is uploaded. Without one (an older server) the upload's answer says it.
 * @param {NameRule | undefined} rule
 */
export function setKnowledgeBaseNameRule(rule) {
  nameRule = null;
  if (!rule?.pattern) return;
  try {
    nameRule = { pattern: new RegExp(rule.pattern, "u"), rule: rule.rule };
  } catch {
    return; // not a pattern this browser reads: leave it to the server
  }
  byId("kb-new-name").title = rule.rule;
}

/** @param {number} bytes */
function formatSize(bytes) {
  if (bytes >= 1048576) return `${(bytes / 1048576).toFixed(1)} MB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${bytes} B`;
}

/**
 * @param {string} kb
 * @param {StoredDocument} doc
 */
function documentRow(kb, doc) {
  const remove = button({ text: "Delete", label: `Delete ${doc.filename}`, className: "secondary",
    onClick: () => deleteDocument(kb, doc) });
  return tableRow([doc.filename, String(doc.chunks), formatSize(doc.size_bytes),
    new Date(doc.created_unix * 1000).toLocaleString(), remove]);
}

/** @param {string} kb */
async function documentsOf(kb) {
  if (!stored.has(kb)) return [];
  const body = /** @type {{documents: StoredDocument[]}} */ (await api(`api/kb/${encodeURIComponent(kb)}/documents`));
  return body.documents;
}

async function refreshDocuments() {
  const kb = selectedKnowledgeBase();
  const documents = await documentsOf(kb);
  if (kb !== selectedKnowledgeBase()) return; // the user picked another one meanwhile
  const rows = documents.map((doc) => documentRow(kb, doc));
  if (!rows.length) {
    const empty = el("td", { colSpan: 5, className: "muted", textContent: `No documents in “${kb}” yet: upload some above.` });
    rows.push(el("tr", {}, empty));
  }
  byId("kb-documents").replaceChildren(...rows);
}

/**
 * A line under the drop zone.
 * @param {string} text
 * @param {boolean} [error]
 */
function showStatus(text, error = false) {
  const status = byId("upload-status");
  status.className = error ? "error" : "muted";
  status.textContent = text;
}

/** @param {unknown} error an ApiError (or anything thrown) */
function showError(error) {
  showBanner(error instanceof Error ? error.message : String(error));
}

/**
 * @param {string} kb
 * @param {StoredDocument} doc
 */
async function deleteDocument(kb, doc) {
  try {
    await api(`api/kb/${encodeURIComponent(kb)}/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    showStatus(`Deleted ${doc.filename}.`);
    byId("upload-results").replaceChildren();
    await refreshKnowledgeBases();
  } catch (error) {
    showError(error);
  }
}

/**
 * A failed upload: its status, the server's words, and what it stored before failing.
 * @typedef {{status: number, message: string, body?: {documents?: StoredDocument[]} | null}} UploadFailure
 */

/**
 * Posts one file; XMLHttpRequest rather than fetch, since it reports upload progress.
 * @param {string} kb
 * @param {File} file
 * @param {(fraction: number) => void} onProgress
 * @returns {Promise<{documents: StoredDocument[]}>} rejects with an UploadFailure
 */
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

/**
 * One file per request: each gets its own answer, and a rejected file does not keep the files after
 * it from being stored.
 * @param {string} kb
 * @param {File} file
 * @param {(fraction: number) => void} onProgress
 * @returns {Promise<{stored: StoredDocument[], error: string | null}>}
 */
async function uploadOne(kb, file, onProgress) {
  for (let attempt = 0; ; attempt++) {
    try {
      const body = await postFile(kb, file, onProgress);
      return { stored: body.documents, error: null };
    } catch (thrown) {
      const failure = /** @type {UploadFailure} */ (thrown);
      if (failure.status === 401 && attempt < 3) {
        await askToken(attempt > 0 || Boolean(auth.token));
        continue;
      }
      // A failed upload still lists what it stored before the failure.
      return { stored: failure.body?.documents || [], error: describe(failure.status, failure.message) };
    }
  }
}

/** @param {File[]} files */
async function upload(files) {
  if (!files.length) return;
  const kb = selectedKnowledgeBase();
  const progress = byId("upload-progress", HTMLProgressElement);
  const results = byId("upload-results");
  const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
  let done = 0;
  let storedCount = 0;
  progress.hidden = false;
  progress.value = 0;
  results.replaceChildren();
  for (const [index, file] of files.entries()) {
    showStatus(`Uploading ${file.name} (${index + 1} of ${files.length}) to “${kb}”… then splitting and embedding`);
    const outcome = await uploadOne(kb, file, (fraction) => {
      progress.value = (100 * (done + fraction * file.size)) / total;
    });
    done += file.size;
    for (const doc of outcome.stored) {
      storedCount++;
      const chunks = `${doc.chunks} chunk${doc.chunks === 1 ? "" : "s"}`;
      const text = `${doc.filename}: stored, ${chunks}${doc.unchanged ? " (unchanged)" : ""}`;
      results.append(el("li", { className: "stored", textContent: text }));
    }
    if (outcome.error) {
      results.append(el("li", { className: "rejected", textContent: `${file.name}: not stored. ${outcome.error}` }));
    }
  }
  progress.hidden = true;
  const failed = files.length - storedCount;
  showStatus(
    failed
      ? `Stored ${storedCount} of ${files.length} file(s) in “${kb}”; ${failed} not stored (see below).`
      : `Done. Stored ${storedCount} file(s) in “${kb}”.`,
    failed > 0,
  );
  byId("kb-files", HTMLInputElement).value = "";
  await refreshKnowledgeBases().catch(showError);
}

/** @param {SubmitEvent} event */
function createKnowledgeBase(event) {
  event.preventDefault();
  const input = byId("kb-new-name", HTMLInputElement);
  const name = input.value.trim();
  if (!name) {
    showStatus("Type a name for the new knowledge base.", true);
    return;
  }
  if (nameRule && !nameRule.pattern.test(name)) {
    showStatus(`Knowledge-base names: ${nameRule.rule}.`, true);
    return;
  }
  input.value = "";
  showStatus(`“${name}” is selected: upload documents to create it.`);
  chooseKnowledgeBase(name, true);
}

export function initKnowledgeBase() {
  on("knowledge-base-chosen", () => {
    byId("upload-results").replaceChildren();
    refreshDocuments().catch(showError);
  });
  const files = byId("kb-files", HTMLInputElement);
  files.addEventListener("change", () => upload([...(files.files ?? [])]));
  byId("kb-create").addEventListener("submit", createKnowledgeBase);
  const zone = byId("dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload([...(event.dataTransfer?.files ?? [])]);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      files.click();
    }
  });
}
