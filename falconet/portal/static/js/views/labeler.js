// The detection labelling page: one photo, its boxes in a BoxEditor, tags per box, save and move on.
import { api } from "../api.js";
import { BoxEditor } from "../boxeditor.js";
import { clear, el, guard, showInfo } from "../ui.js";
import { loadProject, projectHeader } from "./common.js";

const near = (a, b) => Math.abs(a - b) < 1e-6;
const same = (a, b) => a.tagId === b.tagId && near(a.left, b.left) && near(a.top, b.top) && near(a.width, b.width) && near(a.height, b.height);

export async function saveBoxes(projectId, image, boxes) {
  const before = image.regions || [];
  const kept = new Set();
  const added = [];
  for (const box of boxes) {
    if (!box.tagId) throw new Error("Every box needs a tag: pick one in the list beside the photo.");
    const match = before.find((r) => !kept.has(r.regionId) && same(r, box));
    if (match) kept.add(match.regionId);
    else added.push({ imageId: image.id, tagId: box.tagId, left: box.left, top: box.top, width: box.width, height: box.height });
  }
  const removed = before.filter((r) => !kept.has(r.regionId)).map((r) => r.regionId);
  if (removed.length) await api.deleteRegions(projectId, removed);
  if (added.length) await api.addRegions(projectId, added);
  return { added: added.length, removed: removed.length };
}

// The project's photos in upload order, for previous / next (pages of 256, as the API gives them).
async function allImages(projectId) {
  let list = [];
  for (let skip = 0; skip < 10000; skip += 256) {
    const page = await api.images(projectId, { take: 256, skip, orderBy: "Oldest" });
    list = list.concat(page);
    if (page.length < 256) break;
  }
  return list;
}

export async function renderLabeler(main, [projectId, imageId]) {
  const ctx = await loadProject(projectId);
  const [list, [image]] = await Promise.all([allImages(projectId), api.imagesById(projectId, [imageId])]);
  if (!image) throw new Error("This photo is no longer in the project.");
  const ids = list.map((i) => i.id);
  const index = ids.indexOf(imageId);
  const go = (step) => ids.length && `#/projects/${projectId}/label/${ids[(index + step + ids.length) % ids.length]}`;
  const tagName = (id) => (ctx.tags.find((t) => t.id === id) || {}).name || "";

  const defaultTag = el("select", { id: "default-tag" }, ctx.tags.map((t) => el("option", { value: t.id }, t.name)));
  const newTag = el("input", { type: "text", id: "new-box-tag", placeholder: "New tag name" });
  const addTag = el("button", { type: "button" }, "Add tag");
  const boxList = el("ol", { id: "box-list" });
  const state = el("p", { role: "status", id: "save-state", class: "muted" });
  const stage = el("div", { class: "stage", id: "stage" }, el("img", { src: image.resizedImageUri || image.originalImageUri, alt: "Photo to label", draggable: "false" }));
  let dirty = false;

  const editor = new BoxEditor(stage, {
    boxes: (image.regions || []).map((r) => ({ tagId: r.tagId, left: r.left, top: r.top, width: r.width, height: r.height })),
    tagName, defaultTag: () => defaultTag.value,
    onChange: () => { dirty = true; state.textContent = "Unsaved changes"; drawList(); },
    onSelect: () => drawList(),
  });
  function drawList() {
    clear(boxList, editor.boxes.map((b, i) => {
      const select = el("select", { "aria-label": `Tag of box ${i + 1}`, "data-box": i },
        el("option", { value: "" }, "choose a tag"), ctx.tags.map((t) => el("option", { value: t.id, selected: t.id === b.tagId }, t.name)));
      select.addEventListener("change", () => editor.setTag(i, select.value));
      const del = el("button", { type: "button", "aria-label": `Delete box ${i + 1}` }, "Delete");
      del.addEventListener("click", () => editor.remove(i));
      const pick = el("button", { type: "button", class: "link" }, `Box ${i + 1}`);
      pick.addEventListener("click", () => { editor.select(i); editor.render(); stage.focus(); });
      return el("li", { class: i === editor.selected ? "selected" : "" }, el("div", { class: "row" }, pick, select, del));
    }));
    if (!editor.boxes.length) boxList.append(el("li", { class: "muted" }, "No boxes yet: drag on the photo to draw one."));
  }
  drawList();

  addTag.addEventListener("click", () => guard(async () => {
    if (!newTag.value.trim()) throw new Error("Type the new tag's name first.");
    const tag = await api.createTag(projectId, newTag.value.trim());
    ctx.tags.push(tag);
    defaultTag.append(el("option", { value: tag.id }, tag.name));
    defaultTag.value = tag.id;
    newTag.value = "";
    drawList();
  }, addTag));

  async function save() {
    const result = await saveBoxes(projectId, image, editor.boxes);
    const [fresh] = await api.imagesById(projectId, [imageId]);
    image.regions = fresh.regions;
    dirty = false;
    state.textContent = `Saved (${editor.boxes.length} box${editor.boxes.length === 1 ? "" : "es"}).`;
    return result;
  }
  const saveButton = el("button", { type: "button", class: "primary", id: "save-boxes" }, "Save");
  saveButton.addEventListener("click", () => guard(save, saveButton));
  const nextButton = el("button", { type: "button", id: "save-next" }, "Save and next ›");
  nextButton.addEventListener("click", () => guard(async () => { if (dirty) await save(); location.hash = go(1); }, nextButton));
  const prev = el("a", { href: go(-1), class: "button" }, "‹ Previous");
  const propose = el("button", { type: "button", id: "propose" }, "Suggest boxes");
  propose.addEventListener("click", () => guard(async () => {
    let found;
    try { found = await api.regionProposals(projectId, imageId); }
    catch (err) {
      if (err.status === 404 && err.code !== "NotFound") throw new Error("This service does not offer region proposals.");
      throw err;
    }
    const proposals = Array.isArray(found) ? found : (found.proposals || []);
    editor.setProposals(proposals.slice(0, 10));
    showInfo(proposals.length ? `${proposals.length} suggested box(es), drawn dashed: click one to accept it with the chosen tag, or accept all.`
      : "No suggestions for this photo (suggestions come from the newest trained iteration).");
  }, propose));
  const addBox = el("button", { type: "button", id: "add-box" }, "Add a box");
  addBox.addEventListener("click", () => { editor.addBox(); stage.focus(); });
  const acceptAll = el("button", { type: "button" }, "Accept all suggestions");
  acceptAll.addEventListener("click", () => { while (editor.proposals.length) editor.acceptProposal(0); });

  const onKey = (e) => {
    if (e.target.matches("input, select, textarea")) return;
    if (e.key === "PageDown" || (e.key === "n" && !e.ctrlKey)) nextButton.click();
    if (e.key === "PageUp" || (e.key === "p" && !e.ctrlKey)) location.hash = go(-1);
    if (e.key === "s" && !e.ctrlKey) saveButton.click();
  };
  document.addEventListener("keydown", onKey);

  clear(main, ...projectHeader(ctx, "images", [[`Photo ${index + 1} of ${ids.length}`]]),
    el("div", { class: "editor" },
      el("div", {}, stage, el("p", { class: "muted" }, "Drag on the photo to draw a box; drag a box to move it, its corners to resize it. "
        + "Keys (on the photo): + adds a box, Delete removes the selected one, arrows move it, Alt + arrows resize it, [ and ] pick a box; "
        + "n / PageDown saves and goes to the next photo, p the previous, s saves.")),
      el("aside", { class: "card", "aria-label": "Boxes" },
        el("label", { for: "default-tag" }, "Tag for new boxes"), defaultTag,
        el("div", { class: "row" }, el("label", { for: "new-box-tag", class: "sr-only" }, "New tag"), newTag, addTag),
        el("h2", {}, "Boxes"), boxList, addBox, state,
        el("div", { class: "row" }, saveButton, nextButton, prev),
        el("div", { class: "row" }, propose, acceptAll))));
  stage.focus();
  return () => { editor.destroy(); document.removeEventListener("keydown", onKey); };
}
