// @ts-check
// The vendored libraries (classic scripts that index.html runs before the modules): the one place
// that reads their globals, typed with just what the page uses.

/**
 * A top-level block from marked's lexer; the blocks' `raw` texts concatenate to the source.
 * @typedef {{type: string, raw: string}} MarkdownBlock
 */

/**
 * marked, configured as the page renders every answer (GitHub-flavoured, single newlines kept).
 * @typedef {object} Markdown
 * @property {(source: string) => string} parse Markdown to HTML (not sanitised)
 * @property {(source: string) => MarkdownBlock[]} lexer
 */

/**
 * @typedef {{attrName: string, attrValue: string, keepAttr: boolean}} AttributeCheck
 */

/**
 * DOMPurify.
 * @typedef {object} Purifier
 * @property {(html: string, config: {ALLOWED_TAGS: string[], ALLOWED_ATTR: string[], RETURN_DOM_FRAGMENT: true}) => DocumentFragment} sanitize
 * @property {(hook: "uponSanitizeAttribute", check: (node: Element, data: AttributeCheck) => void) => void} addHook
 */

/**
 * highlight.js.
 * @typedef {object} Highlighter
 * @property {(name: string) => object | undefined} getLanguage
 * @property {(code: string, options: {language: string, ignoreIllegals: boolean}) => {value: string}} highlight
 * @property {(code: string) => {value: string}} highlightAuto
 */

/** @type {{marked: {Marked: new (options: object) => Markdown}, DOMPurify: Purifier, hljs?: Highlighter}} */
const vendored = /** @type {any} */ (window);

/** @type {Markdown | null} */
let markdown = null;

/** @returns {Markdown} */
export function markdownParser() {
  markdown ??= new vendored.marked.Marked({ gfm: true, breaks: true });
  return markdown;
}

/** @returns {Purifier} */
export function purifier() {
  return vendored.DOMPurify;
}

/** @returns {Highlighter | null} highlight.js, when it loaded */
export function highlighter() {
  return vendored.hljs ?? null;
}
