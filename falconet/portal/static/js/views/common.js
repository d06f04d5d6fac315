// What every project page needs: the project, its tags, the domain catalogue, a header and tabs.
import { api, isDetection } from "../api.js";
import { setCrumbs } from "../main.js";
import { el, tabs } from "../ui.js";

let domainCache = null;
export async function domains() {
  if (!domainCache) domainCache = await api.domains();
  return domainCache;
}

export async function loadProject(projectId) {
  const [project, tags, all] = await Promise.all([api.project(projectId), api.tags(projectId), domains()]);
  const domain = all.find((d) => d.id === project.settings.domainId);
  return { project, tags, domain, detection: isDetection(project, all) };
}

export function projectHeader(ctx, current, extraCrumbs = []) {
  const { project, domain, detection } = ctx;
  setCrumbs([project.name, `#/projects/${project.id}/images`], ...extraCrumbs);
  const type = detection ? "Object detection" : project.settings.classificationType === "Multilabel"
    ? "Classification (multilabel)" : "Classification (multiclass)";
  return [
    el("h1", {}, project.name),
    el("p", { class: "muted" }, `${type} · ${domain ? domain.name : project.settings.domainId}`,
      project.description ? ` · ${project.description}` : ""),
    tabs(project.id, current, detection),
  ];
}

export function tagSelect(tags, { id, label, includeEmpty = "—" } = {}) {
  const select = el("select", { id }, includeEmpty ? el("option", { value: "" }, includeEmpty) : null,
    tags.map((t) => el("option", { value: t.id }, t.name)));
  return label ? [el("label", { for: id }, label), select] : select;
}

export async function latestCompleted(projectId) {
  const list = await api.iterations(projectId);
  return list.filter((i) => i.status === "Completed");
}
