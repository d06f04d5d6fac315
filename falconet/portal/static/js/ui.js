// Small DOM helpers shared by every view.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

const notice = () => document.getElementById("notice");

export function showError(err) {
  const box = notice();
  box.className = "";
  box.textContent = err && err.message ? err.message : String(err);
  if (err && !err.code) console.error(err);
}

export function showInfo(text) {
  const box = notice();
  box.className = "info";
  box.textContent = text;
}

export function clearNotice() { notice().textContent = ""; }

// Runs an action, showing an API error in words instead of failing silently.
export async function guard(action, button) {
  if (button) button.disabled = true;
  try { return await action(); }
  catch (err) { showError(err); return undefined; }
  finally { if (button) button.disabled = false; }
}

export const pct = (value) => (value === null || value === undefined || Number.isNaN(value) ? "–" : `${(value * 100).toFixed(1)}%`);

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

// The upload statuses of an ImageCreateSummary, in plain words.
export const UPLOAD_WORDS = {
  OK: "accepted",
  OKDuplicate: "duplicate: already in the project",
  ErrorSource: "could not be read from its source",
  ErrorImageFormat: "not an image (or a format that is not accepted: use JPEG, PNG, BMP or GIF)",
  ErrorImageSize: "too large (the limit is 6 MB)",
  ErrorImageDimensions: "too small, too large or too narrow in pixels",
  ErrorStorage: "could not be stored; try again",
  ErrorLimitExceed: "the project holds as many images as it may",
  ErrorTagLimitExceed: "too many tags on this image",
  ErrorRegionLimitExceed: "too many boxes on this image",
  ErrorUnknown: "refused for an unknown reason",
  ErrorNegativeAndRegularTagOnSameImage: "cannot be Negative and carry a tag at the same time",
  ErrorInvalidTag: "a tag given with it does not exist",
  ErrorImageNotFound: "no longer exists",
};

export const uploadWords = (status) => UPLOAD_WORDS[status] || status;

export function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function tabs(projectId, current, detection) {
  const items = [["images", "Images"], ["train", "Train & iterations"], ["quicktest", "Quick test"],
    ["predictions", "Predictions"], ["publish", "Publish & export"]];
  return el("nav", { class: "tabs", "aria-label": "Project sections" },
    items.map(([slug, text]) => el("a", { href: `#/projects/${projectId}/${slug}`, "aria-current": slug === current ? "page" : null }, text)));
}
