// Publish an iteration (prediction URL, key header, curl and Python snippets), unpublish, export and download.
import { api } from "../api.js";
import { clear, el, guard, showInfo, sleep } from "../ui.js";
import { readZipEntry } from "../zip.js";
import { latestCompleted, loadProject, projectHeader } from "./common.js";

export const EXPORTS = [
  ["ONNX", "", "ONNX (fp32)"], ["ONNX", "OnnxFloat16", "ONNX fp16"], ["ONNX", "OnnxInt8", "ONNX int8"],
  ["TensorFlow", "TensorFlowLite", "TensorFlow Lite"], ["TensorFlow", "TensorFlowLiteFloat16", "TensorFlow Lite fp16"],
  ["TensorFlow", "TensorFlowLiteInt8", "TensorFlow Lite int8"], ["OpenVino", "", "OpenVINO"], ["OpenVino", "OpenVinoFloat16", "OpenVINO fp16"],
  ["OpenVino", "OpenVinoInt8", "OpenVINO int8"], ["CoreML", "", "Core ML"],
  ["DockerFile", "Linux", "Docker build context (Linux)"], ["DockerFile", "ARM", "Docker build context (ARM, Raspberry Pi)"],
  ["DockerFile", "Jetson", "Docker build context (Jetson)"],
];

function snippets(projectId, it, detection) {
  const url = `${location.origin}/customvision/v3.1/prediction/${projectId}/${detection ? "detect" : "classify"}/iterations/${encodeURIComponent(it.publishName)}/image`;
  const curl = `curl -X POST "${url}" \\\n  -H "Prediction-Key: <your prediction key>" \\\n  -H "Content-Type: application/octet-stream" \\\n  --data-binary @photo.jpg`;
  const python = `import requests\n\nwith open("photo.jpg", "rb") as f:\n    r = requests.post(\n        "${url}",\n        headers={"Prediction-Key": "<your prediction key>",\n                 "Content-Type": "application/octet-stream"},\n        data=f.read())\nr.raise_for_status()\nfor p in r.json()["predictions"]:\n    print(p["tagName"], round(p["probability"], 3)${detection ? ', p["boundingBox"]' : ""})`;
  return el("div", { class: "card", "data-published": it.publishName },
    el("h3", {}, `${it.name} is published as “${it.publishName}”`),
    el("p", {}, "Prediction URL: ", el("code", { id: "prediction-url" }, url)),
    el("p", {}, "Send the key in the header ", el("code", {}, "Prediction-Key"), " (the prediction key the service was started with), the photo as the body. ",
      "For a photo's address, post JSON {\"url\": …} to the same path ending in /url."),
    el("h4", {}, "curl"), el("pre", { id: "curl-snippet" }, curl), el("h4", {}, "Python"), el("pre", { id: "python-snippet" }, python));
}

function parityView(manifest) {
  const exports = manifest.exports || {};
  const rows = Object.entries(exports).map(([name, entry]) => {
    const parity = entry.parity || {};
    const text = parity.measured === false ? `not measured: ${parity.reason || ""}`
      : Object.entries(parity).filter(([k, v]) => typeof v !== "object" && !["measured", "reference", "runtime"].includes(k))
        .map(([k, v]) => `${k.replaceAll("_", " ")}: ${typeof v === "number" ? Number(v.toPrecision(4)) : v}`).join(" · ");
    return el("tr", {}, el("th", { scope: "row" }, name), el("td", {}, parity.runtime || ""), el("td", {}, text));
  });
  return el("table", { class: "parity" }, el("caption", { class: "muted" }, "Parity with the trained model, from the download's manifest.json"),
    el("thead", {}, el("tr", {}, el("th", {}, "Format"), el("th", {}, "Measured in"), el("th", {}, "Figures"))), el("tbody", {}, rows));
}

export async function renderPublish(main, [projectId], { alive }) {
  const ctx = await loadProject(projectId);
  const header = projectHeader(ctx, "publish");
  const done = await latestCompleted(projectId);
  if (!done.length) {
    clear(main, ...header, el("p", {}, "Train an iteration first. ", el("a", { href: `#/projects/${projectId}/train` }, "Go to training")));
    return;
  }
  const published = el("div", { id: "published" });
  const pubIteration = el("select", { id: "publish-iteration" }, done.map((it) => el("option", { value: it.id }, it.name)));
  const pubName = el("input", { type: "text", id: "publish-name", value: "production" });
  const pubButton = el("button", { type: "button", class: "primary", id: "publish" }, "Publish");
  let polling = null;

  async function drawPublished() {
    const its = (await api.iterations(projectId)).filter((it) => it.publishName);
    clear(published, its.length ? its.map((it) => {
      const un = el("button", { type: "button", class: "danger", id: `unpublish-${it.publishName}` }, `Unpublish ${it.publishName}`);
      un.addEventListener("click", () => guard(async () => { await api.unpublish(projectId, it.id); showInfo(`${it.name} is no longer published.`); await drawPublished(); }, un));
      const card = snippets(projectId, it, ctx.detection);
      card.append(un);
      return card;
    }) : [el("p", { class: "muted" }, "Nothing is published yet.")]);
  }
  pubButton.addEventListener("click", () => guard(async () => {
    if (!pubName.value.trim()) throw new Error("Give the published model a name.");
    await api.publish(projectId, pubIteration.value, pubName.value.trim());
    showInfo(`Published as “${pubName.value.trim()}”.`);
    await drawPublished();
  }, pubButton));

  const expIteration = el("select", { id: "export-iteration" }, done.map((it) => el("option", { value: it.id }, it.name)));
  const format = el("select", { id: "export-format" }, EXPORTS.map(([p, f, text], i) => el("option", { value: i }, text)));
  const expButton = el("button", { type: "button", class: "primary", id: "export" }, "Export");
  const exportList = el("tbody", { id: "exports" });
  const parity = el("div", { id: "parity", "aria-live": "polite" });

  async function showParity(uri) {
    clear(parity, el("p", { class: "muted" }, "Reading the manifest of the download…"));
    const response = await fetch(uri);
    if (!response.ok) throw new Error("The export could not be downloaded to read its manifest.");
    const entry = await readZipEntry(await response.arrayBuffer(), (name) => name.split("/").pop() === "manifest.json");
    clear(parity, entry ? parityView(JSON.parse(entry.text)) : el("p", {}, "This download has no manifest.json."));
  }
  async function drawExports() {
    const list = await api.exports(projectId, expIteration.value);
    clear(exportList, list.map((x) => {
      const label = `${x.platform}${x.flavor ? ` ${x.flavor}` : ""}`;
      const parityButton = el("button", { type: "button", class: "link" }, "parity figures");
      parityButton.addEventListener("click", () => guard(() => showParity(x.downloadUri), parityButton));
      return el("tr", { "data-export": label }, el("td", {}, label),
        el("td", { class: x.status === "Failed" ? "bad" : x.status === "Done" ? "ok" : "warn" }, x.status === "Failed" ? `Failed: ${x.error || ""}` : x.status),
        el("td", {}, x.downloadUri ? [el("a", { href: x.downloadUri, download: "", class: "button" }, "Download"), " ", parityButton] : ""));
    }));
    if (!list.length) exportList.append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No exports of this iteration yet.")));
    const running = list.some((x) => x.status !== "Done" && x.status !== "Failed");
    if (running && alive()) polling = setTimeout(() => guard(drawExports), 1000);
    return list;
  }
  expIteration.addEventListener("change", () => guard(drawExports));
  expButton.addEventListener("click", () => guard(async () => {
    const [platform, flavor] = EXPORTS[Number(format.value)];
    const x = await api.exportIteration(projectId, expIteration.value, platform, flavor || undefined);
    clearTimeout(polling);
    await drawExports();
    if (x.status === "Done") await showParity(x.downloadUri);
    else {
      while (alive()) {
        await sleep(1000);
        const now = (await api.exports(projectId, expIteration.value)).find((e) => e.platform === platform && (e.flavor || "") === flavor);
        if (now && now.status === "Done") { await drawExports(); await showParity(now.downloadUri); break; }
        if (now && now.status === "Failed") { await drawExports(); break; }
      }
    }
  }, expButton));

  clear(main, ...header,
    el("section", { class: "card", "aria-labelledby": "pub-title" }, el("h2", { id: "pub-title" }, "Publish"),
      el("p", { class: "muted" }, "A published iteration answers on the Prediction API under its name, as the Custom Vision service did."),
      el("div", { class: "row" }, el("label", { for: "publish-iteration", class: "inline" }, "Iteration"), pubIteration,
        el("label", { for: "publish-name", class: "inline" }, "Name"), pubName, pubButton)),
    published,
    el("section", { class: "card", "aria-labelledby": "exp-title" }, el("h2", { id: "exp-title" }, "Export"),
      el("div", { class: "row" }, el("label", { for: "export-iteration", class: "inline" }, "Iteration"), expIteration,
        el("label", { for: "export-format", class: "inline" }, "Format"), format, expButton),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Export"), el("th", {}, "Status"), el("th", {}, ""))), exportList), parity));
  await Promise.all([drawPublished(), drawExports()]);
  return () => clearTimeout(polling);
}
