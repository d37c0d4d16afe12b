// herbscan review: label drafts beside their crops; every field edit saved as it is made.
"use strict";
const state = {job: null, index: 0, ready: false};
window.herbscanReview = state;
let reviewer = () => "reviewer";

function rec() { return state.job.records[state.index]; }

function confClass(c) {
  if (c === undefined || c === null) return "unknown";
  return c >= 0.8 ? "high" : (c >= 0.6 ? "mid" : "low");
}

function order(r) {
  // fields to review first, then filled fields by confidence, then empty ones
  const terms = state.job.terms;
  const rank = t => r.needsReview.includes(t) ? 0 : (r.fields[t] ? 1 : 2);
  return [...terms].sort((a, b) => rank(a) - rank(b) ||
    (r.confidence[a] ?? 1) - (r.confidence[b] ?? 1) || terms.indexOf(a) - terms.indexOf(b));
}

function renderQueue() {
  const ul = document.getElementById("queue");
  ul.replaceChildren();
  state.job.records.forEach((r, i) => {
    const li = el("li", {"data-key": r.key});
    if (i === state.index) li.className = "active";
    li.append(el("span", {class: "name", title: r.file}, (i + 1) + ". " + r.file));
    const n = Object.keys(r.reviewed).length;
    li.append(el("span", {class: "badge " + (n ? "clean" : (r.needsReview.length ? "unsure" : "none"))},
      n ? n + " reviewed" : r.needsReview.length + " to review"));
    li.addEventListener("click", () => show(i));
    ul.append(li);
  });
  const done = state.job.records.filter(r => Object.keys(r.reviewed).length).length;
  document.getElementById("progress").textContent =
    done + " of " + state.job.records.length + " records reviewed";
}

function stateCell(td, rv) {
  td.className = "state " + (rv ? rv.action : "");
  td.textContent = rv ? rv.action + " by " + rv.reviewer : "";
}

// the value last saved (or being saved) per record and field: Enter saves, and the change event
// that follows when the focus moves on must not save the same value a second time
const lastSaved = new Map();

async function save(r, term, input, td) {
  const id = r.key + "\u0000" + term;
  const value = input.value;
  if (lastSaved.get(id) === value) return;
  lastSaved.set(id, value);
  try {
    const row = await api("/api/field", {key: r.key, field: term, value: value,
      reviewer: reviewer()});
    r.reviewed[term] = row;
    stateCell(td, row);
    say("saved " + term, true);
    renderQueue();
  } catch (e) {
    if (lastSaved.get(id) === value) lastSaved.delete(id);  // not saved: let the next try go
    say(e.message);
  }
}

function show(i) {
  state.index = Math.max(0, Math.min(i, state.job.records.length - 1));
  const r = rec();
  document.getElementById("name").textContent = r.file + (r.specimen_id ? " — " + r.specimen_id : "");
  const crops = document.getElementById("crops");
  crops.replaceChildren();
  for (let k = 0; k < r.crops; k++) crops.append(el("img", {src: "/crop/" + r.key + "/" + k + ".jpg", alt: "label " + (k + 1)}));
  if (!r.crops) crops.append(el("p", {}, "no label crops for this sheet"));
  if (r.error) crops.append(el("p", {}, r.error));
  const tbody = document.getElementById("fields");
  tbody.replaceChildren();
  for (const term of order(r)) {
    const tr = el("tr", {class: r.needsReview.includes(term) ? "review" : "", "data-term": term});
    const rv = r.reviewed[term];
    if (rv && !lastSaved.has(r.key + "\u0000" + term)) lastSaved.set(r.key + "\u0000" + term, rv.value);
    const input = el("input", {name: term});
    input.value = rv ? rv.value : r.fields[term];
    const c = r.confidence[term];
    const td = el("td", {});
    stateCell(td, rv);
    const ok = el("button", {title: "confirm"}, "✓");
    ok.addEventListener("click", () => save(r, term, input, td));
    input.addEventListener("change", () => save(r, term, input, td));
    input.addEventListener("keydown", ev => {
      if (ev.key === "Enter") {
        ev.preventDefault();
        save(r, term, input, td);
        const next = tr.nextElementSibling;
        if (next) next.querySelector("input").focus();
      }
    });
    const tdIn = el("td", {});
    tdIn.append(input);
    const tdConf = el("td", {});
    tdConf.append(el("span", {class: "conf " + confClass(c)}, c === undefined ? "–" : c.toFixed(2)), ok);
    tr.append(el("th", {}, term), tdIn, tdConf, td);
    tbody.append(tr);
  }
  renderQueue();
  state.ready = true;
}

async function confirmRest() {
  const r = rec();
  const rows = document.querySelectorAll("#fields tr");
  for (const tr of rows) {
    const term = tr.dataset.term;
    const input = tr.querySelector("input");
    if (!r.reviewed[term] && input.value) await save(r, term, input, tr.children[3]);
  }
  show(state.index + 1);
}

async function exportRecords() {
  try {
    const out = await api("/api/export-labels", {});
    say("exported " + out.records + " reviewed records to " + out.path, true);
  } catch (e) { say(e.message); }
}

document.addEventListener("keydown", ev => {
  if (!ev.altKey || !state.job) return;
  if (ev.key === "j") { ev.preventDefault(); show(state.index + 1); }
  if (ev.key === "k") { ev.preventDefault(); show(state.index - 1); }
});

async function start() {
  state.job = await api("/api/job");
  reviewer = reviewerInput(state.job.reviewer);
  document.getElementById("title").textContent = "herbscan review — " + state.job.labels;
  document.getElementById("confirm-all").addEventListener("click", confirmRest);
  document.getElementById("export").addEventListener("click", exportRecords);
  if (!state.job.records.length) { say("no records in this transcription"); return; }
  show(0);
}
start().catch(e => say(e.message));
