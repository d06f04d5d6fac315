// Quick test: a photo (file or URL) against any trained iteration; tags with probabilities or boxes.
import { api } from "../api.js";
import { boxesOver } from "../charts.js";
import { clear, el, guard, pct } from "../ui.js";
import { latestCompleted, loadProject, projectHeader } from "./common.js";

export async function renderQuickTest(main, [projectId], { query }) {
  const ctx = await loadProject(projectId);
  const done = await latestCompleted(projectId);
  const header = projectHeader(ctx, "quicktest");
  if (!done.length) {
    clear(main, ...header, el("p", {}, "Train an iteration first: quick test needs a trained model. ",
      el("a", { href: `#/projects/${projectId}/train` }, "Go to training")));
    return;
  }
  const iteration = el("select", { id: "qt-iteration" }, done.map((it) => el("option", { value: it.id }, it.name + (it.publishName ? ` (published as ${it.publishName})` : ""))));
  if (query.get("iteration")) iteration.value = query.get("iteration");
  const file = el("input", { type: "file", id: "qt-file", accept: "image/*" });
  const url = el("input", { type: "url", id: "qt-url", placeholder: "https://…/photo.jpg" });
  const urlButton = el("button", { type: "button", id: "qt-url-go" }, "Test URL");
  const threshold = el("input", { type: "range", id: "qt-threshold", min: 0, max: 1, step: 0.01, value: 0.5 });
  const thresholdOut = el("output", { for: "qt-threshold" }, "50%");
  const result = el("section", { id: "qt-result", "aria-live": "polite" });
  let last = null;

  function show() {
    if (!last) return;
    const { body, src } = last;
    const t = Number(threshold.value);
    thresholdOut.textContent = `${Math.round(t * 100)}%`;
    if (ctx.detection) {
      const all = body.predictions.filter((p) => p.boundingBox);
      const boxes = all.filter((p) => p.probability >= t).slice(0, 50);
      const best = all.length ? Math.max(...all.map((p) => p.probability)) : 0;
      const summary = boxes.length ? `${boxes.length} object(s) found at ${Math.round(t * 100)}% or more${boxes.length === 50 ? " (the 50 most confident shown)" : ""}.`
        : `No object at ${Math.round(t * 100)}% or more; the most confident box scores ${pct(best)}. Lower the threshold to see it.`;
      clear(result, el("p", { id: "qt-summary" }, summary),
        boxesOver(src, boxes, "Tested photo with the boxes found"),
        el("ul", {}, boxes.map((b) => el("li", {}, `${b.tagName}: ${pct(b.probability)}`))));
    } else {
      clear(result, el("div", { class: "row" }, el("img", { src, alt: "Tested photo", style: "max-width:240px;border-radius:6px" }),
        el("table", { id: "qt-tags" }, el("thead", {}, el("tr", {}, el("th", {}, "Tag"), el("th", { class: "num" }, "Probability"), el("th", {}, ""))),
          el("tbody", {}, body.predictions.map((p) => el("tr", {}, el("td", {}, p.tagName), el("td", { class: "num" }, pct(p.probability)),
            el("td", { style: "width:10rem" }, el("div", { class: "bar", style: `width:${p.probability * 100}%` }))))))));
    }
  }
  threshold.addEventListener("input", show);
  file.addEventListener("change", () => guard(async () => {
    const chosen = file.files[0];
    if (!chosen) return;
    clear(result, el("p", { class: "muted" }, "Testing…"));
    const body = await api.quickTestImage(projectId, iteration.value, chosen).catch((err) => { clear(result); throw err; });
    last = { body, src: URL.createObjectURL(chosen) };
    show();
  }));
  urlButton.addEventListener("click", () => guard(async () => {
    if (!url.value.trim()) throw new Error("Type the address of a photo first.");
    clear(result, el("p", { class: "muted" }, "Testing…"));
    const body = await api.quickTestUrl(projectId, iteration.value, url.value.trim()).catch((err) => { clear(result); throw err; });
    last = { body, src: url.value.trim() };
    show();
  }, urlButton));

  clear(main, ...header,
    el("section", { class: "card" }, el("h2", {}, "Quick test"),
      el("label", { for: "qt-iteration" }, "Iteration"), iteration,
      el("label", { for: "qt-file" }, "Photo from this computer"), file,
      el("label", { for: "qt-url" }, "Or a photo's web address"), el("div", { class: "row" }, url, urlButton),
      ctx.detection ? el("div", { class: "row" }, el("label", { for: "qt-threshold", class: "inline" }, "Show boxes from"), threshold, thresholdOut) : null,
      el("p", { class: "muted" }, "Quick tests are not stored and do not change the training set.")),
    result);
}
