// @ts-check
// Finding and building elements: the helpers every module of the page uses, so no module writes
// its own createElement / setAttribute sequences.

/**
 * The element with this id, checked: a missing element, or one of another kind, is a bug in the page.
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @param {new (...args: any[]) => T} [type] the element's class (HTMLInputElement, ...)
 * @returns {T}
 */
export function byId(id, type) {
  const element = document.getElementById(id);
  const kind = type ?? HTMLElement;
  if (!(element instanceof kind)) throw new Error(`the page has no ${kind.name} #${id}`);
  return /** @type {T} */ (element);
}

/**
 * A new element with these properties (className, textContent, type, title, ariaLabel, onclick...)
 * and children.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Partial<HTMLElementTagNameMap[K]>} [properties]
 * @param {...(Node | string)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, properties = {}, ...children) {
  const element = document.createElement(tag);
  Object.assign(element, properties);
  element.append(...children);
  return element;
}

/** @param {string} name one of style.css's `icon-*` masks */
export function icon(name) {
  return el("span", { className: `icon icon-${name}`, ariaHidden: "true" });
}

/**
 * @typedef {object} ButtonOptions
 * @property {string} [text] the visible words (in a span, so they can change: "Copied")
 * @property {string} [icon] an icon before the words
 * @property {string} [label] the accessible name and tooltip, for a button the icon alone explains
 * @property {string} [className]
 * @property {(event: MouseEvent) => void} onClick
 */

/** @param {ButtonOptions} options */
export function button({ text, icon: iconName, label, className, onClick }) {
  const element = el("button", { type: "button", onclick: onClick });
  if (className) element.className = className;
  if (label) Object.assign(element, { ariaLabel: label, title: label });
  if (iconName) element.append(icon(iconName));
  if (text) element.append(el("span", { textContent: text }));
  return element;
}

/**
 * A table row of plain cells.
 * @param {(string | Node)[]} cells
 */
export function tableRow(cells) {
  return el("tr", {}, ...cells.map((cell) => el("td", {}, cell)));
}

/**
 * @param {HTMLSelectElement} select
 * @param {string[]} values each option's value and text
 */
export function setOptions(select, values) {
  select.replaceChildren(...values.map((value) => new Option(value, value)));
}
