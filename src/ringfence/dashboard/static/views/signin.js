// Sign-in: an API key (a person's role key) becomes an HttpOnly session cookie.
import { h, field, errorBox } from "../ui.js";

// The pages sign-in may return to (as the server's safe_next): a path of RFC 3986 characters
// only. Browsers drop tab, CR and LF from URLs and read "\\" as "/", so "/\t/evil.example"
// or "/\\evil.example" would leave the site; neither can pass this.
const PAGE = /^\/(?:alerts\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+|customers(?:\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)?|operations|rules)?$/;

function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  if (!PAGE.test(next)) return "/";
  const url = new URL(next, location.origin);  // and, belt and braces, this origin only
  return url.origin === location.origin ? url.pathname : "/";
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
