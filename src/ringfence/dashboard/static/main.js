// Boots a page: finds the view for the path, shows who is signed in, wires sign-out.
import { session, signOut, toSignIn } from "./api.js";
import { errorBox } from "./ui.js";

const VIEWS = [
  [/^\/$/, "alerts"],
  [/^\/alerts\/([^/]+)$/, "alert"],
  [/^\/customers(?:\/([^/]+))?$/, "customer"],
  [/^\/operations$/, "operations"],
  [/^\/rules$/, "rules"],
  [/^\/signin$/, "signin"],
];

async function boot() {
  const main = document.getElementById("main");
  const [name, param] = route(location.pathname);
  const view = await import(`./views/${name}.js`);
  if (name === "signin") {
    await view.render(main);
    return;
  }
  let who;
  try {
    who = await session();
  } catch {
    toSignIn();
    return;
  }
  document.getElementById("who-name").textContent = who.name;
  document.getElementById("who").hidden = false;
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.view === (name === "alert" ? "alerts" : name)) link.setAttribute("aria-current", "page");
  }
  document.getElementById("sign-out").addEventListener("click", signOut);
  try {
    await view.render(main, { session: who, param });
  } catch (error) {
    main.replaceChildren(errorBox(error));
  }
}

function route(path) {
  for (const [pattern, name] of VIEWS) {
    const match = pattern.exec(path);
    if (match) return [name, match[1] ? decodeURIComponent(match[1]) : null];
  }
  return ["alerts", null];
}

boot();
