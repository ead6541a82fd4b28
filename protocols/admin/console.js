// qgate's web console: polls the admin JSON API (/api/...) every two seconds and
// redraws; no framework, no build step, nothing fetched from elsewhere.
"use strict";

const POLL_MS = 2000;
const HISTORY = 60;
const state = { queue: null, last: null, history: [], filter: "" };

function key() { return sessionStorage.getItem("qgate-admin-key") || ""; }

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (key()) headers["Authorization"] = "Bearer " + key();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/api" + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    document.getElementById("login").hidden = false;
    throw new Error("an admin key is needed");
  }
  const doc = await response.json();
  if (!response.ok) throw new Error(doc.description || doc.title || response.status);
  return doc;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, numeric) {
  const tr = document.createElement("tr");
  cells.forEach((cell, i) => {
    const td = cell instanceof Node ? document.createElement("td") : el("td", cell);
    if (cell instanceof Node) td.appendChild(cell);
    if (numeric && numeric.includes(i)) td.className = "num";
    tr.appendChild(td);
  });
  return tr;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return seconds.toFixed(0) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

const qpath = (t, q) => "/queues/" + encodeURIComponent(t) + "/" + encodeURIComponent(q);

function rates(doc) {
  // Per-queue and total rates from the counters' change since the last poll.
  const now = doc.time, out = new Map();
  let pub = 0, ack = 0;
  if (state.last) {
    const dt = Math.max(now - state.last.time, 0.001);
    for (const q of doc.queues) {
      const before = state.last.byName.get(q.tenant + "/" + q.name);
      if (!before) continue;
      const r = [(q.published - before.published) / dt, (q.acked - before.acked) / dt];
      out.set(q.tenant + "/" + q.name, r);
      pub += r[0]; ack += r[1];
    }
  }
  state.last = { time: now, byName: new Map(doc.queues.map(q => [q.tenant + "/" + q.name, q])) };
  return { perQueue: out, pub, ack };
}

function drawChart() {
  const canvas = document.getElementById("chart"), g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1, ...state.history.map(h => Math.max(h.pub, h.ack)));
  const step = canvas.width / (HISTORY - 1);
  for (const [field, colour] of [["pub", "#2563eb"], ["ack", "#16a34a"]]) {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    const offset = HISTORY - state.history.length;  // the newest point on the right edge
    state.history.forEach((h, i) => {
      const x = (offset + i) * step, y = canvas.height - 4 - (h[field] / max) * (canvas.height - 8);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
  g.fillStyle = "#6b7480"; g.fillText("max " + max.toFixed(1) + "/s", canvas.width - 80, 12);
}

async function refreshQueues() {
  const doc = await api("GET", "/queues?limit=200");
  const r = rates(doc);
  state.history.push({ pub: r.pub, ack: r.ack });
  if (state.history.length > HISTORY) state.history.shift();
  document.getElementById("queue-count").textContent = doc.count;
  document.getElementById("publish-rate").textContent = r.pub.toFixed(1);
  document.getElementById("ack-rate").textContent = r.ack.toFixed(1);
  document.getElementById("waiters").textContent = doc.waiters;
  const body = document.querySelector("#queues tbody");
  body.replaceChildren();
  for (const q of doc.queues) {
    const name = q.tenant + "/" + q.name;
    if (state.filter && !name.includes(state.filter)) continue;
    const [pub, ack] = r.perQueue.get(name) || [0, 0];
    const tr = row([q.tenant, q.name + (q.durable ? "" : " (transient)"), q.available, q.claimed,
      q.delayed, age(q.oldest_age), pub.toFixed(1), ack.toFixed(1)], [2, 3, 4, 6, 7]);
    tr.dataset.tenant = q.tenant; tr.dataset.queue = q.name;
    tr.addEventListener("click", () => openQueue(q.tenant, q.name));
    body.appendChild(tr);
  }
  document.getElementById("others").textContent = doc.others.queues
    ? `… and ${doc.others.queues} more queues holding ${doc.others.total} messages` : "";
  drawChart();
}

async function refreshStatus() {
  const doc = await api("GET", "/status");
  document.getElementById("version").textContent = "v" + doc.version + " · pid " + doc.pid +
    " · workers " + doc.workers;
  const health = document.getElementById("health");
  const ok = doc.storage.answers && doc.listeners.every(l => l.up);
  health.textContent = ok ? "ready" : "not ready";
  health.className = "pill " + (ok ? "ok" : "bad");
  const body = document.querySelector("#listeners tbody");
  body.replaceChildren();
  for (const l of doc.listeners) {
    const certs = l.certificates.map(c => `${c.subject} (${c.days_left} days)`).join(", ");
    body.appendChild(row([l.protocol, l.endpoint + (l.tls ? " · TLS" : ""), l.up ? "up" : "DOWN",
      doc.connections[l.protocol] || 0, certs || "–"], [3]));
  }
  const w = doc.storage.writer;
  document.getElementById("storage").textContent = "storage " + doc.storage.kind + ": " +
    (doc.storage.answers ? "answers" : "DOWN") +
    (w ? ` · ${w.batches} commits, ${w.operations} operations` : "");
}

function result(text, error) {
  const node = document.getElementById("q-result");
  node.textContent = text; node.className = error ? "error" : "";
}

async function refreshQueue() {
  if (!state.queue) return;
  const { tenant, name } = state.queue;
  let info, peek;
  try {
    info = await api("GET", qpath(tenant, name));
    peek = await api("GET", qpath(tenant, name) + "/messages?limit=50");
  } catch (e) { result(e.message, true); return; }
  document.getElementById("q-stats").textContent =
    `${info.total} messages: ${info.available} available, ${info.claimed} claimed, ` +
    `${info.delayed} delayed · ${info.durable ? "durable" : "transient"}` +
    (info.dead_letter_queue ? ` · dead-letters to ${info.dead_letter_queue}` : "") +
    (info.dead_letter_sources.length ? ` · dead-letter queue of ${info.dead_letter_sources.join(", ")}` : "");
  const to = document.getElementById("m-to");
  if (!to.value && info.dead_letter_sources.length === 1) to.value = info.dead_letter_sources[0];
  const body = document.querySelector("#messages tbody");
  body.replaceChildren();
  for (const m of peek.messages) {
    const preview = m.body.text !== undefined ? m.body.text : "0x" + m.body.hex;
    const pre = el("pre", preview + (m.body.truncated ? " …" : ""));
    const headers = el("pre", Object.entries(m.headers).map(([k, v]) => `${k}: ${v}`).join("\n"));
    const st = el("span", m.state + (m.claim_expires_in ? ` (${m.claim_expires_in}s)` : ""),
      "state-" + m.state);
    body.appendChild(row([m.id, st, m.claim_count, age(m.age), age(m.expires_in), headers, pre],
      [0, 2]));
  }
}

function openQueue(tenant, name) {
  state.queue = { tenant, name };
  document.getElementById("queue").hidden = false;
  document.getElementById("q-name").textContent = tenant + "/" + name;
  document.getElementById("m-to").value = "";
  result("");
  refreshQueue();
}

async function act(fn) {
  try { result(await fn()); } catch (e) { result(e.message, true); }
  await refreshQueue();
  await refreshQueues().catch(() => {});
}

function wire() {
  document.getElementById("login").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem("qgate-admin-key", document.getElementById("key").value);
    document.getElementById("login").hidden = true;
    tick();
  });
  document.getElementById("filter").addEventListener("input", ev => {
    state.filter = ev.target.value; refreshQueues().catch(() => {});
  });
  document.getElementById("q-close").addEventListener("click", () => {
    state.queue = null; document.getElementById("queue").hidden = true;
  });
  const q = () => qpath(state.queue.tenant, state.queue.name);
  document.getElementById("publish").addEventListener("submit", ev => {
    ev.preventDefault();
    const text = document.getElementById("p-body").value;
    act(async () => {
      const doc = await api("POST", q() + "/messages", { body: text, headers: { source: "console" } });
      return "published message " + doc.ids.join(", ");
    });
  });
  document.getElementById("move").addEventListener("submit", ev => {
    ev.preventDefault();
    const to = document.getElementById("m-to").value;
    act(async () => {
      const doc = await api("POST", q() + "/move", to ? { to } : {});
      return `moved ${doc.moved} messages to ${doc.to}`;
    });
  });
  document.getElementById("purge").addEventListener("click", () => {
    if (!confirm("Delete every message of " + state.queue.name + "?")) return;
    act(async () => `purged ${(await api("POST", q() + "/purge")).purged} messages`);
  });
  document.getElementById("delete").addEventListener("click", () => {
    if (!confirm("Delete the queue " + state.queue.name + "?")) return;
    act(async () => {
      await api("DELETE", q());
      state.queue = null; document.getElementById("queue").hidden = true;
      return "queue deleted";
    });
  });
}

async function tick() {
  try {
    await refreshStatus();
    await refreshQueues();
    await refreshQueue();
  } catch (e) {
    const health = document.getElementById("health");
    health.textContent = e.message; health.className = "pill bad";
  }
}

wire();
tick();
setInterval(tick, POLL_MS);
