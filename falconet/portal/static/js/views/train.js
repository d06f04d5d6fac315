// Training: quick or advanced, progress while it runs (leave and come back), the iterations list.
import { api } from "../api.js";
import { clear, el, guard, when } from "../ui.js";
import { loadProject, projectHeader } from "./common.js";

export function progressText(it) {
  const p = it.progress || {};
  const steps = p.total ? ` (${p.step || 0} of ${p.total})` : "";
  return p.phase ? `${p.phase}${steps}` : "waiting for the worker";
}

function iterationRow(projectId, it, refresh) {
  const del = el("button", { type: "button", class: "danger", "aria-label": `Delete ${it.name}` }, "Delete");
  del.addEventListener("click", () => guard(async () => {
    if (!confirm(`Delete ${it.name}?`)) return;
    await api.deleteIteration(projectId, it.id);
    await refresh();
  }, del));
  const status = it.status === "Training" ? `Training: ${progressText(it)}`
    : it.status === "Failed" ? `Failed: ${it.trainingErrorDetails || "no details"}` : "Completed";
  return el("tr", { "data-iteration": it.name },
    el("td", {}, it.status === "Completed" ? el("a", { href: `#/projects/${projectId}/iterations/${it.id}` }, it.name) : it.name),
    el("td", { class: it.status === "Failed" ? "bad" : it.status === "Completed" ? "ok" : "warn" }, status),
    el("td", {}, it.trainingType === "Advanced" ? `Advanced (${it.reservedBudgetInHours} h)` : "Quick"),
    el("td", {}, when(it.trainedAt || it.created)), el("td", {}, it.publishName || ""), el("td", {}, del));
}

export async function renderTrain(main, [projectId], { alive }) {
  const ctx = await loadProject(projectId);
  const advanced = el("input", { type: "checkbox", id: "advanced" });
  const budget = el("input", { type: "number", id: "budget", min: 1, max: 96, value: 1, disabled: true });
  advanced.addEventListener("change", () => { budget.disabled = !advanced.checked; });
  const trainButton = el("button", { type: "button", class: "primary", id: "train" }, "Train");
  const live = el("div", { id: "training-status", role: "status", "aria-live": "polite" });
  const tbody = el("tbody");
  let timer = null;

  async function refresh() {
    const list = await api.iterations(projectId);
    clear(tbody, list.map((it) => iterationRow(projectId, it, refresh)));
    if (!list.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No iterations yet.")));
    const running = list.find((it) => it.status === "Training");
    if (running) {
      const p = running.progress || {};
      clear(live, el("p", {}, `${running.name} is training: ${progressText(running)}. You can leave this page and come back.`),
        el("progress", { max: p.total || 1, value: p.total ? p.step || 0 : undefined, "aria-label": "Training progress" }));
      trainButton.disabled = true;
      if (alive()) timer = setTimeout(() => guard(refresh), 1000);
    } else {
      trainButton.disabled = false;
      const last = list[0];
      if (last && last.status === "Completed") clear(live, el("p", { class: "ok" }, `${last.name} is trained. `,
        el("a", { href: `#/projects/${projectId}/iterations/${last.id}`, id: "open-performance" }, "See its performance")));
      else if (last && last.status === "Failed") clear(live, el("p", { class: "bad" }, `${last.name} failed: ${last.trainingErrorDetails || ""}`));
      else clear(live);
    }
  }
  trainButton.addEventListener("click", () => guard(async () => {
    const query = advanced.checked ? { trainingType: "Advanced", reservedBudgetInHours: budget.value } : { trainingType: "Regular" };
    await api.train(projectId, query);
    clearTimeout(timer);
    await refresh();
  }, trainButton));

  clear(main, ...projectHeader(ctx, "train"),
    el("section", { class: "card", "aria-labelledby": "train-title" }, el("h2", { id: "train-title" }, "Train a new iteration"),
      el("p", { class: "muted" }, "Quick training takes seconds to minutes. Advanced training uses the time budget you give it to fine-tune the whole network."),
      el("div", { class: "row" }, el("label", { class: "inline" }, advanced, "Advanced training"),
        el("label", { for: "budget", class: "inline" }, "Budget (hours)"), budget, trainButton), live),
    el("section", { "aria-labelledby": "its-title" }, el("h2", { id: "its-title" }, "Iterations"),
      el("table", { id: "iterations" }, el("thead", {}, el("tr", {}, ["Iteration", "Status", "Training", "Trained", "Published as", ""].map((h) => el("th", {}, h)))), tbody)));
  await refresh();
  return () => clearTimeout(timer);
}
