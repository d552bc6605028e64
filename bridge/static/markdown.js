// @ts-check
// Model output as Markdown: rendered by marked, then sanitised by DOMPurify straight into DOM nodes
// (no HTML string of it reaches innerHTML), code blocks highlighted with a Copy button. A streamed
// answer is drawn incrementally (StreamedMarkdown).

import { copyButton } from "./copy.js";
import { el } from "./dom.js";
import { highlighter, markdownParser, purifier } from "./vendor.js";

// Model output is untrusted: only formatting tags survive (no images, media, forms or styles:
// nothing that runs or fetches anything).
const ALLOWED_TAGS = ["p", "br", "hr", "strong", "em", "b", "i", "del", "code", "pre", "blockquote", "ul", "ol",
  "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a", "span"];
const ALLOWED_ATTR = ["href", "title", "class"];
// The classes kept: a code block's `language-x` (it picks the highlighting) and highlight.js's own
// on spans (`hljs-title function_`).
const LANGUAGE_CLASS = /^language-([\w+#.-]{1,30})$/;
const HIGHLIGHT_CLASS = /^hljs-[\w-]+(?: [\w-]+)*$/;
let classCheckAdded = false;

/** @param {string} html */
function sanitize(html) {
  const purify = purifier();
  if (!classCheckAdded) {
    purify.addHook("uponSanitizeAttribute", (node, data) => {
      if (data.attrName !== "class") return;
      const pattern = { CODE: LANGUAGE_CLASS, SPAN: HIGHLIGHT_CLASS }[node.nodeName];
      data.keepAttr = pattern !== undefined && pattern.test(data.attrValue);
    });
    classCheckAdded = true;
  }
  return purify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR, RETURN_DOM_FRAGMENT: true });
}

/**
 * highlight.js's markup for a code block, or null to leave it plain.
 * @param {string} text
 * @param {string} language from the fence, "" when none
 * @param {boolean} final guessing the language is costly: only once the answer is complete
 */
function highlighted(text, language, final) {
  const hljs = highlighter();
  if (!hljs) return null;
  if (language) return hljs.getLanguage(language) ? hljs.highlight(text, { language, ignoreIllegals: true }).value : null;
  return final ? hljs.highlightAuto(text).value : null;
}

/**
 * @param {HTMLPreElement} pre
 * @param {boolean} final
 */
function decorateCodeBlock(pre, final) {
  const code = pre.querySelector("code");
  if (!code) return;
  const language = LANGUAGE_CLASS.exec(code.className)?.[1] || "";
  const text = code.textContent ?? "";
  const markup = highlighted(text, language, final);
  if (markup !== null) {
    code.replaceChildren(sanitize(markup)); // highlight.js escapes the text; sanitised all the same
    code.classList.add("hljs");
  }
  const block = el("div", { className: "code-block" });
  // Read when clicked: a streamed block's code element is updated in place.
  const copy = copyButton(() => block.querySelector("code")?.textContent ?? "", "copy-code");
  block.append(el("div", { className: "code-head" }, el("span", { textContent: language || "code" }), copy));
  pre.replaceWith(block);
  block.append(pre);
}

/**
 * @param {string} text Markdown
 * @param {boolean} final whether the answer is complete
 * @returns {DocumentFragment}
 */
function renderFragment(text, final) {
  const fragment = sanitize(markdownParser().parse(text));
  for (const link of fragment.querySelectorAll("a")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
  for (const pre of fragment.querySelectorAll("pre")) decorateCodeBlock(pre, final);
  return fragment;
}

/**
 * @param {HTMLElement} element its children become the rendered text
 * @param {string} text Markdown
 * @param {boolean} [final] whether the answer is complete
 */
export function renderMarkdown(element, text, final = true) {
  element.replaceChildren(renderFragment(text, final));
}

/**
 * How much of `text` (from its start) is blocks that no later text can change: every block of its
 * complete lines but the last. The last block can still grow, and a partial line can still change
 * what the block before it is (a table's header row was a paragraph until its delimiter row came).
 * @param {string} text
 */
function finishedLength(text) {
  const complete = text.slice(0, text.lastIndexOf("\n") + 1);
  let offset = 0;
  let lastStart = 0;
  let blocks = 0;
  for (const block of markdownParser().lexer(complete)) {
    if (block.type !== "space") {
      lastStart = offset;
      blocks += 1;
    }
    offset += block.raw.length;
  }
  if (offset !== complete.length) return 0; // the blocks do not add up to the text: draw it all each time
  return blocks >= 2 ? lastStart : 0;
}

/**
 * Makes `old` look like `node` (just rendered and sanitised), in place where it can: an element of
 * the same tag keeps its identity and takes the new attributes and children, a text node the new text.
 * @param {ChildNode} old
 * @param {ChildNode} node
 * @returns {boolean} false when `old` has to be replaced by `node`
 */
function updateNode(old, node) {
  if (old.isEqualNode(node)) return true;
  if (old instanceof Text && node instanceof Text) {
    old.data = node.data;
    return true;
  }
  if (!(old instanceof Element && node instanceof Element) || old.tagName !== node.tagName) return false;
  for (const { name } of [...old.attributes]) if (!node.hasAttribute(name)) old.removeAttribute(name);
  for (const { name, value } of node.attributes) if (old.getAttribute(name) !== value) old.setAttribute(name, value);
  updateNodes(old, [...old.childNodes], [...node.childNodes]);
  return true;
}

/**
 * Turns `present` (the last children of `parent`) into `wanted`, keeping every node that can stay.
 * @param {Node} parent
 * @param {ChildNode[]} present
 * @param {ChildNode[]} wanted
 * @returns {ChildNode[]} the nodes now in their place
 */
function updateNodes(parent, present, wanted) {
  const result = wanted.map((node, index) => {
    const old = present[index];
    if (old && updateNode(old, node)) return old;
    if (old) old.replaceWith(node);
    else parent.appendChild(node);
    return node;
  });
  for (const extra of present.slice(wanted.length)) extra.remove();
  return result;
}

/**
 * A streamed answer's Markdown, drawn as it grows. Finished blocks are rendered once and never
 * touched again; the unfinished tail is rendered again per frame and the page's nodes for it are
 * updated in place (so a growing list keeps its finished items, and a selection in them survives).
 * Each frame shows what rendering the whole text would (a link reference defined after its use
 * waits for the final render).
 */
export class StreamedMarkdown {
  /** @param {HTMLElement} element the answer's body: its children become the rendered answer */
  constructor(element) {
    this.element = element;
    this.finished = ""; // the Markdown of the blocks rendered for good
    /** @type {ChildNode[]} the nodes drawn for the rest */
    this.tail = [];
    element.replaceChildren();
  }

  /** @param {string} text the whole answer so far */
  update(text) {
    const source = text.replace(/\r\n?/g, "\n"); // as marked reads it: its blocks' offsets match
    if (!source.startsWith(this.finished)) {
      // Not an extension of what was drawn: start again.
      this.element.replaceChildren();
      this.finished = "";
      this.tail = [];
    }
    const rest = source.slice(this.finished.length);
    const cut = finishedLength(rest);
    const finishing = [...renderFragment(rest.slice(0, cut), false).childNodes];
    const unfinished = [...renderFragment(rest.slice(cut), false).childNodes];
    const drawn = updateNodes(this.element, this.tail, [...finishing, ...unfinished]);
    this.finished += rest.slice(0, cut);
    this.tail = drawn.slice(finishing.length);
  }
}
