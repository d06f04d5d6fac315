// An iteration's performance: figures at the sliders, per-tag table, PR curves, confusion matrix, wrong images.
import { api } from "../api.js";
import { confusionTable, iou, prChart, prCurves } from "../charts.js";
import { clear, el, guard, pct } from "../ui.js";
import { loadProject, projectHeader } from "./common.js";

function wrongImages(images, detection, threshold, overlap) {
  return images.filter((image) => {
    const above = image.predictions.filter((p) => p.probability >= threshold);
    if (!detection) {
      const truth = new Set((image.tags || []).map((t) => t.tagName));
      const predicted = new Set(above.map((p) => p.tagName));
      return truth.size !== predicted.size || [...truth].some((t) => !predicted.has(t));
    }
    const truths = image.regions || [];
    const used = new Set();
    let fp = 0;
    for (const p of above) {
      const i = truths.findIndex((t, k) => !used.has(k) && t.tagName === p.tagName && iou(p.boundingBox, t) >= overlap);
      if (i >= 0) used.add(i); else fp += 1;
    }
    return fp > 0 || used.size < truths.length;
  });
}

export async function renderPerformance(main, [projectId, iterationId]) {
  const ctx = await loadProject(projectId);
  const iteration = await api.iteration(projectId, iterationId);
  const detection = ctx.detection;
  const threshold = el("input", { type: "range", id: "threshold", min: 0, max: 1, step: 0.01, value: 0.5 });
  const overlap = el("input", { type: "range", id: "overlap", min: 0.05, max: 0.95, step: 0.05, value: 0.3 });
  const thresholdOut = el("output", { for: "threshold", id: "threshold-value" }, "50%");
  const overlapOut = el("output", { for: "overlap", id: "overlap-value" }, "30%");
  const figures = el("div", { class: "figures", id: "figures", "aria-live": "polite" });
  const tableBody = el("tbody");
  const chart = el("div", { id: "pr" });
  const matrix = el("div");
  const wrong = el("div", { class: "gallery", id: "wrong" });
  const note = el("p", { class: "muted", id: "evaluation-note" });
  let images = [];
  let timer = null;
  let ticket = 0;

  async function update() {
    const mine = ++ticket;
    const t = Number(threshold.value), o = Number(overlap.value);
    thresholdOut.textContent = pct(t).replace(".0%", "%");
    overlapOut.textContent = pct(o).replace(".0%", "%");
    const perf = await api.performance(projectId, iterationId, t, detection ? o : undefined);
    if (mine !== ticket) return;
    clear(figures,
      el("div", { class: "figure" }, "Precision", el("b", { id: "fig-precision" }, pct(perf.precision))),
      el("div", { class: "figure" }, "Recall", el("b", { id: "fig-recall" }, pct(perf.recall))),
      el("div", { class: "figure" }, detection ? "mAP" : "AP", el("b", { id: "fig-ap" }, pct(perf.averagePrecision))),
      perf.accuracy !== null && perf.accuracy !== undefined ? el("div", { class: "figure" }, "Accuracy", el("b", {}, pct(perf.accuracy))) : null);
    clear(tableBody, perf.perTagPerformance.map((tag) => el("tr", {}, el("th", { scope: "row" }, tag.name),
      el("td", { class: "num" }, pct(tag.precision)), el("td", { class: "num" }, pct(tag.recall)),
      el("td", { class: "num" }, pct(tag.averagePrecision)), el("td", { class: "num" }, tag.imageCount))));
    const ev = perf.evaluation || {};
    note.textContent = `Measured on ${ev.images ?? "?"} photo(s) the model did not train on${ev.method ? ` (${ev.method})` : ""}. ${ev.note || ""}`;
    clear(matrix, confusionTable(perf.confusionMatrix));
    const names = perf.perTagPerformance.map((tag) => tag.name);
    clear(chart, prChart(prCurves(images, names, detection, o), t));
    const bad = wrongImages(images, detection, t, o);
    clear(wrong, bad.length ? bad.slice(0, 60).map((im) => {
      const truth = [...new Set([...(im.tags || []), ...(im.regions || [])].map((x) => x.tagName))].join(", ") || "none";
      const said = im.predictions.filter((p) => p.probability >= t).slice(0, 3).map((p) => `${p.tagName} ${pct(p.probability)}`).join(", ") || "nothing";
      return el("figure", { class: "tile wrong" }, el("img", { src: im.thumbnailUri, alt: `Tagged ${truth}` }),
        el("figcaption", { class: "tags" }, `Tagged ${truth}; model said ${said}`));
    }) : [el("p", { class: "muted" }, "No mistakes at this threshold.")]);
  }
  const schedule = () => { clearTimeout(timer); timer = setTimeout(() => guard(update), 150); };
  threshold.addEventListener("input", schedule);
  overlap.addEventListener("input", schedule);

  for (let skip = 0; ; skip += 256) {
    const page = await api.performanceImages(projectId, iterationId, skip);
    images = images.concat(page);
    if (page.length < 256) break;
  }

  clear(main, ...projectHeader(ctx, "train", [[iteration.name]]),
    el("h2", {}, `Performance of ${iteration.name}`),
    el("p", { class: "row" }, el("a", { class: "button", href: `#/projects/${projectId}/quicktest?iteration=${iterationId}` }, "Quick test"),
      el("a", { class: "button", href: `#/projects/${projectId}/publish` }, "Publish & export")),
    el("div", { class: "card row" },
      el("label", { for: "threshold", class: "inline" }, "Probability threshold"), threshold, thresholdOut,
      detection ? [el("label", { for: "overlap", class: "inline" }, "Overlap threshold"), overlap, overlapOut] : null),
    figures, note,
    el("div", { class: "two" },
      el("section", { "aria-labelledby": "pertag" }, el("h2", { id: "pertag" }, "Per tag"),
        el("table", { id: "per-tag" }, el("thead", {}, el("tr", {}, el("th", {}, "Tag"), el("th", { class: "num" }, "Precision"),
          el("th", { class: "num" }, "Recall"), el("th", { class: "num" }, "AP"), el("th", { class: "num" }, "Images"))), tableBody)),
      el("section", { "aria-labelledby": "prh" }, el("h2", { id: "prh" }, "Precision-recall"), chart)),
    el("section", {}, el("h2", {}, "Confusion matrix"), matrix),
    el("section", {}, el("h2", {}, "Where the model was wrong"), wrong));
  await update();
  return () => clearTimeout(timer);
}
