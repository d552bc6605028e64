// @ts-check
// HTTP calls, the access token and user-visible errors, shared by the tabs.

import { byId } from "./dom.js";
import { emit } from "./events.js";

const TOKEN_KEY = "chatllm_token";

export class ApiError extends Error {
  /**
   * @param {number} status the HTTP status, 0 when the server could not be reached
   * @param {string} message words for the user
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const auth = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  /** @returns {Record<string, string>} */
  headers() {
    return this.token ? { Authorization: this.token } : {};
  },
  /** @param {string} token */
  save(token) {
    this.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    this.setCookie();
  },
  // Browsers cannot set headers on a WebSocket handshake: the bridge also reads this
  // same-site cookie there (and only there).
  setCookie() {
    const value = this.token ? encodeURIComponent(this.token) : "";
    const expiry = this.token ? "" : "; max-age=0";
    document.cookie = `${TOKEN_KEY}=${value}; path=/; SameSite=Strict${expiry}`;
  },
};

/** @param {string} path relative to the page (the bridge may sit under a path prefix) */
export function url(path) {
  return new URL(path, document.baseURI).toString();
}

/** @param {string} path */
export function wsUrl(path) {
  const u = new URL(path, document.baseURI);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.hash = "";
  u.search = "";
  return u.toString();
}

/**
 * Words for a failed call: what the user can do about it.
 * @param {number} status
 * @param {string} [message] the server's
 */
export function describe(status, message) {
  if (status === 401) return "The access token is missing or wrong.";
  if (status === 413) return `File too large: ${message}`;
  if (status === 429) return "The server is busy (too many requests). Try again in a moment.";
  if (status === 503) return `The server is not available right now: ${message}`;
  if (status === 504) return "The request took too long and was stopped by the server.";
  if (status === 502) return `The model server cannot be reached: ${message}`;
  if (status === 0) return "Cannot reach the server. Check your connection.";
  return message || `Request failed (HTTP ${status}).`;
}

/** @param {Response} response */
export async function errorFrom(response) {
  let message = response.statusText;
  try {
    const body = await response.json();
    message = body?.error?.message || message;
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, describe(response.status, message));
}

// The banner under the top bar. `kind` says which condition it reports, so the code that sees
// the condition end clears only its own banner: "connection" (the page cannot talk to the server
// right now), "token" (the token dialog was dismissed) or "error" (anything else).
/** @typedef {"connection" | "token" | "error"} BannerKind */
/** @type {BannerKind | null} */
let bannerKind = null;

/**
 * @param {string} text "" hides the banner
 * @param {BannerKind} [kind]
 * @param {{label: string, run: () => void} | null} [action] a button on the banner
 */
export function showBanner(text, kind = "error", action = null) {
  const button = byId("banner-action");
  byId("banner-text").textContent = text;
  byId("banner").hidden = !text;
  bannerKind = text ? kind : null;
  button.hidden = !action;
  button.textContent = action ? action.label : "";
  button.onclick = action ? action.run : null;
}

/** @param {BannerKind} kind */
export function clearBanner(kind) {
  if (bannerKind === kind) showBanner("");
}

// The token dialog. While a prompt is pending, every call that got a 401 waits on it; closing
// the dialog (Escape, "Not now") leaves it pending and says how to continue.
/** @type {Promise<void> | null} */
let tokenPrompt = null;

function tokenDialog() {
  return byId("token-dialog", HTMLDialogElement);
}

export function tokenDismissed() {
  return tokenPrompt !== null && !tokenDialog().open;
}

export function reopenTokenDialog() {
  const dialog = tokenDialog();
  if (!tokenPrompt || dialog.open) return;
  clearBanner("token");
  emit("token", "asking");
  dialog.showModal();
  byId("token-input").focus();
}

function onDialogClosed() {
  if (!tokenPrompt) return; // closed by a submitted token
  emit("token", "dismissed");
  showBanner("This server needs an access token before it answers.", "token", {
    label: "Enter token",
    run: reopenTokenDialog,
  });
}

export function initTokenDialog() {
  const dialog = tokenDialog();
  dialog.addEventListener("close", onDialogClosed);
  byId("token-cancel").addEventListener("click", () => dialog.close());
}

/**
 * Asks for the token once; resolves when the user submitted one.
 * @param {boolean} wrong whether the last token was refused
 * @returns {Promise<void>}
 */
export function askToken(wrong) {
  const error = byId("token-error");
  error.hidden = !wrong;
  error.textContent = wrong ? "Wrong token: the server refused it." : "";
  if (tokenPrompt) return tokenPrompt;
  const input = byId("token-input", HTMLInputElement);
  input.value = "";
  // The server answered (with a 401): whatever said it cannot be reached is stale.
  clearBanner("connection");
  tokenPrompt = new Promise((resolve) => {
    byId("token-form").addEventListener(
      "submit",
      () => {
        auth.save(input.value.trim());
        tokenPrompt = null;
        clearBanner("token");
        emit("token", "saved");
        resolve();
      },
      { once: true },
    );
  });
  emit("token", "asking");
  const dialog = tokenDialog();
  if (!dialog.open) dialog.showModal();
  return tokenPrompt;
}

/**
 * fetch() with the token; a 401 asks for the token and retries. Resolves to the JSON body
 * (null for a 204), which the caller names the type of; rejects with an ApiError in words.
 * @param {string} path
 * @param {RequestInit} [options]
 * @returns {Promise<unknown>}
 */
export async function api(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(url(path), { ...options, headers: { ...auth.headers(), ...(options.headers || {}) } });
    } catch {
      throw new ApiError(0, describe(0));
    }
    if (response.status === 401 && attempt < 5) {
      await askToken(attempt > 0 || Boolean(auth.token));
      continue;
    }
    if (!response.ok) throw await errorFrom(response);
    return response.status === 204 ? null : response.json();
  }
}
