// Sign-in: an API key (a person's role key) becomes an HttpOnly session cookie.
import { h, field, errorBox } from "../ui.js";

function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  // only a path of this site: never "//host" or "https://host" (no open redirect)
  return /^\/(?![/\\])/.test(next) ? next : "/";
}

export async function render(main) {
  document.title = "Sign in · Ringfence";
  const key = h("input", { type: "password", name: "key", id: "key", required: true, autocomplete: "current-password", spellcheck: "false" });
  const message = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", { class: "muted" }, "Use your personal API key. It is exchanged for a session cookie and never stored by the browser."),
    // password managers and the browser expect a user name beside a secret
    h("input", { type: "text", name: "username", autocomplete: "username", value: "api-key", hidden: true, "aria-hidden": "true", tabindex: "-1" }),
    field("API key", key),
    h("button", { type: "submit" }, "Sign in"),
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.replaceChildren();
    const response = await fetch("/v1/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ key: key.value.trim() }),
      credentials: "same-origin",
    });
    key.value = "";
    if (response.ok) {
      location.assign(nextPath());
      return;
    }
    const body = await response.json().catch(() => null);
    message.replaceChildren(errorBox(new Error(body && body.error ? body.error.message : `HTTP ${response.status}`)));
  });
  main.replaceChildren(form);
  key.focus();
}
