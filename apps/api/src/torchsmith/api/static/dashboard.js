// The torchsmith dashboard: jobs (polled), a live training curve (WebSocket),
// benchmark history with confidence bands, and the latest comparison verdicts.
"use strict";

const API = document.body.dataset.api;
const keyInput = document.getElementById("api-key");
keyInput.value = localStorage.getItem("torchsmith-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("torchsmith-key", keyInput.value.trim());
  refreshAll();
});

const state = { selected: null, socket: null, traces: {}, dropped: 0, autoSelected: false };
window.torchsmithDashboard = state; // read by the browser tests

function headers() {
  const key = keyInput.value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function getJSON(path) {
  const response = await fetch(API + path, { headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.detail || body.message || response.status + " " + response.statusText);
  }
  return body;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

// ------------------------------------------------------------------ jobs

async function refreshJobs() {
  const conn = document.getElementById("conn");
  let jobs;
  try {
    jobs = await getJSON("/jobs?limit=50");
    conn.textContent = "connected";
  } catch (err) {
    conn.textContent = "API: " + err.message;
    return;
  }
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  document.getElementById("jobs-empty").hidden = jobs.length > 0;
  for (const job of jobs) {
    const row = body.insertRow();
    row.dataset.id = job.id;
    if (job.id === state.selected) row.classList.add("selected");
    cell(row, job.id);
    cell(row, job.kind);
    cell(row, job.state, "state-" + job.state);
    cell(row, job.progress === null ? "" : Math.round(job.progress * 100) + "%");
    cell(row, new Date(job.created_at * 1000).toLocaleTimeString());
    cell(row, job.error, "error").title = job.error || "";
    row.addEventListener("click", () => follow(job.id));
  }
  if (!state.autoSelected) {
    const train = jobs.find((j) => j.kind === "train" && !isDone(j.state)) ||
      jobs.find((j) => j.kind === "train");
    if (train) { state.autoSelected = true; follow(train.id); }
  }
}

function isDone(s) { return ["succeeded", "failed", "cancelled", "timed_out"].includes(s); }

// ------------------------------------------------------------------ live curve

function follow(jobId) {
  if (state.socket) state.socket.close();
  state.selected = jobId;
  state.autoSelected = true;
  state.traces = {};
  state.dropped = 0;
  document.getElementById("curve-job").textContent = jobId;
  Plotly.newPlot("curve", [], {
    margin: { t: 10, r: 10, b: 40, l: 50 },
    xaxis: { title: { text: "step" } }, yaxis: { title: { text: "value" } },
  }, { responsive: true, displaylogo: false });
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const key = keyInput.value.trim();
  const query = key ? "?key=" + encodeURIComponent(key) : "";
  const socket = new WebSocket(scheme + location.host + API + "/ws/jobs/" + jobId + query);
  state.socket = socket;
  socket.onmessage = (msg) => onMessage(JSON.parse(msg.data));
  socket.onclose = (ev) => {
    if (state.socket === socket) setCurveStatus(ev.code === 1000 ? "job finished" : "closed: " + (ev.reason || ev.code));
  };
  for (const row of document.querySelectorAll("#jobs tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === jobId);
  }
}

function setCurveStatus(text) {
  const extra = state.dropped ? " (" + state.dropped + " messages dropped: client too slow)" : "";
  document.getElementById("curve-status").textContent = text + extra;
}

function onMessage(message) {
  if (message.type === "dropped") { state.dropped += message.count; return; }
  const record = message.record;
  if (message.type === "status") {
    setCurveStatus(record.state + (record.error ? ": " + record.error : ""));
    return;
  }
  // Steps and evaluations draw the curves; the end event only repeats their numbers.
  if (message.type !== "event" || !record.metrics) return;
  if (record.kind !== "step" && record.kind !== "eval") return;
  for (const [name, written] of Object.entries(record.metrics)) {
    const key = record.kind === "eval" ? "eval " + name : name;
    // A NaN or infinite metric arrives as the string "NaN" or "Infinity": a gap, not a point.
    const value = typeof written === "number" ? written : null;
    if (!(key in state.traces)) {
      state.traces[key] = Object.keys(state.traces).length;
      // Losses and accuracies show at once; throughput, lr and the rest are a legend click away.
      const visible = /loss|acc/i.test(name) ? true : "legendonly";
      Plotly.addTraces("curve", { x: [], y: [], name: key, mode: "lines+markers", visible });
    }
    Plotly.extendTraces("curve", { x: [[record.step]], y: [[value]] }, [state.traces[key]]);
  }
}

// ------------------------------------------------------------------ benchmarks

async function refreshBenchCases() {
  const status = document.getElementById("bench-status");
  const select = document.getElementById("bench-case");
  try {
    const cases = await getJSON("/bench/cases");
    const current = select.value;
    select.replaceChildren(...cases.map((c) => new Option(c, c)));
    if (cases.includes(current)) select.value = current;
    status.textContent = cases.length ? "" : "No benchmark results yet.";
    if (cases.length) await refreshBenchHistory();
  } catch (err) {
    status.textContent = err.message;
  }
}

async function refreshBenchHistory() {
  const name = document.getElementById("bench-case").value;
  if (!name) return;
  const points = await getJSON("/bench/history?case=" + encodeURIComponent(name));
  const series = {};
  for (const p of points) {
    const label = p.params_label || "default";
    (series[label] = series[label] || []).push(p);
  }
  const traces = [];
  for (const [label, ps] of Object.entries(series)) {
    const x = ps.map((p) => new Date(p.time * 1000));
    traces.push({ x, y: ps.map((p) => p.ci_high ?? p.median), mode: "lines", line: { width: 0 },
      showlegend: false, hoverinfo: "skip", name: label + " ci" });
    traces.push({ x, y: ps.map((p) => p.ci_low ?? p.median), mode: "lines", line: { width: 0 },
      fill: "tonexty", fillcolor: "rgba(37,99,235,0.15)", showlegend: false, hoverinfo: "skip" });
    traces.push({ x, y: ps.map((p) => p.median), mode: "lines+markers", name: label });
  }
  const unit = points.length ? points[0].unit : "s";
  Plotly.react("bench-history", traces, {
    margin: { t: 10, r: 10, b: 40, l: 60 }, yaxis: { title: { text: "median (" + unit + ")" } },
  }, { responsive: true, displaylogo: false });
}

async function refreshVerdicts() {
  const status = document.getElementById("verdict-status");
  const body = document.querySelector("#verdicts tbody");
  try {
    const comparison = await getJSON("/bench/compare/latest");
    body.replaceChildren();
    for (const row of comparison.rows) {
      const tr = body.insertRow();
      cell(tr, row.case);
      cell(tr, row.params_label);
      cell(tr, row.ratio === null ? "" : row.ratio.toFixed(3));
      cell(tr, row.verdict, "verdict-" + row.verdict);
    }
    status.textContent = comparison.base ? "base " + comparison.base + " → head " + comparison.head : "Fewer than two runs to compare.";
  } catch (err) {
    status.textContent = err.message;
  }
}

document.getElementById("bench-case").addEventListener("change", refreshBenchHistory);

function refreshAll() {
  refreshJobs();
  refreshBenchCases();
  refreshVerdicts();
}

refreshAll();
setInterval(refreshJobs, 2000);
setInterval(() => { refreshBenchCases(); refreshVerdicts(); }, 15000);
