// @ts-check
// Copying to the clipboard, and the Copy buttons of answers and code blocks.

import { button, el } from "./dom.js";

/**
 * Copies text; falls back to execCommand where the Clipboard API is missing (plain http).
 * @param {string} text
 * @returns {Promise<boolean>} whether it was copied
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // denied: try the old way
    }
  }
  const area = el("textarea", { value: text, readOnly: true });
  Object.assign(area.style, { position: "fixed", opacity: "0" });
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

/**
 * A Copy button that says for a moment whether it worked.
 * @param {() => string} textToCopy read when clicked
 * @param {string} className
 */
export function copyButton(textToCopy, className) {
  const label = "Copy";
  const element = button({
    text: label,
    icon: "copy",
    className,
    onClick: async () => {
      const copied = await copyText(textToCopy());
      const words = /** @type {HTMLElement} */ (element.lastElementChild);
      words.textContent = copied ? "Copied" : "Copy failed";
      setTimeout(() => {
        words.textContent = label;
      }, 1500);
    },
  });
  return element;
}
