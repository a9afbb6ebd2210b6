// Trove: the little JavaScript the pages use. No framework.
"use strict";

/** This page's CSRF token, for requests scripts make. */
function troveCsrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

/** The file page: copy the share link. */
function troveCopyLink() {
  const button = document.getElementById("copy-link");
  const input = document.getElementById("share-link");
  if (!button || !input) return;
  button.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (_) {
      // Plain HTTP on a LAN may have no clipboard API: the selected text can still be copied.
      document.execCommand && document.execCommand("copy");
    }
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}

/** What a failed request says, from its ApiErrorBody when there is one. */
function troveErrorMessage(xhr) {
  try {
    const body = JSON.parse(xhr.responseText);
    if (body && body.message) return body.message;
  } catch (_) { /* not JSON */ }
  return "the upload failed (HTTP " + xhr.status + ")";
}

/**
 * The share page: send the file as the raw body of POST /share/upload with the form's
 * fields in the query, show progress from upload.onprogress, then go to the file's page.
 */
function troveShareForm() {
  const form = document.getElementById("share");
  if (!form) return;
  const progress = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const error = document.getElementById("upload-error");
  const done = document.getElementById("upload-done");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = form.elements["file"].files[0];
    if (!file) return;
    const q = new URLSearchParams();
    q.set("name", file.name);
    for (const key of ["title", "kind", "tags", "description"]) {
      const v = form.elements[key].value.trim();
      if (v) q.set(key, v);
    }
    if (form.elements["private"].checked) q.set("private", "1");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.hidden = true;
    done.hidden = true;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = "Uploading " + file.name + "…";
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/share/upload?" + q.toString());
    xhr.setRequestHeader("X-CSRF-Token", troveCsrf());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && e.total > 0) {
        progress.value = Math.floor((100 * e.loaded) / e.total);
        if (e.loaded >= e.total) status.textContent = "Storing on the appliances…";
      }
    };
    xhr.onload = () => {
      button.disabled = false;
      if (xhr.status >= 200 && xhr.status < 300) {
        const r = JSON.parse(xhr.responseText);
        progress.value = 100;
        status.textContent = "";
        const a = done.querySelector("a");
        a.href = r.url;
        a.textContent = r.url;
        done.hidden = false;
        window.location.assign(r.url);
      } else {
        progress.hidden = true;
        status.textContent = "";
        error.textContent = troveErrorMessage(xhr);
        error.hidden = false;
      }
    };
    xhr.onerror = () => {
      button.disabled = false;
      progress.hidden = true;
      status.textContent = "";
      error.textContent = "the upload failed: the connection to the controller broke";
      error.hidden = false;
    };
    xhr.send(file);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  troveCopyLink();
  troveShareForm();
});

/* fleet */
// The fleet page: poll GET /api/v1/fleet/live every second and update the table, the repair
// counts and svg#network in place (web/fleet.rs renders the first picture the same way).

/** A byte count for people, as web/fleet.rs's bytes_h writes it. */
function troveBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  n = Math.max(0, n);
  let v = n, unit = 0;
  while (v >= 1024 && unit < units.length - 1) { v /= 1024; unit++; }
  return unit === 0 ? n + " B" : v.toFixed(1) + " " + units[unit];
}

/** How long a node has been in its state, as web/fleet.rs's since_h writes it. */
function troveSince(state, secs) {
  secs = Math.max(0, secs);
  let span;
  if (secs < 60) span = secs + " s";
  else if (secs < 3600) span = Math.floor(secs / 60) + " min";
  else if (secs < 86400) span = Math.floor(secs / 3600) + " h";
  else span = Math.floor(secs / 86400) + " days";
  return state + " for " + span;
}

const TROVE_SVG = "http://www.w3.org/2000/svg";
// The drawing's geometry, as in web/fleet.rs.
const TROVE_VIEW = { w: 720, h: 520, ring: 120, outer: 220 };

function troveNodeName(n) { return n.name || n.id.slice(0, 8); }

function troveCell(row, cls, text) {
  let td = row.querySelector("td." + cls);
  if (!td) {
    td = document.createElement("td");
    td.className = cls;
    row.appendChild(td);
  }
  if (td.textContent !== text) td.textContent = text;
  return td;
}

function troveFleetTable(live) {
  const body = document.querySelector("#fleet tbody");
  for (const n of live.nodes) {
    let row = body.querySelector('tr.node[data-node-id="' + CSS.escape(n.id) + '"]');
    if (!row) {
      row = document.createElement("tr");
      row.className = "node";
      row.dataset.nodeId = n.id;
      body.appendChild(row);
      const empty = document.getElementById("fleet-empty");
      if (empty) empty.remove();
    }
    troveCell(row, "name", troveNodeName(n)).title = n.id;
    const state = troveCell(row, "state", n.state);
    state.className = "state " + n.state;
    troveCell(row, "since", troveSince(n.state, live.now_s - n.since));
    troveCell(row, "capacity", troveBytes(n.capacity_bytes));
    troveCell(row, "free", troveBytes(n.free_bytes));
    troveCell(row, "chunks", String(n.chunks));
    troveCell(row, "board", n.board || "");
  }
  const r = live.repair;
  const counts = {
    "under-replicated": r.under_replicated, "unavailable": r.unavailable,
    "in-flight": r.orders_in_flight, "done": r.orders_done, "failed": r.orders_failed,
  };
  for (const [cls, v] of Object.entries(counts)) {
    const dd = document.querySelector("#repair ." + cls);
    if (dd && dd.textContent !== String(v)) dd.textContent = String(v);
  }
}

/** Puts `el` under `parent` keyed by `attr`=`key`, creating it with `make` if missing. */
function troveKeyed(parent, selector, attr, key, make) {
  for (const el of parent.querySelectorAll(selector)) {
    if (el.getAttribute(attr) === key) return el;
  }
  const el = make();
  el.setAttribute(attr, key);
  parent.appendChild(el);
  return el;
}

function troveFleetDrawing(live) {
  const svg = document.getElementById("network");
  if (!svg) return;
  const edgesG = svg.querySelector("g.edges");
  const pointsG = svg.querySelector("g.endpoints");
  const nodeIds = new Set(live.nodes.map((n) => n.id));
  const names = new Map(live.nodes.map((n) => [n.id, troveNodeName(n)]));
  const outside = [...new Set(live.edges.flatMap((e) => [e.from, e.to]))].filter((id) => !nodeIds.has(id)).sort();
  const at = (i, n, r) => {
    const a = 2 * Math.PI * i / Math.max(n, 1) - Math.PI / 2;
    return [TROVE_VIEW.w / 2 + r * Math.cos(a), TROVE_VIEW.h / 2 + r * Math.sin(a)];
  };
  const pos = new Map();
  const wanted = [];
  live.nodes.forEach((n, i) => wanted.push([n.id, troveNodeName(n), "endpoint node " + n.state, at(i, live.nodes.length, TROVE_VIEW.ring)]));
  outside.forEach((id, i) => wanted.push([id, id, "endpoint outside", at(2 * i + 1, 2 * outside.length, TROVE_VIEW.outer)]));
  const keep = new Set();
  for (const [id, label, cls, [x, y]] of wanted) {
    pos.set(id, [x, y]);
    keep.add(id);
    const g = troveKeyed(pointsG, "g.endpoint", "data-id", id, () => {
      const g = document.createElementNS(TROVE_SVG, "g");
      const c = document.createElementNS(TROVE_SVG, "circle");
      c.setAttribute("r", "16");
      const t = document.createElementNS(TROVE_SVG, "text");
      t.setAttribute("y", "32");
      g.append(c, t);
      return g;
    });
    g.setAttribute("class", cls);
    g.setAttribute("transform", "translate(" + x.toFixed(1) + " " + y.toFixed(1) + ")");
    const text = g.querySelector("text");
    if (text.textContent !== label) text.textContent = label;
  }
  for (const g of pointsG.querySelectorAll("g.endpoint")) {
    if (!keep.has(g.getAttribute("data-id"))) g.remove();
  }
  const list = document.getElementById("transfers");
  const keepEdges = new Set();
  for (const e of live.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const key = e.from + ">" + e.to + ">" + e.kind;
    keepEdges.add(key);
    const text = (names.get(e.from) || e.from) + " → " + (names.get(e.to) || e.to) + ": " +
      troveBytes(e.bytes_per_s) + "/s (" + e.kind + ")";
    const line = troveKeyed(edgesG, "line.edge", "data-key", key, () => {
      const l = document.createElementNS(TROVE_SVG, "line");
      l.appendChild(document.createElementNS(TROVE_SVG, "title"));
      return l;
    });
    line.setAttribute("class", "edge " + e.kind);
    line.setAttribute("x1", a[0].toFixed(1));
    line.setAttribute("y1", a[1].toFixed(1));
    line.setAttribute("x2", b[0].toFixed(1));
    line.setAttribute("y2", b[1].toFixed(1));
    const mib = e.bytes_per_s / (1024 * 1024);
    line.setAttribute("stroke-width", Math.min(10, 1.5 + 2 * Math.log2(1 + mib)).toFixed(1));
    line.querySelector("title").textContent = text;
    if (list) {
      const li = troveKeyed(list, "li.edge", "data-key", key, () => document.createElement("li"));
      li.className = "edge " + e.kind;
      if (li.textContent !== text) li.textContent = text;
    }
  }
  for (const el of [...edgesG.querySelectorAll("line.edge"), ...(list ? list.querySelectorAll("li.edge") : [])]) {
    if (!keepEdges.has(el.getAttribute("data-key"))) el.remove();
  }
}

function troveFleet() {
  if (!document.getElementById("fleet")) return;
  const status = document.getElementById("live-status");
  let busy = false;
  const poll = async () => {
    if (busy) return;
    busy = true;
    try {
      const res = await fetch("/api/v1/fleet/live", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const live = await res.json();
      troveFleetTable(live);
      troveFleetDrawing(live);
      if (status) status.textContent = "Updated every second.";
    } catch (e) {
      if (status) status.textContent = "Cannot reach the controller (" + e.message + "); retrying.";
    } finally {
      busy = false;
    }
  };
  setInterval(poll, 1000);
  poll();
}

document.addEventListener("DOMContentLoaded", troveFleet);
