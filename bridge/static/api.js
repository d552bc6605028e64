// HTTP calls, the access token and user-visible errors, shared by the tabs.

const TOKEN_KEY = "chatllm_token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const auth = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  headers() {
    return this.token ? { Authorization: this.token } : {};
  },
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

export function url(path) {
  return new URL(path, document.baseURI).toString();
}

export function wsUrl(path) {
  const u = new URL(path, document.baseURI);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.hash = "";
  u.search = "";
  return u.toString();
}

// Words for a failed call: what the user can do about it.
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

let tokenPrompt = null;

// Ask for the token once; resolves when the user submitted one.
export function askToken(wrong) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById("token-dialog");
  const error = document.getElementById("token-error");
  const input = document.getElementById("token-input");
  error.hidden = !wrong;
  error.textContent = wrong ? "Wrong token: the server refused it." : "";
  input.value = "";
  tokenPrompt = new Promise((resolve) => {
    document.getElementById("token-form").addEventListener(
      "submit",
      () => {
        auth.save(input.value.trim());
        tokenPrompt = null;
        resolve();
      },
      { once: true },
    );
  });
  if (!dialog.open) dialog.showModal();
  return tokenPrompt;
}

// fetch() with the token; a 401 asks for the token and retries.
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

export function showBanner(text) {
  const banner = document.getElementById("banner");
  banner.textContent = text;
  banner.hidden = !text;
}
