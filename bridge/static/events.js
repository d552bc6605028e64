// @ts-check
// How the page's modules tell each other what happened: one typed event bus. A module emits what
// happened (the user picked a model, a frame arrived); the modules that care listen. Calls go the
// other way only from a module to one it imports (render this, send that).

/**
 * Every event and its detail.
 * @typedef {{
 *   "token": "asking" | "dismissed" | "saved",
 *   "model-chosen": string,
 *   "knowledge-base-chosen": string,
 *   "socket-frame": string,
 *   "socket-lost": undefined,
 *   "question-send": string,
 *   "answer-stop": undefined,
 *   "conversation-new": undefined,
 *   "conversation-open": string,
 *   "conversation-rename": {id: string, title: string},
 *   "conversation-delete": string,
 *   "conversation-export": {id: string, format: "md" | "json"},
 *   "question-edit": HTMLElement,
 *   "question-resend": string,
 *   "question-edit-cancel": undefined,
 *   "answer-regenerate": undefined,
 * }} PageEvents
 */

/** @typedef {keyof PageEvents} PageEvent */

const bus = new EventTarget();

/**
 * Tells every listener of `name`; an event without a detail takes none.
 * @type {<K extends PageEvent>(name: K, ...detail: PageEvents[K] extends undefined ? [] : [PageEvents[K]]) => void}
 */
export const emit = (name, ...detail) => {
  bus.dispatchEvent(new CustomEvent(name, { detail: detail[0] }));
};

/**
 * @template {PageEvent} K
 * @param {K} name
 * @param {(detail: PageEvents[K]) => void} listener
 */
export function on(name, listener) {
  bus.addEventListener(name, (event) => listener(/** @type {CustomEvent<PageEvents[K]>} */ (event).detail));
}
