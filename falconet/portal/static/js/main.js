// The portal's entry point: key prompt, hash router and breadcrumbs.
import { api, key } from "./api.js";
import { clear, clearNotice, el, showError } from "./ui.js";
import { renderProjects } from "./views/projects.js";
import { renderImages } from "./views/images.js";
import { renderLabeler } from "./views/labeler.js";
import { renderTrain } from "./views/train.js";
import { renderPerformance } from "./views/performance.js";
import { renderQuickTest } from "./views/quicktest.js";
import { renderPredictions } from "./views/predictions.js";
import { renderPublish } from "./views/publish.js";

const ROUTES = [
  [/^\/?$/, renderProjects],
  [/^\/projects\/([^/]+)\/?$/, renderImages],
  [/^\/projects\/([^/]+)\/images$/, renderImages],
  [/^\/projects\/([^/]+)\/label\/([^/]+)$/, renderLabeler],
  [/^\/projects\/([^/]+)\/train$/, renderTrain],
  [/^\/projects\/([^/]+)\/iterations\/([^/]+)$/, renderPerformance],
  [/^\/projects\/([^/]+)\/quicktest$/, renderQuickTest],
  [/^\/projects\/([^/]+)\/predictions$/, renderPredictions],
  [/^\/projects\/([^/]+)\/publish$/, renderPublish],
];

let about = null;
let cleanup = null;
let generation = 0;

export function setCrumbs(...items) {
  const nav = document.getElementById("crumbs");
  clear(nav, el("a", { href: "#/" }, "Projects"),
    items.map(([text, href]) => el("span", {}, href ? el("a", { href }, text) : text)));
}

function keyPrompt(main, message) {
  document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();  // the hash is the router's: focus the content instead of navigating
  document.getElementById("main").focus();
});
document.getElementById("signout").hidden = true;
  const input = el("input", { type: "password", id: "training-key", autocomplete: "off", required: true });
  const form = el("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    key.set(input.value.trim());
    try { await api.projects(); clearNotice(); route(); }
    catch (err) { key.clear(); showError(err); input.focus(); }
  } },
  el("h1", {}, "Sign in to this Falconet service"),
  el("p", {}, message || "This service asks for its training key. It is kept for this browser session only."),
  el("label", { for: "training-key" }, "Training key"), input,
  el("p", {}, el("button", { class: "primary", type: "submit" }, "Continue")));
  clear(main, form);
  input.focus();
}

async function route() {
  const main = document.getElementById("main");
  if (cleanup) { try { cleanup(); } catch { /* view already gone */ } cleanup = null; }
  const mine = ++generation;
  clearNotice();
  try {
    if (!about) about = await api.about();
    if (about.trainingKeyRequired && !key.get()) { keyPrompt(main); return; }
    document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();  // the hash is the router's: focus the content instead of navigating
  document.getElementById("main").focus();
});
document.getElementById("signout").hidden = !about.trainingKeyRequired;
    const [path, search] = (decodeURIComponent(location.hash.replace(/^#/, "")) || "/").split("?");
    const found = ROUTES.find(([pattern]) => pattern.test(path));
    if (!found) { clear(main, el("h1", {}, "Page not found"), el("p", {}, el("a", { href: "#/" }, "Back to the projects"))); return; }
    const params = path.match(found[0]).slice(1);
    clear(main, el("p", { class: "muted" }, "Loading…"));
    const done = await found[1](main, params, { about, query: new URLSearchParams(search || ""), alive: () => mine === generation });
    if (mine === generation) cleanup = typeof done === "function" ? done : null;
    else if (typeof done === "function") done();
  } catch (err) {
    if (err && err.status === 401) { key.clear(); keyPrompt(main, err.message); return; }
    showError(err);
    if (main.textContent.trim() === "Loading…") clear(main, el("p", {}, el("a", { href: "#/" }, "Back to the projects")));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("falconet:unauthorized", () => { key.clear(); });
window.addEventListener("unhandledrejection", (event) => showError(event.reason));
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();  // the hash is the router's: focus the content instead of navigating
  document.getElementById("main").focus();
});
document.getElementById("signout").addEventListener("click", () => { key.clear(); route(); });
route();
