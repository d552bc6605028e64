// The page's WebSocket on api/chat. Before each (re)connection the HTTP API is asked first: a
// refused handshake looks like any lost connection to the browser, while an HTTP 401 opens the
// token dialog. Lost connections are retried with backoff; a frame sent while the socket is down
// waits for it.

import { auth, clearBanner, reopenTokenDialog, showBanner, tokenDismissed, wsUrl } from "./api.js";

const $ = (id) => document.getElementById(id);

const socket = {
  ws: null,
  delay: 500,
  timer: null,
  waiting: null, // a frame to send once the socket opens
  prepare: async () => {},
  onFrame: () => {},
  onLost: () => {},
};

function setStatus(state, text) {
  const element = $("conn-status");
  element.className = `conn ${state}`;
  element.textContent = text;
}

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
    retryLater(error.message);
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
  ws.onmessage = (event) => socket.onFrame(event.data);
  ws.onclose = () => {
    if (ws !== socket.ws) return; // an old socket replaced on purpose (Stop)
    socket.ws = null;
    socket.onLost();
    retryLater("Connection to the server lost.");
  };
}

export function isConnected() {
  return socket.ws !== null && socket.ws.readyState === WebSocket.OPEN;
}

/** Sends now, or once the socket is open (asking for the token again if it was dismissed). */
export function sendFrame(frame) {
  if (isConnected()) {
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

export function startConnection({ prepare, onFrame, onLost }) {
  Object.assign(socket, { prepare, onFrame, onLost });
  document.addEventListener("chatllm:token", (event) => {
    if (event.detail === "dismissed") setStatus("down", "token needed");
    else if (event.detail === "asking") setStatus("", "waiting for the token…");
    else setStatus("", "connecting…");
  });
  connect();
}
