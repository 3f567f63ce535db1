// abdus review: the work list, one item at a time, its calipers, and the save actions.
// Landmarks are in source px; lengths in mm use the item's spacing_mm [row, col].

import { api, ApiError } from "./api.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const PRELOADED_IMAGES = 6; // object URLs kept (current, neighbours); older ones are revoked

const state = {
  taxonomy: null,
  list: [], // the work list as the API sorts it
  item: null, // the item as loaded (GET /api/items/{id})
  view: null, // the view chosen for it (may differ from item.view)
  points: {}, // landmark -> {x, y} source px, of every task seen while editing this item
  notMeasurable: new Set(),
  loadSerial: 0,
};
const images = new Map(); // id -> Promise<object URL>
const details = new Map(); // id -> Promise<item>, a preloaded item used once

// Exposed for the browser test and the benchmark: the view transform, and for each image shown
// the ms since its navigation began and since the key press that led to it; each save's ms.
const probe = { shownId: null, timings: [], saveMs: [], keyAt: null, viewer: null, state };
window.abdusReview = probe;

const viewer = new Viewer($("canvas"), { onMove: () => renderMeasurements() });
probe.viewer = viewer;

function imageUrl(id) {
  if (!images.has(id)) {
    images.set(id, api.image(id).catch((error) => { images.delete(id); throw error; }));
    while (images.size > PRELOADED_IMAGES) {
      const [oldest, url] = images.entries().next().value;
      images.delete(oldest);
      url.then((u) => URL.revokeObjectURL(u), () => {});
    }
  }
  return images.get(id);
}

// Fetch the next item and decode its image ahead of time, so the next image shows fast.
function preload(id) {
  if (id == null) return;
  if (!details.has(id)) details.set(id, api.item(id).catch(() => null));
  imageUrl(id).then((url) => { const img = new Image(); img.src = url; return img.decode(); })
    .catch(() => {});
}

function measurementsOf(view) {
  const names = new Set(state.taxonomy.tasks[view] || []);
  return state.taxonomy.measurements.filter((m) => m.landmarks.every((l) => names.has(l)));
}

// Where a landmark of the chosen view's task starts: the item's own data, else its original
// prediction, else a default (long axes across the middle, short axes up and down).
function placeLandmarks(view) {
  const { width, height } = state.item;
  measurementsOf(view).forEach((m, i) => {
    m.landmarks.forEach((name, end) => {
      if (state.points[name]) return;
      const known = state.item.landmarks?.[name] || state.item.original?.landmarks?.[name];
      if (known) {
        state.points[name] = { x: known.x, y: known.y };
      } else if (i % 2 === 0) {
        state.points[name] = { x: width * (end ? 0.65 : 0.35), y: height * 0.5 };
      } else {
        state.points[name] = { x: width * 0.5, y: height * (end ? 0.65 : 0.35) };
      }
    });
  });
}

function viewProbability(view) {
  const probabilities = state.item.view_probabilities;
  if (!probabilities) return view === state.item.view ? state.item.view_probability : null;
  if (Array.isArray(probabilities)) return probabilities[state.taxonomy.views.indexOf(view)];
  return probabilities[view];
}

function renderItemBar() {
  const { item } = state;
  $("item-name").textContent = item.name;
  $("item-view").value = state.view;
  const p = viewProbability(state.view);
  $("view-probability").textContent = p == null ? "" : `p = ${Number(p).toFixed(3)}`;
  $("item-status").textContent = item.status;
  $("item-status").className = `status-${item.status}`;
}

function renderMeasurements() {
  const body = $("measurements").tBodies[0];
  body.innerHTML = "";
  for (const m of measurementsOf(state.view)) {
    const length = viewer.length(...m.landmarks);
    const row = body.insertRow();
    row.dataset.code = m.code;
    row.insertCell().textContent = m.code;
    const mm = row.insertCell();
    mm.className = "mm";
    mm.textContent = length ? `${length.value.toFixed(1)} ${length.unit}` : "–";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = state.notMeasurable.has(m.code);
    box.addEventListener("change", () => {
      if (box.checked) state.notMeasurable.add(m.code); else state.notMeasurable.delete(m.code);
      viewer.draw();
    });
    const label = document.createElement("label");
    label.append(box, " not measurable");
    row.insertCell().append(label);
  }
  $("spacing-note").textContent = state.item.spacing_mm
    ? "" : "No pixel spacing: lengths in px, not mm.";
}

function renderCalipers() {
  placeLandmarks(state.view);
  const pairs = measurementsOf(state.view).map((m) => ({ code: m.code, a: m.landmarks[0],
    b: m.landmarks[1] }));
  // A dataset's reader B, for comparison (drawn dashed, not editable).
  const second = state.item.original?.second_read;
  const secondPoints = second && second.view === state.view ? second.landmarks : null;
  viewer.setCalipers(pairs, state.points, state.notMeasurable, state.item.spacing_mm,
    secondPoints);
  $("second-note").hidden = !secondPoints;
  renderMeasurements();
}

function fillEntry(li, entry) {
  const p = entry.view_probability == null ? "" : ` ${Number(entry.view_probability).toFixed(2)}`;
  li.innerHTML = `<span class="name"></span><span class="status-${entry.status}">` +
    `${entry.status}</span><span class="meta"></span>`;
  li.querySelector(".name").textContent = entry.name;
  li.querySelector(".meta").textContent = `${entry.view}${p}`;
}

function renderList() {
  const list = $("items");
  list.innerHTML = "";
  for (const entry of state.list) {
    const li = document.createElement("li");
    li.dataset.id = entry.id;
    li.className = entry.id === state.item?.id ? "current" : "";
    fillEntry(li, entry);
    li.addEventListener("click", () => openItem(entry.id));
    list.append(li);
  }
  $("list-total").textContent = `${state.list.length} of ${state.total ?? state.list.length}`;
}

function banner(text, { reload = false, info = false } = {}) {
  $("banner").hidden = !text;
  $("banner").className = info ? "info" : "";
  $("banner-text").textContent = text || "";
  $("banner-reload").hidden = !reload;
}

function neighbour(step) {
  const index = state.list.findIndex((entry) => entry.id === state.item?.id);
  if (index >= 0) return state.list[index + step]?.id ?? null;
  return step > 0 ? state.item?.next_id ?? null : state.item?.previous_id ?? null;
}

async function openItem(id, { fresh = false } = {}) {
  const serial = ++state.loadSerial;
  const started = performance.now();
  const preloaded = fresh ? null : details.get(id);
  details.delete(id);
  const detail = preloaded ? preloaded.then((d) => d || api.item(id)) : api.item(id);
  try {
    const [item, url] = await Promise.all([detail, imageUrl(id)]);
    if (serial !== state.loadSerial) return; // the user has moved on
    // A measurement whose landmarks the item lacks starts as not measurable (its calipers are
    // still drawn at default places, to be used if the reader unticks it).
    Object.assign(state, { item, view: item.view, points: {}, notMeasurable: new Set([
      ...(item.not_measurable || []), ...unmeasured(item.view, item.landmarks)]) });
    banner("");
    $("save-state").textContent = "";
    $("comment").value = item.comment || "";
    renderItemBar();
    renderCalipers();
    $("items").querySelector("li.current")?.classList.remove("current");
    const row = $("items").querySelector(`li[data-id="${CSS.escape(String(item.id))}"]`);
    row?.classList.add("current");
    row?.scrollIntoView({ block: "nearest" });
    await viewer.show(url, item.width, item.height);
    viewer.draw();
    if (serial !== state.loadSerial) return;
    probe.shownId = item.id;
    const now = performance.now();
    probe.timings.push({ id: item.id, ms: now - started,
      sinceKey: probe.keyAt === null ? null : now - probe.keyAt });
    probe.keyAt = null;
    preload(neighbour(+1));
    preload(neighbour(-1));
  } catch (error) {
    if (serial === state.loadSerial) banner(`Could not open ${id}: ${error.message}`);
  }
}

function edits() {
  const names = state.taxonomy.tasks[state.view] || [];
  const landmarks = Object.fromEntries(names.filter((n) => state.points[n])
    .map((n) => [n, { x: state.points[n].x, y: state.points[n].y }]));
  const codes = new Set(measurementsOf(state.view).map((m) => m.code));
  return { view: state.view, landmarks,
    not_measurable: [...state.notMeasurable].filter((c) => codes.has(c)),
    comment: $("comment").value };
}

// Codes of the view's measurements that lack a landmark in ``landmarks`` (not measured).
function unmeasured(view, landmarks) {
  return measurementsOf(view).filter((m) => m.landmarks.some((n) => !landmarks?.[n]))
    .map((m) => m.code);
}

// Corrected when the result differs from the prediction (the view, the set of measurements
// marked not measurable, or an end of a measured caliper), accepted otherwise.
function statusOf(body) {
  const original = state.item.original || state.item;
  if (body.view !== original.view) return "corrected";
  const before = new Set([...unmeasured(original.view, original.landmarks),
    ...(original.not_measurable || [])]);
  const after = new Set(body.not_measurable);
  if (before.size !== after.size || [...after].some((c) => !before.has(c))) return "corrected";
  const moved = measurementsOf(body.view).filter((m) => !after.has(m.code))
    .flatMap((m) => m.landmarks).some((name) => {
      const p = body.landmarks[name], o = original.landmarks[name];
      return Math.hypot(p.x - o.x, p.y - o.y) > 1e-6;
    });
  return moved ? "corrected" : "accepted";
}

async function save(status) {
  if (!state.item) return false;
  const body = edits();
  const item = state.item;
  const request = { version: item.version, status: status || statusOf(body), ...body };
  $("save-state").textContent = "saving…";
  const started = performance.now();
  try {
    const saved = await api.save(item.id, request);
    probe.saveMs.push(performance.now() - started);
    Object.assign(item, { version: saved.version, status: request.status, view: body.view,
      landmarks: body.landmarks, not_measurable: body.not_measurable, comment: body.comment,
      measurements_mm: saved.measurements_mm });
    const entry = state.list.find((e) => e.id === item.id);
    if (entry) {
      Object.assign(entry, { status: request.status, version: saved.version, view: body.view });
      const li = $("items").querySelector(`li[data-id="${CSS.escape(String(item.id))}"]`);
      if (li) fillEntry(li, entry); // one row, not the whole list of maybe thousands
    }
    details.delete(item.id);
    if (state.item === item) {
      renderItemBar();
      $("save-state").textContent = `saved (${request.status}, version ${saved.version})`;
    }
    return true;
  } catch (error) {
    $("save-state").textContent = "";
    if (error instanceof ApiError && error.status === 409) {
      banner(`Not saved: ${error.message}`, { reload: true });
    } else {
      banner(`Not saved: ${error.message}`);
    }
    return false;
  }
}

function go(step) {
  const id = neighbour(step);
  if (id != null) openItem(id);
}

async function accept() {
  if (await save()) go(+1);
}

async function exportReview() {
  banner("exporting…", { info: true });
  try {
    const written = await api.exportAll();
    banner(`Exported ${written.csv}, ${written.coco} and ${written.sr.length} verified SRs`,
      { info: true });
  } catch (error) {
    banner(`Export failed: ${error.message}`);
  }
}

async function loadList() {
  const data = await api.items($("filter-view").value, $("filter-status").value);
  state.list = data.items;
  state.total = data.total;
  renderList();
}

function onKey(event) {
  const tag = event.target.tagName;
  if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || event.ctrlKey ||
      event.metaKey || event.altKey) return;
  const action = { a: accept, n: () => go(+1), ArrowRight: () => go(+1), p: () => go(-1),
    ArrowLeft: () => go(-1) }[event.key];
  if (action) {
    event.preventDefault();
    probe.keyAt = performance.now();
    action();
  }
}

function fillSelect(select, values) {
  for (const value of values) select.append(new Option(value, value));
}

async function main() {
  try {
    state.taxonomy = await api.taxonomy();
  } catch (error) {
    banner(`Cannot reach the review server: ${error.message}`);
    return;
  }
  fillSelect($("filter-view"), state.taxonomy.views);
  fillSelect($("item-view"), state.taxonomy.views);
  $("filter-view").addEventListener("change", loadList);
  $("filter-status").addEventListener("change", loadList);
  $("item-view").addEventListener("change", () => {
    state.view = $("item-view").value;
    renderItemBar();
    renderCalipers();
  });
  $("accept").addEventListener("click", accept);
  $("export").addEventListener("click", exportReview);
  $("save").addEventListener("click", () => save());
  $("reject").addEventListener("click", () => save("rejected"));
  $("banner-reload").addEventListener("click", () => openItem(state.item.id, { fresh: true }));
  $("comment").addEventListener("keydown", (e) => e.stopPropagation());
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => viewer.fit());
  await loadList();
  if (state.list.length) await openItem(state.list[0].id);
}

main();
