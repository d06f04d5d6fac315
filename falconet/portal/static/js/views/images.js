// The project page: upload (drop or picker) with tags, the gallery with filters, multi-select actions.
import { api } from "../api.js";
import { clear, el, fileToBase64, guard, showInfo, uploadWords } from "../ui.js";
import { loadProject, projectHeader } from "./common.js";

const BATCH = 8;
const PAGE = 120;

export async function uploadFiles(projectId, files, tagIds, onProgress) {
  const results = [];
  for (let start = 0; start < files.length; start += BATCH) {
    const chunk = files.slice(start, start + BATCH);
    const images = await Promise.all(chunk.map(async (file) => ({ name: file.name, contents: await fileToBase64(file), tagIds })));
    const summary = await api.uploadFiles(projectId, images);
    summary.images.forEach((entry, i) => results.push({ name: chunk[i].name, status: entry.status, image: entry.image }));
    onProgress(Math.min(start + BATCH, files.length), files.length, results);
  }
  return results;
}

function uploader(ctx, refresh) {
  const { project } = ctx;
  const input = el("input", { type: "file", id: "upload-files", multiple: true, accept: "image/*,.jpg,.jpeg,.png,.bmp,.gif" });
  const checks = el("div", { class: "row", id: "upload-tags" });
  const fillChecks = () => clear(checks, ctx.tags.map((t) => el("label", { class: "inline" },
    el("input", { type: "checkbox", value: t.id, name: "upload-tag" }), t.name)));
  fillChecks();
  const tagBox = el("fieldset", {}, el("legend", {}, "Tags for these photos"),
    ctx.detection ? el("p", { class: "muted" }, "Object detection: draw boxes after uploading (open a photo from the gallery).") : null,
    ctx.detection ? null : checks,
    ctx.detection ? null : el("div", {}, el("label", { for: "upload-new-tag" }, "New tag for these photos (optional)"),
      el("input", { type: "text", id: "upload-new-tag", placeholder: "e.g. hemlock" })));
  const bar = el("progress", { id: "upload-progress", max: 1, value: 0, hidden: true, "aria-label": "Upload progress" });
  const status = el("p", { id: "upload-status", role: "status" });
  const list = el("ul", { class: "results", id: "upload-results", "aria-label": "Upload results" });

  async function send(files) {
    if (!files.length) return;
    await guard(async () => {
      const chosen = [...tagBox.querySelectorAll("input[name=upload-tag]:checked")].map((c) => c.value);
      const fresh = tagBox.querySelector("#upload-new-tag");
      if (fresh && fresh.value.trim()) {
        const existing = ctx.tags.find((t) => t.name.toLowerCase() === fresh.value.trim().toLowerCase());
        chosen.push(existing ? existing.id : (await api.createTag(project.id, fresh.value.trim())).id);
      }
      bar.hidden = false; bar.max = files.length; bar.value = 0;
      clear(list);
      status.textContent = `Uploading ${files.length} file(s)…`;
      const results = await uploadFiles(project.id, files, chosen, (done, total) => {
        bar.value = done; status.textContent = `Uploaded ${done} of ${total}…`;
      });
      clear(list, results.map((r) => el("li", { class: r.status.startsWith("OK") ? "ok" : "bad", "data-status": r.status },
        `${r.name}: ${uploadWords(r.status)}`)));
      const accepted = results.filter((r) => r.status === "OK").length;
      status.textContent = `Done: ${accepted} accepted, ${results.length - accepted} not added.`;
      input.value = "";
      if (fresh) fresh.value = "";
      await refresh();
      fillChecks();
    });
  }
  input.addEventListener("change", () => send([...input.files]));
  const zone = el("div", { class: "dropzone", id: "dropzone" },
    el("p", {}, "Drop photos here, or "),
    el("label", { for: "upload-files", class: "button" }, "Choose photos…"), input);
  input.classList.add("sr-only");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); send([...e.dataTransfer.files]); });
  return el("section", { class: "card", "aria-labelledby": "upload-title" }, el("h2", { id: "upload-title" }, "Add photos"),
    tagBox, zone, bar, status, list);
}

function tile(image, ctx, selected, onToggle) {
  const names = [...(image.tags || []).map((t) => t.tagName), ...(image.regions || []).map((r) => r.tagName)];
  const unique = [...new Set(names)];
  const check = el("input", { type: "checkbox", class: "check", checked: selected.has(image.id), "aria-label": `Select image ${image.id.slice(0, 8)}` });
  const node = el("div", { class: "tile" + (selected.has(image.id) ? " selected" : ""), "data-image": image.id },
    el("img", { src: image.thumbnailUri, alt: unique.length ? `Photo tagged ${unique.join(", ")}` : "Untagged photo", loading: "lazy" }),
    check,
    ctx.detection ? el("a", { class: "open", href: `#/projects/${ctx.project.id}/label/${image.id}` }, "Label") : null,
    el("div", { class: "tags" }, unique.length ? `${unique.join(", ")}${image.regions ? ` (${image.regions.length} box${image.regions.length > 1 ? "es" : ""})` : ""}` : "untagged"));
  check.addEventListener("change", () => onToggle(image.id, check.checked, node));
  return node;
}

function dangerZone(ctx) {
  const button = el("button", { type: "button", class: "danger", id: "delete-project" }, "Delete this project");
  button.addEventListener("click", () => guard(async () => {
    if (!confirm(`Delete the project “${ctx.project.name}” with all its photos and iterations? This cannot be undone.`)) return;
    await api.deleteProject(ctx.project.id);
    location.hash = "#/";
  }, button));
  return el("section", { class: "card", "aria-labelledby": "danger-title" }, el("h2", { id: "danger-title" }, "Project"),
    el("p", { class: "muted" }, "Deleting a project removes its photos, tags, iterations and exports."), button);
}

export async function renderImages(main, [projectId]) {
  const ctx = await loadProject(projectId);
  const selected = new Set();
  const gallery = el("div", { class: "gallery", id: "gallery" });
  const count = el("span", { class: "muted", id: "gallery-count" });
  const filter = el("select", { id: "gallery-filter" }, el("option", { value: "all" }, "All photos"),
    el("option", { value: "untagged" }, "Untagged"), ctx.tags.map((t) => el("option", { value: t.id }, `Tag: ${t.name} (${t.imageCount})`)));
  const more = el("button", { type: "button", hidden: true }, "Show more");
  const selCount = el("span", { id: "selection-count" }, "0 selected");
  const bulkTag = el("select", { id: "bulk-tag" }, el("option", { value: "" }, "Choose a tag…"), ctx.tags.map((t) => el("option", { value: t.id }, t.name)));
  const bulkNew = el("input", { type: "text", id: "bulk-new-tag", placeholder: "or a new tag" });
  let loaded = 0;

  const onToggle = (id, on, node) => {
    if (on) selected.add(id); else selected.delete(id);
    node.classList.toggle("selected", on);
    selCount.textContent = `${selected.size} selected`;
  };
  async function load(reset) {
    if (reset) { loaded = 0; clear(gallery); selected.clear(); selCount.textContent = "0 selected"; }
    const query = { take: PAGE, skip: loaded };
    const f = filter.value;
    if (f === "untagged") query.taggingStatus = "Untagged";
    else if (f !== "all") query.tagIds = f;
    const [images, total] = await Promise.all([api.images(projectId, query),
      api.imageCount(projectId, f === "untagged" ? { taggingStatus: "Untagged" } : f === "all" ? {} : { tagIds: f })]);
    loaded += images.length;
    gallery.append(...images.map((im) => tile(im, ctx, selected, onToggle)));
    count.textContent = `${total} photo(s)`;
    more.hidden = loaded >= total;
    if (!total) gallery.append(el("p", { class: "muted" }, "No photos here yet."));
  }
  const fillTagLists = () => {
    const keep = filter.value;
    clear(filter, el("option", { value: "all" }, "All photos"), el("option", { value: "untagged" }, "Untagged"),
      ctx.tags.map((t) => el("option", { value: t.id }, `Tag: ${t.name} (${t.imageCount})`)));
    filter.value = [...filter.options].some((o) => o.value === keep) ? keep : "all";
    clear(bulkTag, el("option", { value: "" }, "Choose a tag…"), ctx.tags.map((t) => el("option", { value: t.id }, t.name)));
  };
  const reloadAll = async () => {
    ctx.tags = await api.tags(projectId);
    fillTagLists();
    bulkNew.value = "";
    await load(true);
  };
  filter.addEventListener("change", () => guard(() => load(true)));
  more.addEventListener("click", () => guard(() => load(false), more));

  const tagButton = el("button", { type: "button", id: "bulk-apply" }, "Tag selected");
  tagButton.addEventListener("click", () => guard(async () => {
    if (!selected.size) throw new Error("Select some photos first.");
    let tagId = bulkTag.value;
    if (bulkNew.value.trim()) tagId = (await api.createTag(projectId, bulkNew.value.trim())).id;
    if (!tagId) throw new Error("Choose a tag (or type a new one) to put on the selected photos.");
    const ids = [...selected];
    for (let i = 0; i < ids.length; i += 64) await api.tagImages(projectId, ids.slice(i, i + 64).map((imageId) => ({ imageId, tagId })));
    showInfo(`Tagged ${ids.length} photo(s).`);
    await reloadAll();
  }, tagButton));
  const untagButton = el("button", { type: "button" }, "Remove tag from selected");
  untagButton.addEventListener("click", () => guard(async () => {
    if (!selected.size || !bulkTag.value) throw new Error("Select photos and choose the tag to remove.");
    await api.untagImages(projectId, [...selected], [bulkTag.value]);
    await reloadAll();
  }, untagButton));
  const deleteButton = el("button", { type: "button", class: "danger", id: "bulk-delete" }, "Delete selected");
  deleteButton.addEventListener("click", () => guard(async () => {
    if (!selected.size) throw new Error("Select some photos first.");
    if (!confirm(`Delete ${selected.size} photo(s) from the project?`)) return;
    const ids = [...selected];
    for (let i = 0; i < ids.length; i += 256) await api.deleteImages(projectId, ids.slice(i, i + 256));
    showInfo(`Deleted ${ids.length} photo(s).`);
    await reloadAll();
  }, deleteButton));
  const selectAll = el("button", { type: "button" }, "Select all shown");
  selectAll.addEventListener("click", () => gallery.querySelectorAll(".tile").forEach((node) => {
    const box = node.querySelector(".check"); box.checked = true; onToggle(node.dataset.image, true, node);
  }));

  clear(main, ...projectHeader(ctx, "images"), uploader(ctx, reloadAll),
    el("section", { "aria-labelledby": "gallery-title" },
      el("div", { class: "row spread" }, el("h2", { id: "gallery-title" }, "Photos"), count),
      el("div", { class: "toolbar row" }, el("label", { for: "gallery-filter", class: "inline" }, "Show"), filter, selectAll, selCount,
        ctx.detection ? null : [el("label", { for: "bulk-tag", class: "sr-only" }, "Tag"), bulkTag,
          el("label", { for: "bulk-new-tag", class: "sr-only" }, "New tag"), bulkNew, tagButton, untagButton],
        deleteButton),
      gallery, more),
    dangerZone(ctx));
  await load(true);
}
