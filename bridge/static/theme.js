// @ts-check
// Dark mode. A classic script in <head>, so the theme is set before the first paint (no flash of
// the light page). It follows prefers-color-scheme until the user picks one with the toggle; the
// pick is remembered in localStorage.
(() => {
  const KEY = "chatllm.theme";
  const root = document.documentElement;
  const media = window.matchMedia("(prefers-color-scheme: dark)");
  /** @type {"dark" | "light" | null} once the user picked one */
  let choice = null;

  try {
    const value = localStorage.getItem(KEY);
    if (value === "dark" || value === "light") choice = value;
  } catch {
    // storage disabled: follow the system
  }

  function apply() {
    const theme = choice || (media.matches ? "dark" : "light");
    root.dataset.theme = theme;
    const button = document.getElementById("theme-toggle");
    if (button) {
      button.setAttribute("aria-pressed", String(theme === "dark"));
      button.title = theme === "dark" ? "Dark mode is on: switch to light" : "Switch to dark mode";
    }
  }

  function toggle() {
    choice = root.dataset.theme === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(KEY, choice);
    } catch {
      // applied for this page only
    }
    apply();
  }

  apply();
  media.addEventListener("change", apply);
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("theme-toggle")?.addEventListener("click", toggle);
    apply();
  });
})();
