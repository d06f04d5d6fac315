// Charts drawn from the API's numbers: PR curves (SVG) and the confusion matrix (a table).
import { el } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};
const COLOURS = ["#0a5cc2", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

export function iou(a, b) {
  const x1 = Math.max(a.left, b.left), y1 = Math.max(a.top, b.top);
  const x2 = Math.min(a.left + a.width, b.left + b.width), y2 = Math.min(a.top + a.height, b.top + b.height);
  const inter = Math.max(0, x2 - x1) * Math.max(0, y2 - y1);
  const union = a.width * a.height + b.width * b.height - inter;
  return union > 0 ? inter / union : 0;
}

// Scored hits per tag: [{score, hit}], plus how many true instances there are.
function scored(images, tag, detection, overlap) {
  const points = [];
  let positives = 0;
  for (const image of images) {
    const preds = image.predictions.filter((p) => p.tagName === tag);
    if (!detection) {
      const truth = (image.tags || []).some((t) => t.tagName === tag);
      if (truth) positives += 1;
      for (const p of preds) points.push({ score: p.probability, hit: truth });
      continue;
    }
    const truths = (image.regions || []).filter((r) => r.tagName === tag);
    positives += truths.length;
    const used = new Set();
    for (const p of [...preds].sort((a, b) => b.probability - a.probability)) {
      let best = -1, bestIou = overlap;
      truths.forEach((t, i) => { const v = iou(p.boundingBox, t); if (!used.has(i) && v >= bestIou) { best = i; bestIou = v; } });
      if (best >= 0) used.add(best);
      points.push({ score: p.probability, hit: best >= 0 });
    }
  }
  return { points: points.sort((a, b) => b.score - a.score), positives };
}

export function prCurves(images, tags, detection, overlap = 0.5) {
  return tags.map((tag) => {
    const { points, positives } = scored(images, tag, detection, overlap);
    let tp = 0, fp = 0;
    const curve = [{ recall: 0, precision: 1 }];
    for (const p of points) {
      if (p.hit) tp += 1; else fp += 1;
      curve.push({ recall: positives ? tp / positives : 0, precision: tp / (tp + fp), score: p.score });
    }
    return { tag, curve };
  });
}

export function prChart(curves, threshold) {
  const W = 360, H = 260, L = 40, B = 30, T = 10, R = 10;
  const x = (r) => L + r * (W - L - R), y = (p) => T + (1 - p) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Precision-recall curve per tag", id: "pr-curve", width: "100%" });
  root.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#ccc" }));
  for (const v of [0, 0.5, 1]) {
    const tx = svg("text", { x: x(v), y: H - 10, "font-size": 11, "text-anchor": "middle" }); tx.textContent = v; root.append(tx);
    const ty = svg("text", { x: L - 6, y: y(v) + 4, "font-size": 11, "text-anchor": "end" }); ty.textContent = v; root.append(ty);
  }
  const xl = svg("text", { x: (L + W) / 2, y: H, "font-size": 11, "text-anchor": "middle" }); xl.textContent = "recall"; root.append(xl);
  const yl = svg("text", { x: 10, y: (T + H - B) / 2, "font-size": 11, "text-anchor": "middle", transform: `rotate(-90 10 ${(T + H - B) / 2})` });
  yl.textContent = "precision"; root.append(yl);
  curves.forEach(({ curve }, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const d = curve.map((p, j) => `${j ? "L" : "M"}${x(p.recall).toFixed(1)},${y(p.precision).toFixed(1)}`).join(" ");
    root.append(svg("path", { d, fill: "none", stroke: colour, "stroke-width": 2 }));
    const at = [...curve].reverse().find((p) => p.score !== undefined && p.score >= threshold);
    if (at) root.append(svg("circle", { cx: x(at.recall), cy: y(at.precision), r: 4, fill: colour }));
  });
  const legend = el("p", { class: "row" }, curves.map(({ tag }, i) =>
    el("span", {}, el("span", { style: `display:inline-block;width:.8rem;height:.8rem;background:${COLOURS[i % COLOURS.length]}` }), ` ${tag}`)));
  return el("figure", {}, root, el("figcaption", {}, legend, el("span", { class: "muted" }, "Dots: the current probability threshold.")));
}

export function confusionTable(matrix) {
  if (!matrix || !matrix.labels) return el("p", { class: "muted" }, "No confusion matrix for this iteration.");
  const rows = matrix.rows_true_columns_predicted;
  const max = Math.max(1, ...rows.flat());
  return el("table", { class: "matrix", id: "confusion" },
    el("caption", { class: "muted" }, "Rows: true tag; columns: predicted tag"),
    el("thead", {}, el("tr", {}, el("th", {}, "true \\ predicted"), matrix.labels.map((l) => el("th", { scope: "col" }, l)))),
    el("tbody", {}, rows.map((row, i) => el("tr", {}, el("th", { scope: "row" }, matrix.labels[i]),
      row.map((v, j) => el("td", { style: `background:rgba(${i === j ? "21,128,61" : "185,28,28"},${(v / max) * 0.5})` }, v))))));
}

// Boxes (normalized) over an image, for quick test and evaluation results.
export function boxesOver(src, boxes, alt) {
  const wrap = el("div", { class: "stage" }, el("img", { src, alt }));
  for (const b of boxes) {
    const bb = b.boundingBox;
    wrap.append(el("div", { class: "pred-box", style: `left:${bb.left * 100}%;top:${bb.top * 100}%;width:${bb.width * 100}%;height:${bb.height * 100}%` },
      el("span", {}, `${b.tagName} ${(b.probability * 100).toFixed(0)}%`)));
  }
  return wrap;
}
