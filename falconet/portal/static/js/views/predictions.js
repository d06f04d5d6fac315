// Stored predictions (add them to the training set with corrected tags) and the smart labeler.
import { api } from "../api.js";
import { clear, el, guard, pct, showInfo, uploadWords, when } from "../ui.js";
import { latestCompleted, loadProject, projectHeader } from "./common.js";

const BOX_MIN = 0.5;

function tagPicker(tags, chosen, label) {
  return el("select", { "aria-label": label }, el("option", { value: "" }, "— skip —"),
    tags.map((t) => el("option", { value: t.id, selected: t.id === chosen }, t.name)));
}

async function storedSection(ctx) {
  const projectId = ctx.project.id;
  const list = el("div", { class: "gallery", id: "stored" });
  const order = el("select", { id: "stored-order" }, ["Newest", "Oldest", "Suggested"].map((o) => el("option", { value: o }, o === "Suggested" ? "Most uncertain first" : o)));
  const add = el("button", { type: "button", class: "primary", id: "stored-add" }, "Add chosen to the training set");
  const result = el("p", { role: "status" });
  let rows = [];

  async function load() {
    const found = await api.queryPredictions(projectId, { orderBy: order.value, maxCount: 60 });
    rows = found.results.map((r) => {
      const top = r.predictions[0];
      const picker = tagPicker(ctx.tags, ctx.detection ? (top ? top.tagId : "") : "", `Tag for prediction ${r.id.slice(0, 8)}`);
      const said = ctx.detection ? `${r.predictions.filter((p) => p.probability >= BOX_MIN).length} box(es) at ${BOX_MIN * 100}%+`
        : r.predictions.slice(0, 2).map((p) => `${p.tagName} ${pct(p.probability)}`).join(", ");
      return { r, picker, node: el("div", { class: "tile" }, el("img", { src: r.thumbnailUri, alt: `Prediction from ${when(r.created)}` }),
        el("div", { class: "tags" }, said), el("label", { class: "sr-only" }, "Tag"), picker) };
    });
    clear(list, rows.length ? rows.map((x) => x.node) : [el("p", { class: "muted" }, "No stored predictions yet: photos sent to a published iteration (without /nostore) appear here.")]);
  }
  order.addEventListener("change", () => guard(load));
  add.addEventListener("click", () => guard(async () => {
    const chosen = rows.filter((x) => x.picker.value);
    if (!chosen.length) throw new Error("Choose a tag for at least one photo.");
    const images = chosen.map(({ r, picker }) => ctx.detection
      ? { id: r.id, regions: r.predictions.filter((p) => p.probability >= BOX_MIN && p.boundingBox).map((p) => ({ tagId: picker.value, ...p.boundingBox })) }
      : { id: r.id, tagIds: [picker.value] });
    const summary = await api.addFromPredictions(projectId, images);
    const words = summary.images.map((i) => uploadWords(i.status));
    result.textContent = `Added ${words.filter((w) => w === "accepted").length} of ${images.length}: ${[...new Set(words)].join(", ")}.`;
    await api.deletePredictions(projectId, chosen.map((x) => x.r.id)).catch(() => {});
    await load();
  }, add));
  await load();
  return el("section", { class: "card", "aria-labelledby": "stored-title" }, el("h2", { id: "stored-title" }, "Stored predictions"),
    el("div", { class: "row" }, el("label", { for: "stored-order", class: "inline" }, "Order"), order, add), result, list);
}

async function smartSection(ctx, done) {
  const projectId = ctx.project.id;
  const iteration = el("select", { id: "smart-iteration" }, done.map((it) => el("option", { value: it.id }, it.name)));
  const go = el("button", { type: "button", id: "smart-go" }, "Suggest tags for untagged photos");
  const confirmButton = el("button", { type: "button", class: "primary", id: "smart-confirm", disabled: true }, "Confirm checked suggestions");
  const body = el("tbody");
  let rows = [];
  go.addEventListener("click", () => guard(async () => {
    const untagged = await api.images(projectId, { taggingStatus: "Untagged", take: 64 });
    if (!untagged.length) { clear(body, el("tr", {}, el("td", { colspan: 4 }, "Every photo is tagged."))); return; }
    const thumbs = Object.fromEntries(untagged.map((i) => [i.id, i.thumbnailUri]));
    const found = await api.suggestions(projectId, iteration.value, untagged.map((i) => i.id));
    rows = found.map((s) => {
      const top = s.predictions[0];
      const check = el("input", { type: "checkbox", checked: true, "aria-label": `Confirm suggestion for ${s.id.slice(0, 8)}` });
      const picker = tagPicker(ctx.tags, top ? top.tagId : "", `Suggested tag for ${s.id.slice(0, 8)}`);
      const boxes = s.predictions.filter((p) => p.boundingBox && p.probability >= BOX_MIN);
      return { s, check, picker, boxes, node: el("tr", {}, el("td", {}, check), el("td", {}, el("img", { src: thumbs[s.id], alt: "", width: 64 })),
        el("td", {}, picker, ctx.detection ? ` ${boxes.length} box(es)` : ` ${top ? pct(top.probability) : ""}`),
        el("td", { class: "num" }, pct(s.predictionUncertainty))) };
    });
    clear(body, rows.map((r) => r.node));
    confirmButton.disabled = false;
  }, go));
  confirmButton.addEventListener("click", () => guard(async () => {
    const chosen = rows.filter((r) => r.check.checked && r.picker.value);
    if (ctx.detection) {
      const regions = chosen.flatMap((r) => r.boxes.map((b) => ({ imageId: r.s.id, tagId: r.picker.value, ...b.boundingBox })));
      if (regions.length) await api.addRegions(projectId, regions);
    } else {
      const pairs = chosen.map((r) => ({ imageId: r.s.id, tagId: r.picker.value }));
      for (let i = 0; i < pairs.length; i += 64) await api.tagImages(projectId, pairs.slice(i, i + 64));
    }
    showInfo(`Confirmed ${chosen.length} suggestion(s).`);
    clear(body); rows = []; confirmButton.disabled = true;
  }, confirmButton));
  return el("section", { class: "card", "aria-labelledby": "smart-title" }, el("h2", { id: "smart-title" }, "Smart labeler"),
    el("p", { class: "muted" }, "Suggestions from a trained iteration for untagged photos, most uncertain first: check, correct and confirm them in bulk."),
    el("div", { class: "row" }, el("label", { for: "smart-iteration", class: "inline" }, "Iteration"), iteration, go, confirmButton),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Confirm"), el("th", {}, "Photo"), el("th", {}, "Suggested tag"), el("th", { class: "num" }, "Uncertainty"))), body));
}

export async function renderPredictions(main, [projectId]) {
  const ctx = await loadProject(projectId);
  const done = await latestCompleted(projectId);
  const sections = [await storedSection(ctx)];
  if (done.length) sections.push(await smartSection(ctx, done));
  clear(main, ...projectHeader(ctx, "predictions"), ...sections);
}
