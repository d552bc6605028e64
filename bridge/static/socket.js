// @ts-check
// The page's WebSocket on api/chat. Before each (re)connection the HTTP API is asked first: a
// refused handshake looks like any lost connection to the browser, while an HTTP 401 opens the
// token dialog. Lost connections are retried with backoff; a frame sent while the socket is down
// waits for it. Frames and lost connections are told as events (socket-frame, socket-lost).

import { auth, clearBanner, reopenTokenDialog, showBanner, tokenDismissed, wsUrl } from "./api.js";
import { byId } from "./dom.js";
import { emit, on } from "./events.js";

const socket = {
  /** @type {WebSocket | null} */
  ws: null,
  delay: 500,
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  timer: undefined,
  /** @type {string | null} a frame to send once the socket opens */
  waiting: null,
  /** @type {() => Promise<void>} */
  prepare: async () => {},
};

/**
 * @param {"" | "ok" | "down"} state
 * @param {string} text
 */
function setStatus(state, text) {
  const element = byId("conn-status");
  element.className = `conn ${state}`;
  element.textContent = text;
}

/** @param {string} text */
function retryLater(text) {
  const seconds = Math.round(socket.delay / 100) / 10;
  setStatus("down", "disconnected");
  showBanner(`${text} Retrying in ${seconds}s…`, "connection");
  clearTimeout(socket.timer);
  socket.timer = setTimeout(connect, socket.delay);
  socket.delay = Math.min(socket.delay * 2, 10000);
}

async function connect() {
  clearTimeout(socket.timer);
  setStatus("", "connecting…");
  try {
    await socket.prepare(); // waits while the token dialog is open or dismissed
  } catch (error) {
    retryLater(error instanceof Error ? error.message : String(error));
    return;
  }
  open();
}

function open() {
  auth.setCookie();
  const ws = new WebSocket(wsUrl("api/chat"));
  socket.ws = ws;
  ws.onopen = () => {
    socket.delay = 500;
    setStatus("ok", "connected");
    clearBanner("connection");
    if (socket.waiting !== null) {
      ws.send(socket.waiting);
      socket.waiting = null;
    }
  };
  ws.onmessage = (event) => emit("socket-frame", String(event.data));
  ws.onclose = () => {
    if (ws !== socket.ws) return; // an old socket replaced on purpose (Stop)
    socket.ws = null;
    emit("socket-lost");
    retryLater("Connection to the server lost.");
  };
}

/**
 * Sends now, or once the socket is open (asking for the token again if it was dismissed).
 * @param {string} frame
 */
export function sendFrame(frame) {
  if (socket.ws !== null && socket.ws.readyState === WebSocket.OPEN) {
    socket.ws.send(frame);
    return;
  }
  socket.waiting = frame;
  if (tokenDismissed()) reopenTokenDialog();
}

/** Forgets a frame that was waiting for the socket (its answer was stopped before it was sent). */
export function dropWaitingFrame() {
  socket.waiting = null;
}

/** Closing the socket cancels the answer's gRPC call (and so the engine request); a new one opens. */
export function restartSocket() {
  const ws = socket.ws;
  socket.ws = null;
  if (ws) {
    ws.close(1000, "stopped by the user");
    open();
  }
}

/**
 * Connects, and reconnects whenever the connection is lost.
 * @param {() => Promise<void>} prepare runs before each connection (the page asks /api/info, which
 *   asks for the token when the server wants one); a failure is retried like a lost connection
 */
export function startConnection(prepare) {
  socket.prepare = prepare;
  on("token", (state) => {
    if (state === "dismissed") setStatus("down", "token needed");
    else if (state === "asking") setStatus("", "waiting for the token…");
    else setStatus("", "connecting…");
  });
  connect();
}
