// herbscan review: the sheet queue, the deep-zoom viewer and the keyboard.
"use strict";
const state = {job: null, index: 0, undo: [], lastId: 0, heatmap: true, ready: false};
window.herbscanReview = state;
let reviewer = () => "reviewer";
let viewer = null;

function sheet() { return state.job.sheets[state.index]; }

function fmt(v) { return v === null || v === undefined ? "" : (typeof v === "number" ? v.toFixed(3) : v); }

function badge(span, row) {
  const d = row && row.decision ? row.decision : "none";
  span.className = "badge " + d;
  span.textContent = d === "none" ? "undecided" : d;
}

function renderQueue() {
  const ul = document.getElementById("queue");
  ul.replaceChildren();
  state.job.sheets.forEach((s, i) => {
    const li = el("li", {"data-key": s.key});
    if (i === state.index) li.className = "active";
    li.append(el("span", {class: "name", title: s.path}, (i + 1) + ". " + s.name));
    const b = el("span", {});
    badge(b, s.current);
    if (!s.current || !s.current.decision) b.textContent = fmt(s.score);
    li.append(b);
    li.addEventListener("click", () => show(i));
    ul.append(li);
  });
  const done = state.job.sheets.filter(s => s.current && s.current.decision).length;
  document.getElementById("progress").textContent =
    done + " of " + state.job.sheets.length + " decided";
}

function renderSide() {
  const s = sheet();
  document.getElementById("name").textContent = s.name;
  const dl = document.getElementById("meta");
  dl.replaceChildren();
  const rows = [["specimen", s.specimen_id], ["score", fmt(s.score)], ["predicted", s.predicted],
    ["model", state.job.model_id], ["threshold", fmt(state.job.threshold)]];
  for (const [c, p] of Object.entries(s.probs)) rows.push(["P(" + c + ")", fmt(p)]);
  for (const [k, v] of Object.entries(s.metadata)) rows.push([k, v]);
  rows.push(["file", s.path]);
  for (const [k, v] of rows) { dl.append(el("dt", {}, k), el("dd", {}, v)); }
  badge(document.getElementById("current"), s.current);
  document.getElementById("b-heatmap").disabled = !s.heatmap;
  loadHistory();
}

async function loadHistory() {
  const s = sheet();
  const ol = document.getElementById("history");
  const data = await api("/api/decisions?since=0");
  ol.replaceChildren();
  for (const r of data.decisions.filter(r => r.key === s.key)) {
    const what = r.undoes ? "undo → " + (r.decision || "undecided") : r.decision;
    ol.append(el("li", {}, what + " by " + r.reviewer + " at " + r.time + (r.note ? " — " + r.note : "")));
  }
}

function show(i) {
  if (!state.job.sheets.length) return;
  state.index = Math.max(0, Math.min(i, state.job.sheets.length - 1));
  const s = sheet();
  state.ready = false;
  viewer.open("/dzi/" + s.key + ".dzi");
  document.getElementById("note").value = "";
  renderQueue();
  renderSide();
  const li = document.querySelector("#queue li.active");
  if (li) li.scrollIntoView({block: "nearest"});
}

function nextUndecided() {
  const n = state.job.sheets.length;
  for (let k = 1; k <= n; k++) {
    const j = (state.index + k) % n;
    const c = state.job.sheets[j].current;
    if (!c || !c.decision) return j;
  }
  return Math.min(state.index + 1, n - 1);
}

function apply(row) {
  const s = state.job.sheets.find(x => x.key === row.key);
  if (s) s.current = row;
  state.lastId = Math.max(state.lastId, row.id);
}

async function decide(decision) {
  const s = sheet();
  try {
    const row = await api("/api/decide", {key: s.key, decision, reviewer: reviewer(),
      note: document.getElementById("note").value});
    apply(row);
    state.undo.push({key: s.key, id: row.id});
    say("saved: " + s.name + " " + decision, true);
    show(nextUndecided());
  } catch (e) { say(e.message); }
}

async function undo() {
  const last = state.undo.pop();
  if (!last) { say("nothing to undo in this session"); return; }
  try {
    const row = await api("/api/undo", {key: last.key, expected: last.id, reviewer: reviewer()});
    apply(row);
    say("undone: back to " + (row.decision || "undecided"), true);
    show(state.job.sheets.findIndex(x => x.key === last.key));
  } catch (e) { say(e.message); }
}

function toggleHeatmap() {
  state.heatmap = !state.heatmap;
  const item = viewer.world.getItemCount() > 1 ? viewer.world.getItemAt(1) : null;
  if (item) item.setOpacity(state.heatmap ? 0.5 : 0);
}

async function poll() {
  try {
    const data = await api("/api/decisions?since=" + state.lastId);
    if (data.decisions.length) {
      data.decisions.forEach(apply);
      renderQueue();
      badge(document.getElementById("current"), sheet().current);
    }
  } catch (e) { /* the server may be restarting; try again later */ }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "TEXTAREA") {
    if (ev.key === "Escape") ev.target.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !state.job || !state.job.sheets.length) return;
  const actions = {c: () => decide("contaminated"), n: () => decide("clean"),
    u: () => decide("unsure"), s: () => show(state.index + 1), z: undo,
    j: () => show(state.index + 1), ArrowRight: () => show(state.index + 1),
    k: () => show(state.index - 1), ArrowLeft: () => show(state.index - 1), h: toggleHeatmap};
  const fn = actions[ev.key];
  if (fn) { ev.preventDefault(); ev.stopPropagation(); fn(); }
}, true);

async function start() {
  const job = await api("/api/job");
  state.job = job;
  state.lastId = job.last_id || 0;
  reviewer = reviewerInput(job.reviewer);
  document.getElementById("title").textContent =
    "herbscan review — " + job.folder + " (" + job.queue + " first)";
  viewer = OpenSeadragon({id: "viewer", prefixUrl: "/static/openseadragon/images/",
    showNavigator: true, maxZoomPixelRatio: 2,
    gestureSettingsMouse: {clickToZoom: false}});
  state.viewer = viewer;
  viewer.addHandler("open", () => {
    const s = sheet();
    if (s.heatmap) {
      viewer.addSimpleImage({url: "/heatmap/" + s.key + ".png", x: 0, y: 0, width: 1,
        opacity: state.heatmap ? 0.5 : 0});
    }
    state.ready = true;
  });
  for (const [id, fn] of [["b-contaminated", () => decide("contaminated")],
    ["b-clean", () => decide("clean")], ["b-unsure", () => decide("unsure")],
    ["b-skip", () => show(state.index + 1)], ["b-undo", undo], ["b-heatmap", toggleHeatmap]]) {
    document.getElementById(id).addEventListener("click", fn);
  }
  if (!job.sheets.length) {
    say("no sheets in this queue (nothing was flagged?) — try --queue uncertain");
    return;
  }
  const first = job.sheets.findIndex(s => !s.current || !s.current.decision);
  show(first < 0 ? 0 : first);
  setInterval(poll, 3000);
}
start().catch(e => say(e.message));
