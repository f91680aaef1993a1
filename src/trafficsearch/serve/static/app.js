// trafficsearch web page: query the /search API, show a thumbnail grid, enlarge on click,
// and save the results in the competition submission format. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const input = $("q");
const kindSelect = $("kind");
const kInput = $("k");
const rerankBox = $("rerank");
const goButton = $("go");
const downloadButton = $("download");
const grid = $("results");
const errorBox = $("error");
const summary = $("summary");
const emptyNote = $("empty");
const viewer = $("viewer");
const viewerImg = $("viewer-img");
const viewerCaption = $("viewer-caption");

let lastResult = null; // {text, hits}
let inFlight = null;   // AbortController of the running request

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.textContent = "";
  errorBox.hidden = true;
}

async function loadStatus() {
  try {
    const response = await fetch("healthz");
    const health = await response.json();
    const count = health.count == null ? "?" : health.count.toLocaleString();
    $("status").textContent = `${count} images · ${health.model || "unknown model"}`;
  } catch (err) {
    $("status").textContent = "service unreachable";
  }
}

// Turn an API error body into one readable line.
async function errorMessage(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (err) {
    detail = response.statusText;
  }
  return `Error ${response.status}: ${detail || "request failed"}`;
}

function renderHits(hits) {
  grid.replaceChildren();
  hits.forEach((hit, rank) => {
    const item = document.createElement("li");
    item.className = `card ${hit.kind}`;

    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.title = `Enlarge ${hit.name}`;
    const img = document.createElement("img");
    img.src = hit.thumb_url;
    img.alt = hit.name;
    img.loading = "lazy";
    img.decoding = "async";
    button.append(img);
    button.addEventListener("click", () => openViewer(hit, rank + 1));

    const meta = document.createElement("div");
    meta.className = "meta";
    const rankEl = document.createElement("span");
    rankEl.className = "rank";
    rankEl.textContent = `#${rank + 1}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = hit.name;
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = hit.kind;
    meta.append(rankEl, score, name, kind);

    item.append(button, meta);
    grid.append(item);
  });
}

function openViewer(hit, rank) {
  viewerImg.src = hit.image_url;
  viewerImg.alt = hit.name;
  viewerCaption.textContent = `#${rank}  ${hit.name}  ·  ${hit.kind}  ·  score ${hit.score.toFixed(4)}`;
  if (typeof viewer.showModal === "function") viewer.showModal();
  else viewer.setAttribute("open", "");
}

async function search() {
  clearError();
  const text = input.value;
  if (!text.trim()) {
    showError("Type a description first.");
    return;
  }
  const k = Number.parseInt(kInput.value, 10);
  const body = { text, k: Number.isFinite(k) ? k : 10, kind: kindSelect.value || null, rerank: rerankBox.checked };

  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  goButton.disabled = true;
  summary.textContent = "Searching…";
  try {
    const response = await fetch("search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      showError(await errorMessage(response));
      summary.textContent = "";
      return;
    }
    const result = await response.json();
    lastResult = { text: result.text, hits: result.hits };
    renderHits(result.hits);
    emptyNote.hidden = result.hits.length > 0;
    if (!result.hits.length) emptyNote.textContent = "No images match this filter.";
    downloadButton.disabled = result.hits.length === 0;
    summary.textContent =
      `${result.hits.length} result${result.hits.length === 1 ? "" : "s"} in ${result.took_ms.toFixed(1)} ms` +
      (result.rerank ? " · re-ranked" : "");
    const params = new URLSearchParams({ q: text, k: String(body.k) });
    if (body.kind) params.set("kind", body.kind);
    if (body.rerank) params.set("rerank", "1");
    history.replaceState(null, "", `?${params}`);
  } catch (err) {
    if (err.name === "AbortError") return;
    showError(`Could not reach the search service: ${err.message}`);
    summary.textContent = "";
  } finally {
    if (inFlight === controller) {
      inFlight = null;
      goButton.disabled = false;
    }
  }
}

function downloadResults() {
  if (!lastResult) return;
  const submission = { results: [{ text: lastResult.text, image_names: lastResult.hits.map((h) => h.name) }] };
  const blob = new Blob([JSON.stringify(submission, null, 2) + "\n"], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "results.json";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
downloadButton.addEventListener("click", downloadResults);
viewer.addEventListener("click", (event) => {
  if (event.target === viewer) viewer.close(); // click on the backdrop closes
});

// Restore a shared link: ?q=...&k=...&kind=...&rerank=1
(function restoreFromUrl() {
  const params = new URLSearchParams(location.search);
  if (params.has("k")) kInput.value = params.get("k");
  if (params.has("kind")) kindSelect.value = params.get("kind");
  rerankBox.checked = params.get("rerank") === "1";
  if (params.get("q")) {
    input.value = params.get("q");
    search();
  }
})();
loadStatus();
