// trafficsearch web page: search by text, by an example image or "similar" to a result; shows what the
// query was understood as (click an attribute to boost it, the kind to filter on it); camera/time filters,
// paging (pushState: Back steps through searches), a keyboard viewer, exports. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const input = $("q");
const kindSelect = $("kind");
const kInput = $("k");
const rerankBox = $("rerank");
const goButton = $("go");
const grid = $("results");
const errorBox = $("error");
const summary = $("summary");
const emptyNote = $("empty");
const viewer = $("viewer");
const viewerImg = $("viewer-img");
const viewerCaption = $("viewer-caption");
const tokenInput = $("token");

let serverRerank = false;   // the service's default (healthz): re-rank when the index has a re-ranker
let rerankTouched = false;  // the analyst set the box (or a link did): the default no longer applies
let state = blankState();   // the current search: what history entries hold
let lastResult = null;      // the API's answer to `state`
let inFlight = null;        // AbortController of the running request
let viewerIndex = -1;

function blankState() {
  return { text: "", image: null, imageName: "", imageId: null, k: 10, offset: 0, kind: "", rerank: serverRerank,
           camera: "", timeFrom: "", timeTo: "", boost: [] };
}

// -- token: sessionStorage only, sent as a bearer header -------------------------------------------------
tokenInput.value = sessionStorage.getItem("trafficsearch-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("trafficsearch-token", tokenInput.value.trim());
  rerankBox.addEventListener("change", () => { rerankTouched = true; });
loadStatus();
});
function authHeaders(extra = {}) {
  const token = tokenInput.value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function showError(message) { errorBox.textContent = message; errorBox.hidden = false; }
function clearError() { errorBox.textContent = ""; errorBox.hidden = true; }

async function loadStatus() {
  try {
    const response = await fetch("healthz", { headers: authHeaders() });
    if (response.status === 401) { $("status").textContent = "token needed"; return; }
    const health = await response.json();
    const count = health.count == null ? "?" : health.count.toLocaleString();
    $("status").textContent = `${count} images · ${health.model || "unknown model"}`;
    serverRerank = Boolean(health.rerank_default);
    if (!rerankTouched) { state.rerank = serverRerank; rerankBox.checked = serverRerank; }
  } catch (err) {
    $("status").textContent = "service unreachable";
  }
}

// Every error body is {"detail": [{"loc", "msg", "type"}]}: one readable line.
async function errorMessage(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : String(body.detail);
  } catch (err) {
    detail = response.statusText;
  }
  return `Error ${response.status}: ${detail || "request failed"}`;
}

// -- form <-> state -------------------------------------------------------------------------------------
function readForm() {
  const k = Number.parseInt(kInput.value, 10);
  return { ...state, text: input.value, k: Number.isFinite(k) ? k : 10, kind: kindSelect.value,
           rerank: rerankBox.checked, camera: $("camera").value.trim(),
           timeFrom: $("time-from").value, timeTo: $("time-to").value };
}
function writeForm(s) {
  input.value = s.text; kInput.value = String(s.k); kindSelect.value = s.kind; rerankBox.checked = s.rerank;
  $("camera").value = s.camera; $("time-from").value = s.timeFrom; $("time-to").value = s.timeTo;
  showExample(s);
}
function showExample(s) {
  const box = $("example");
  box.hidden = !(s.image || s.imageId != null);
  $("example-img").src = s.image ? `data:image/*;base64,${s.image}` : (s.imageThumb || "");
  $("example-label").textContent = s.image ? `example: ${s.imageName}` : s.imageId != null ? `similar to #${s.imageId}` : "";
}

function requestBody(s) {
  const body = { k: s.k, offset: s.offset, kind: s.kind || null, rerank: s.rerank };
  if (s.text.trim()) body.text = s.text;
  if (s.image) body.image = s.image;
  if (s.imageId != null) body.image_id = s.imageId;
  if (s.boost.length) body.boost = s.boost;
  const where = {};
  if (s.camera) where.camera = s.camera.split(",").map((c) => c.trim()).filter(Boolean);
  const time = {};
  if (s.timeFrom !== "") time.gte = Number(s.timeFrom);
  if (s.timeTo !== "") time.lte = Number(s.timeTo);
  if (Object.keys(time).length) where.time = time;
  if (Object.keys(where).length) body.where = where;
  return body;
}

function urlOf(s) {
  const params = new URLSearchParams();
  if (s.text) params.set("q", s.text);
  if (s.imageId != null) params.set("similar", String(s.imageId));
  params.set("k", String(s.k));
  if (s.offset) params.set("offset", String(s.offset));
  if (s.kind) params.set("kind", s.kind);
  params.set("rerank", s.rerank ? "1" : "0");
  if (s.camera) params.set("camera", s.camera);
  if (s.timeFrom !== "") params.set("from", s.timeFrom);
  if (s.timeTo !== "") params.set("to", s.timeTo);
  for (const b of s.boost) params.append("boost", b);
  return `?${params}`;
}

// -- searching ------------------------------------------------------------------------------------------
async function runSearch(s, push) {
  clearError();
  if (!s.text.trim() && !s.image && s.imageId == null) { showError("Type a description or choose an image first."); return; }
  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  goButton.disabled = true;
  summary.textContent = "Searching…";
  try {
    const response = await fetch("search", {
      method: "POST", headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(requestBody(s)), signal: controller.signal,
    });
    if (!response.ok) { showError(await errorMessage(response)); summary.textContent = ""; return; }
    const result = await response.json();
    state = s;
    lastResult = result;
    if (push) history.pushState(s, "", urlOf(s));
    else history.replaceState(s, "", urlOf(s));
    render(result);
  } catch (err) {
    if (err.name === "AbortError") return;
    showError(`Could not reach the search service: ${err.message}`);
    summary.textContent = "";
  } finally {
    if (inFlight === controller) { inFlight = null; goButton.disabled = false; }
  }
}

function render(result) {
  renderHits(result.hits);
  renderParsed(result.parsed);
  const n = result.hits.length;
  emptyNote.hidden = n > 0;
  if (!n) emptyNote.textContent = "No images match this query and filter.";
  $("download").disabled = n === 0; $("download-csv").disabled = n === 0;
  $("prev").disabled = result.offset === 0;
  $("next").disabled = n < result.k;
  const first = result.offset + 1;
  summary.textContent = n ? `${n} result${n === 1 ? "" : "s"} (#${first}–${result.offset + n}) in ${result.took_ms.toFixed(1)} ms` +
    (result.rerank ? " · re-ranked" : "") : "";
}

function renderHits(hits) {
  grid.replaceChildren();
  hits.forEach((hit, index) => {
    const item = document.createElement("li");
    item.className = `card ${hit.kind}`;
    const button = document.createElement("button");
    button.type = "button"; button.className = "thumb"; button.title = `Enlarge ${hit.name}`;
    const img = document.createElement("img");
    img.src = hit.thumb_url; img.alt = hit.name; img.loading = "lazy"; img.decoding = "async";
    button.append(img);
    button.addEventListener("click", () => openViewer(index));
    const meta = document.createElement("div");
    meta.className = "meta";
    const parts = [["rank", `#${hit.rank}`], ["score", hit.score.toFixed(3)], ["name", hit.name], ["kind", hit.kind]];
    for (const [cls, text] of parts) {
      const span = document.createElement("span"); span.className = cls; span.textContent = text; meta.append(span);
    }
    const similar = document.createElement("button");
    similar.type = "button"; similar.className = "secondary similar"; similar.textContent = "similar";
    similar.title = "More like this: search with this image";
    similar.addEventListener("click", () => {
      const s = { ...readForm(), text: "", image: null, imageId: hit.id, imageThumb: hit.thumb_url, offset: 0, boost: [] };
      writeForm(s);
      runSearch(s, true);
    });
    meta.append(similar);
    item.append(button, meta);
    grid.append(item);
  });
}

// What the query was understood as: the kind (click: filter on it) and attributes (click: boost them).
function renderParsed(parsed) {
  const box = $("parsed");
  box.replaceChildren();
  if (!parsed) return;
  const chip = (label, on, onClick, title) => {
    const b = document.createElement("button");
    b.type = "button"; b.className = `chip${on ? " on" : ""}`; b.textContent = label; b.title = title;
    b.setAttribute("aria-pressed", on ? "true" : "false");
    b.addEventListener("click", onClick);
    box.append(b);
  };
  const label = document.createElement("span"); label.textContent = "understood as:"; box.append(label);
  if (parsed.kind) {
    chip(`kind: ${parsed.kind}`, state.kind === parsed.kind, () => {
      const s = { ...state, kind: state.kind === parsed.kind ? "" : parsed.kind, offset: 0 };
      writeForm(s); runSearch(s, true);
    }, "Filter on this kind");
  }
  const phrases = [];
  if (parsed.vehicle) {
    for (const key of ["color", "brand", "type"]) if (parsed.vehicle[key]) phrases.push([`${key}: ${parsed.vehicle[key]}`, parsed.vehicle[key]]);
  }
  for (const a of parsed.attributes) phrases.push([`${a.name}${a.value ? "" : " (no)"}`, a.value ? a.name : `no ${a.name}`]);
  for (const [text, phrase] of phrases) {
    const on = state.boost.includes(phrase);
    chip(text, on, () => {
      const boost = on ? state.boost.filter((b) => b !== phrase) : [...state.boost, phrase];
      runSearch({ ...state, boost, offset: 0 }, true);
    }, "Boost: add this attribute to the query again");
  }
}

// -- viewer: arrows step through the results, Escape closes ------------------------------------------------
function openViewer(index) {
  if (!lastResult || !lastResult.hits[index]) return;
  viewerIndex = index;
  const hit = lastResult.hits[index];
  viewerImg.src = hit.image_url; viewerImg.alt = hit.name;
  viewerCaption.textContent = `#${hit.rank}  ${hit.name}  ·  ${hit.kind}  ·  score ${hit.score.toFixed(4)}`;
  if (!viewer.open) {
    if (typeof viewer.showModal === "function") viewer.showModal(); else viewer.setAttribute("open", "");
  }
}
viewer.addEventListener("keydown", (event) => {
  if (!lastResult) return;
  if (event.key === "ArrowRight") { event.preventDefault(); openViewer(Math.min(viewerIndex + 1, lastResult.hits.length - 1)); }
  if (event.key === "ArrowLeft") { event.preventDefault(); openViewer(Math.max(viewerIndex - 1, 0)); }
});
viewer.addEventListener("click", (event) => { if (event.target === viewer) viewer.close(); });

// -- exports ------------------------------------------------------------------------------------------
function save(name, text, type) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.append(link); link.click(); link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}
const csvField = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v));
function toCsv(rows) {
  const lines = ["query,rank,image_name,score,kind"];
  for (const r of rows) r.hits.forEach((h) => lines.push([r.text, h.rank, h.name, h.score.toFixed(6), h.kind].map(csvField).join(",")));
  return lines.join("\n") + "\n";
}
const toSubmission = (rows) => JSON.stringify({ results: rows.map((r) => ({ text: r.text, image_names: r.hits.map((h) => h.name) })) }, null, 2) + "\n";
function currentRows() { return lastResult ? [{ text: lastResult.text || `image:${lastResult.image_sha256 || lastResult.image_id}`, hits: lastResult.hits }] : []; }
$("download").addEventListener("click", () => save("results.json", toSubmission(currentRows()), "application/json"));
$("download-csv").addEventListener("click", () => save("results.csv", toCsv(currentRows()), "text/csv"));

// A query file (one query per line, or a JSON list of strings): every query searched, both exports saved.
$("queries").addEventListener("change", async () => {
  const file = $("queries").files[0];
  if (!file) return;
  const raw = await file.text();
  let texts;
  try { texts = file.name.endsWith(".json") ? JSON.parse(raw) : raw.split(/\r?\n/); } catch (err) { showError(`${file.name}: not JSON (${err.message})`); return; }
  texts = texts.map((t) => String(t).trim()).filter(Boolean);
  const base = readForm();
  const rows = [];
  for (const [i, text] of texts.entries()) {
    summary.textContent = `query file: ${i + 1} / ${texts.length}`;
    const response = await fetch("search", { method: "POST", headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(requestBody({ ...base, text, image: null, imageId: null, offset: 0, boost: [] })) });
    if (!response.ok) { showError(`${file.name} line ${i + 1}: ${await errorMessage(response)}`); return; }
    rows.push({ text, hits: (await response.json()).hits });
  }
  save("queries-results.json", toSubmission(rows), "application/json");
  save("queries-results.csv", toCsv(rows), "text/csv");
  summary.textContent = `query file: ${rows.length} queries exported`;
  $("queries").value = "";
});

// -- example images: file picker or drop onto the form ------------------------------------------------------
function useImageFile(file) {
  if (!file || !file.type.startsWith("image/")) { showError("Drop an image file (JPEG or PNG)."); return; }
  const reader = new FileReader();
  reader.onload = () => {
    const s = { ...readForm(), image: String(reader.result).split(",", 2)[1], imageName: file.name, imageId: null, offset: 0 };
    writeForm(s);
    runSearch(s, true);
  };
  reader.readAsDataURL(file);
}
$("file").addEventListener("change", () => useImageFile($("file").files[0]));
form.addEventListener("dragover", (event) => { event.preventDefault(); form.classList.add("dragging"); });
form.addEventListener("dragleave", () => form.classList.remove("dragging"));
form.addEventListener("drop", (event) => {
  event.preventDefault(); form.classList.remove("dragging");
  useImageFile(event.dataTransfer.files[0]);
});
$("example-clear").addEventListener("click", () => {
  const s = { ...readForm(), image: null, imageId: null };
  $("file").value = ""; writeForm(s); state = s;
});

// -- paging and history ---------------------------------------------------------------------------------
$("prev").addEventListener("click", () => runSearch({ ...state, offset: Math.max(0, state.offset - state.k) }, true));
$("next").addEventListener("click", () => runSearch({ ...state, offset: state.offset + state.k }, true));
form.addEventListener("submit", (event) => {
  event.preventDefault();
  runSearch({ ...readForm(), offset: 0, boost: [] }, true);
});
window.addEventListener("popstate", (event) => {
  const s = event.state || stateFromUrl();
  writeForm(s);
  if (s.text || s.image || s.imageId != null) runSearch(s, false);
});

function stateFromUrl() {
  const p = new URLSearchParams(location.search);
  const s = blankState();
  s.text = p.get("q") || "";
  if (p.has("similar")) s.imageId = Number(p.get("similar"));
  if (p.has("k")) s.k = Number.parseInt(p.get("k"), 10) || 10;
  s.offset = Number.parseInt(p.get("offset") || "0", 10) || 0;
  s.kind = p.get("kind") || ""; if (p.has("rerank")) { s.rerank = p.get("rerank") === "1"; rerankTouched = true; }
  s.camera = p.get("camera") || ""; s.timeFrom = p.get("from") || ""; s.timeTo = p.get("to") || "";
  s.boost = p.getAll("boost");
  return s;
}

// Restore a shared link: ?q=...&k=...&kind=...&rerank=1&offset=...&similar=ID
(function restore() {
  const s = stateFromUrl();
  writeForm(s);
  state = s;
  if (s.text || s.imageId != null) runSearch(s, false);
})();
rerankBox.addEventListener("change", () => { rerankTouched = true; });
loadStatus();
