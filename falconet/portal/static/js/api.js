// The Training API client: every call the portal makes goes through here (no private back door).
const TRAINING = "/customvision/v3.3/training";
const KEY_NAME = "falconet.trainingKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (value) => sessionStorage.setItem(KEY_NAME, value),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

// Plain words for the API's error codes where its own message is not enough.
const CODE_WORDS = {
  Unauthorized: "The training key was refused. Enter the key the service was started with.",
  BadRequestIterationIsNotTrained: "This iteration has not finished training.",
  BadRequestTrainingAlreadyInProgress: "The project is already training; wait for it to finish.",
  BadRequestTrainingNotNeeded: "Nothing changed since the last training, so there is nothing new to train.",
};

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

export async function request(method, path, { query, body, raw, contentType, allowPartial } = {}) {
  const url = new URL(path.startsWith("/") && !path.startsWith(TRAINING) && !path.startsWith("/falconet") ? TRAINING + path : path,
    location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = {};
  const stored = key.get();
  if (stored) headers["Training-Key"] = stored;
  let payload;
  if (raw !== undefined) { payload = raw; headers["Content-Type"] = contentType || "application/octet-stream"; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, "Network", "The Falconet service could not be reached. Is it still running?");
  }
  const data = await parse(response);
  if (response.ok || (allowPartial && response.status === 207)) return data;
  const code = (data && data.code) || `HTTP${response.status}`;
  const message = CODE_WORDS[code] || (data && data.message) || `The service answered ${response.status} ${response.statusText}.`;
  if (response.status === 401) window.dispatchEvent(new CustomEvent("falconet:unauthorized"));
  throw new ApiError(response.status, code, message);
}

const get = (path, query) => request("GET", path, { query });
const P = (projectId) => `/projects/${encodeURIComponent(projectId)}`;

export const api = {
  about: () => request("GET", "/falconet/about"),
  domains: () => get("/domains"),
  projects: () => get("/projects"),
  project: (id) => get(P(id)),
  createProject: (query) => request("POST", "/projects", { query }),
  deleteProject: (id) => request("DELETE", P(id)),
  tags: (id) => get(`${P(id)}/tags`),
  createTag: (id, name) => request("POST", `${P(id)}/tags`, { query: { name } }),
  images: (id, query) => get(`${P(id)}/images`, query),
  imageCount: (id, query) => get(`${P(id)}/images/count`, query),
  imagesById: (id, ids) => get(`${P(id)}/images/id`, { imageIds: ids.join(",") }),
  uploadFiles: (id, images) => request("POST", `${P(id)}/images/files`, { body: { images }, allowPartial: true }),
  deleteImages: (id, ids) => request("DELETE", `${P(id)}/images`, { query: { imageIds: ids.join(",") } }),
  tagImages: (id, pairs) => request("POST", `${P(id)}/images/tags`, { body: { tags: pairs } }),
  untagImages: (id, imageIds, tagIds) => request("DELETE", `${P(id)}/images/tags`,
    { query: { imageIds: imageIds.join(","), tagIds: tagIds.join(",") } }),
  addRegions: (id, regions) => request("POST", `${P(id)}/images/regions`, { body: { regions }, allowPartial: true }),
  deleteRegions: (id, regionIds) => request("DELETE", `${P(id)}/images/regions`, { query: { regionIds: regionIds.join(",") } }),
  regionProposals: (id, imageId) => request("POST", `${P(id)}/images/${encodeURIComponent(imageId)}/regionproposals`),
  train: (id, query) => request("POST", `${P(id)}/train`, { query }),
  iterations: (id) => get(`${P(id)}/iterations`),
  iteration: (id, it) => get(`${P(id)}/iterations/${it}`),
  deleteIteration: (id, it) => request("DELETE", `${P(id)}/iterations/${it}`),
  performance: (id, it, threshold, overlapThreshold) =>
    get(`${P(id)}/iterations/${it}/performance`, { threshold, overlapThreshold }),
  performanceImages: (id, it, skip = 0) => get(`${P(id)}/iterations/${it}/performance/images`, { take: 256, skip }),
  quickTestImage: (id, it, blob) => request("POST", `${P(id)}/quicktest/image`,
    { query: { iterationId: it, store: "false" }, raw: blob }),
  quickTestUrl: (id, it, url) => request("POST", `${P(id)}/quicktest/url`,
    { query: { iterationId: it, store: "false" }, body: { url } }),
  publish: (id, it, publishName) => request("POST", `${P(id)}/iterations/${it}/publish`,
    { query: { publishName, predictionId: "local" } }),
  unpublish: (id, it) => request("DELETE", `${P(id)}/iterations/${it}/publish`),
  exports: (id, it) => get(`${P(id)}/iterations/${it}/export`),
  exportIteration: (id, it, platform, flavor) => request("POST", `${P(id)}/iterations/${it}/export`,
    { query: { platform, flavor } }),
  queryPredictions: (id, token) => request("POST", `${P(id)}/predictions/query`, { body: token }),
  deletePredictions: (id, ids) => request("DELETE", `${P(id)}/predictions`, { query: { ids: ids.join(",") } }),
  addFromPredictions: (id, images) => request("POST", `${P(id)}/images/predictions`, { body: { images }, allowPartial: true }),
  suggestions: (id, it, imageIds) => request("POST", `${P(id)}/tagsandregions/suggestions`,
    { query: { iterationId: it, imageIds: imageIds.join(",") } }),
};

export const isDetection = (project, domains) => {
  const domain = (domains || []).find((d) => d.id === project.settings.domainId);
  return domain ? domain.type === "ObjectDetection" : false;
};
