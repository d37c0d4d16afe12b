// herbscan review: what both pages share. Values are written with textContent, never as HTML.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({error: "bad answer from the server"}));
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}

function reviewerInput(fallback) {
  const input = document.getElementById("reviewer");
  input.value = localStorage.getItem("herbscan-reviewer") || fallback;
  input.addEventListener("change", () => localStorage.setItem("herbscan-reviewer", input.value));
  return () => input.value.trim() || fallback;
}

function say(text, ok) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = ok ? "ok" : "";
}
