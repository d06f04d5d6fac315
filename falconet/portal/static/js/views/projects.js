// The projects list and the create-project form.
import { api } from "../api.js";
import { setCrumbs } from "../main.js";
import { clear, el, guard, when } from "../ui.js";
import { domains } from "./common.js";

const TYPES = [
  ["Multiclass", "Classification: one tag per image (multiclass)"],
  ["Multilabel", "Classification: several tags per image (multilabel)"],
  ["ObjectDetection", "Object detection: boxes around objects"],
];

async function projectCard(project, all) {
  const domain = all.find((d) => d.id === project.settings.domainId);
  let last = "not trained yet";
  try {
    const its = await api.iterations(project.id);
    if (its.length) last = `${its[0].name}: ${its[0].status}`;
  } catch { last = "iterations unavailable"; }
  const type = domain && domain.type === "ObjectDetection" ? "Object detection" : `Classification (${project.settings.classificationType || "Multiclass"})`;
  return el("a", { class: "card project-card", href: `#/projects/${project.id}/images`, "data-project": project.name },
    project.thumbnailUri ? el("img", { src: project.thumbnailUri, alt: "" }) : el("div", { class: "thumb-empty", "aria-hidden": "true" }),
    el("div", {}, el("strong", {}, project.name), el("div", { class: "muted" }, type),
      el("div", { class: "muted" }, domain ? domain.name : ""), el("div", { class: "muted" }, `Last iteration: ${last}`),
      el("div", { class: "muted" }, `Created ${when(project.created)}`)));
}

function createForm(all) {
  const desc = el("p", { class: "muted", id: "domain-help" });
  const domainSelect = el("select", { id: "project-domain", "aria-describedby": "domain-help" });
  const typeSelect = el("select", { id: "project-type" }, TYPES.map(([v, t]) => el("option", { value: v }, t)));
  const fillDomains = () => {
    const wanted = typeSelect.value === "ObjectDetection" ? "ObjectDetection" : "Classification";
    clear(domainSelect, all.filter((d) => d.type === wanted && d.enabled !== false)
      .map((d) => el("option", { value: d.id }, d.name + (d.exportable ? "" : " (not exportable)"))));
    showDesc();
  };
  const showDesc = () => {
    const d = all.find((x) => x.id === domainSelect.value);
    desc.textContent = d && d.modelInformation ? d.modelInformation.description : "";
  };
  typeSelect.addEventListener("change", fillDomains);
  domainSelect.addEventListener("change", showDesc);
  const name = el("input", { type: "text", id: "project-name", required: true, maxlength: 256 });
  const description = el("textarea", { id: "project-description" });
  const submit = el("button", { class: "primary", type: "submit" }, "Create project");
  const form = el("form", { class: "card", "aria-labelledby": "create-title", onsubmit: (event) => {
    event.preventDefault();
    guard(async () => {
      const type = typeSelect.value;
      const project = await api.createProject({ name: name.value.trim(), description: description.value,
        domainId: domainSelect.value, classificationType: type === "ObjectDetection" ? undefined : type });
      location.hash = `#/projects/${project.id}/images`;
    }, submit);
  } },
  el("h2", { id: "create-title" }, "New project"),
  el("label", { for: "project-name" }, "Name"), name,
  el("label", { for: "project-description" }, "Description"), description,
  el("label", { for: "project-type" }, "Project type"), typeSelect,
  el("label", { for: "project-domain" }, "Domain"), domainSelect, desc,
  submit);
  fillDomains();
  return form;
}

export async function renderProjects(main) {
  setCrumbs();
  const [projects, all] = await Promise.all([api.projects(), domains()]);
  const cards = await Promise.all(projects.map((p) => projectCard(p, all)));
  clear(main, el("h1", {}, "Projects"),
    cards.length ? el("div", { class: "grid", id: "project-list" }, cards)
      : el("p", { class: "muted" }, "No projects yet. Create one below: give it a name, pick its type, and upload photos."),
    createForm(all));
}
