// NovaCron Stream dashboard: polls the worker's JSON views every 2 s and draws SVG charts.
"use strict";

const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
const METRICS = ["cpu_pct", "mem_pct", "disk_read_bps", "disk_write_bps", "net_in_bps",
  "net_out_bps"];
const state = { vm: null, metric: null, metricChosen: false, lastVm: null };

const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || body.error || response.statusText);
  return body;
}

function fmt(value, metric) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (metric && metric.endsWith("_bps")) {
    const units = ["B/s", "kB/s", "MB/s", "GB/s"];
    let v = value, i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
  }
  if (metric && metric.endsWith("_pct")) return `${value.toFixed(1)}%`;
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(4);
}

// Scores and thresholds near 100 differ in their nines (severities part at 99.99, 99.999 and
// 99.9999): show up to seven significant digits there.
function fmtScore(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return value >= 99 ? String(Number(value.toPrecision(7))) : value.toPrecision(4);
}

function fmtTime(ts) {
  return new Date(ts * 1000).toISOString().substring(11, 19);
}

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG_NS, tag.substring(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function severityBadge(incident) {
  if (!incident) return el("span", { class: "hint" }, "–");
  return el("span", { class: `sev ${incident.severity}` }, `${incident.severity} ${incident.kind}`);
}

// ------------------------------------------------------------------ summary, fleet, alerts

function renderSummary(stats) {
  const rates = stats.rates || {};
  const lag = (stats.consumer_lag || {}).total;
  $("summary").textContent = `${Math.round(rates.samples || 0)} samples/s · ${stats.samples} samples · `
    + `${stats.vms_tracked} VMs · ${stats.alerts.open_incidents} open incidents · `
    + `lag ${lag === undefined ? "–" : lag} · DLQ ${Object.values(stats.dlq).reduce((a, b) => a + b, 0)}`;
}

function renderFleet(page) {
  const body = $("fleet-rows");
  body.replaceChildren();
  for (const vm of page.vms) {
    const row = el("tr", { class: "vm-row", "data-vm": vm.vm_id });
    if (vm.vm_id === state.vm) row.classList.add("selected");
    row.append(el("td", {}, vm.vm_id));
    const score = el("td", {});
    const hot = vm.score !== null && vm.threshold !== null && vm.score >= vm.threshold;
    score.append(el("span", {
      class: hot ? "bar hot" : "bar",
      style: `width:${Math.max(1, (vm.score || 0) * 0.6)}px`,
    }));
    score.append(document.createTextNode(fmtScore(vm.score)));
    row.append(score, el("td", {}, fmtScore(vm.threshold)));
    const incident = el("td", {});
    incident.append(severityBadge(vm.open_incident));
    row.append(incident);
    row.addEventListener("click", () => selectVm(vm.vm_id));
    body.append(row);
  }
  $("fleet-total").textContent = `${page.vms.length} of ${page.total} VMs on this worker`;
  if (!state.vm && page.vms.length) selectVm(page.vms[0].vm_id);
}

function renderAlerts(data) {
  const list = $("alerts");
  list.replaceChildren();
  for (const a of data.alerts) {
    const item = el("li", { class: `alert ${a.status}` });
    item.append(el("span", { class: `sev ${a.severity}` }, a.status), document.createTextNode(
      ` ${fmtTime(a.ts)} ${a.vm_id} ${a.kind} score ${fmtScore(a.score)}`));
    item.addEventListener("click", () => selectVm(a.vm_id));
    list.append(item);
  }
}

// ------------------------------------------------------------------ VM panel

function selectVm(vmId) {
  if (state.vm !== vmId) { state.metricChosen = false; state.metric = null; }
  state.vm = vmId;
  history.replaceState(null, "", `#vm=${encodeURIComponent(vmId)}`);
  for (const row of document.querySelectorAll("tr.vm-row")) {
    row.classList.toggle("selected", row.dataset.vm === vmId);
  }
  refreshVm();
}

function pickMetric(vm) {
  if (state.metricChosen && state.metric) return state.metric;
  const raised = vm.alerts.filter((a) => a.status !== "resolved");
  const last = raised.length ? raised[raised.length - 1] : null;
  if (last && last.attribution) {
    const top = Object.entries(last.attribution).sort((a, b) => b[1] - a[1])[0];
    if (top && METRICS.includes(top[0])) return top[0];
  }
  const series = vm.series || {};
  return METRICS.find((m) => (series[m] || []).some((v) => v !== null)) || "cpu_pct";
}

function renderMetricSelect(vm) {
  const select = $("metric-select");
  const series = vm.series || {};
  const available = METRICS.filter((m) => (series[m] || []).some((v) => v !== null)
    || vm.forecasts[m]);
  if (select.dataset.options !== available.join(",")) {
    select.replaceChildren(...available.map((m) => el("option", { value: m }, m)));
    select.dataset.options = available.join(",");
  }
  select.value = state.metric;
}

function linePath(points) {
  let d = "";
  let pen = false;
  for (const [x, y] of points) {
    if (y === null || Number.isNaN(y)) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

function scales(svg, x0, x1, y0, y1, pad) {
  const box = svg.viewBox.baseVal;
  const left = 56, right = box.width - 8, top = 8, bottom = box.height - 18;
  const spanX = x1 - x0 || 1;
  let lo = y0, hi = y1;
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const margin = pad ? (hi - lo) * 0.08 : 0;
  lo = lo >= 0 ? Math.max(0, lo - margin) : lo - margin;  // metrics are never negative
  hi += margin;
  return {
    x: (t) => left + ((t - x0) / spanX) * (right - left),
    y: (v) => (v === null ? null : bottom - ((v - lo) / (hi - lo)) * (bottom - top)),
    left, right, top, bottom, lo, hi,
  };
}

function drawAxes(svg, s, x0, x1, metric) {
  for (let i = 0; i <= 4; i += 1) {
    const v = s.lo + ((s.hi - s.lo) * i) / 4;
    const y = s.y(v);
    svg.append(el("svg:line", { class: "grid", x1: s.left, x2: s.right, y1: y, y2: y }));
    svg.append(el("svg:text", { x: 2, y: y + 4 }, fmt(v, metric)));
  }
  for (let i = 0; i <= 4; i += 1) {
    const t = x0 + ((x1 - x0) * i) / 4;
    svg.append(el("svg:text", { x: s.x(t) - 24, y: s.bottom + 14 }, fmtTime(t)));
  }
}

function bandLevel(forecast) {
  const levels = forecast.levels || [];
  return levels.length ? levels[levels.length - 1] : null;
}

function renderChart(vm, metric) {
  const svg = $("vm-chart");
  svg.replaceChildren();
  const series = vm.series || { ts: [] };
  const ts = series.ts || [];
  const values = series[metric] || [];
  const forecast = vm.forecasts[metric];
  const level = forecast ? bandLevel(forecast) : null;
  // forecast points up to half the observed span past the last sample (at least 3), bounds
  // clipped to what the metric can physically be (rates >= 0, percentages within 0-100)
  const horizon = ts.length > 1 ? ts[ts.length - 1] + (ts[ts.length - 1] - ts[0]) / 2 : Infinity;
  const clip = (v) => (v === undefined || v === null ? v
    : Math.min(metric.endsWith("_pct") ? 100 : Infinity, Math.max(0, v)));
  const clipAll = (bounds) => Object.fromEntries(
    Object.entries(bounds).map(([k, v]) => [k, clip(v)]));
  const fpoints = (forecast ? forecast.points : [])
    .filter((p, i) => i < 3 || p.ts <= horizon)
    .map((p) => ({ ts: p.ts, yhat: clip(p.yhat), lower: clipAll(p.lower), upper: clipAll(p.upper) }));
  const allT = ts.concat(fpoints.map((p) => p.ts));
  const alerts = vm.alerts.filter((a) => ts.length && a.ts >= ts[0]);
  if (!allT.length) {
    svg.append(el("svg:text", { x: 300, y: 150 }, "no recent samples for this VM"));
    return null;
  }
  const ys = values.filter((v) => v !== null);
  for (const p of fpoints) {
    ys.push(p.yhat);
    if (level && p.lower[level] !== undefined) ys.push(p.lower[level], p.upper[level]);
  }
  for (const a of alerts) if (a.actual && a.actual[metric] !== undefined) ys.push(a.actual[metric]);
  const x0 = Math.min(...allT), x1 = Math.max(...allT);
  svg.dataset.lastTs = ts.length ? String(ts[ts.length - 1]) : "";
  svg.dataset.metric = metric;
  const s = scales(svg, x0, x1, Math.min(...ys), Math.max(...ys), true);
  drawAxes(svg, s, x0, x1, metric);

  // incident spans: from each open to its resolution (or the end of the chart)
  const spans = new Map();
  for (const a of vm.alerts) {
    const span = spans.get(a.incident_id) || { start: a.opened_at || a.ts, end: null };
    if (a.status === "resolved") span.end = a.ts;
    spans.set(a.incident_id, span);
  }
  for (const span of spans.values()) {
    const start = Math.max(span.start, x0), end = span.end === null ? x1 : Math.min(span.end, x1);
    if (end <= start) continue;
    svg.append(el("svg:rect", { class: "incident-span", x: s.x(start), y: s.top,
      width: Math.max(2, s.x(end) - s.x(start)), height: s.bottom - s.top }));
  }

  if (forecast && fpoints.length && level) {
    const upper = fpoints.map((p) => [s.x(p.ts), s.y(p.upper[level])]);
    const lower = fpoints.map((p) => [s.x(p.ts), s.y(p.lower[level])]).reverse();
    svg.append(el("svg:path", {
      class: "forecast-band", id: "forecast-band",
      d: `${linePath(upper)}${linePath(lower).replace(/^M/, "L")}Z`,
    }));
  }
  if (forecast && fpoints.length) {
    svg.append(el("svg:path", { class: "forecast-line", id: "forecast-line",
      d: linePath(fpoints.map((p) => [s.x(p.ts), s.y(p.yhat)])) }));
  }
  svg.append(el("svg:path", { class: "metric-line", id: "metric-line",
    d: linePath(ts.map((t, i) => [s.x(t), values[i] === null ? null : s.y(values[i])])) }));

  for (const a of alerts) {
    let v = a.actual && a.actual[metric] !== undefined ? a.actual[metric] : null;
    if (v === null) {
      const i = ts.findIndex((t) => t >= a.ts);
      v = i >= 0 ? values[i] : null;
    }
    const cy = v === null ? s.top + 6 : s.y(v);
    const marker = el("svg:circle", {
      class: a.status === "resolved" ? "resolved-marker" : "anomaly-marker",
      cx: s.x(a.ts), cy, r: a.status === "open" ? 6 : 4,
      "data-incident": a.incident_id, "data-status": a.status,
    });
    marker.append(el("svg:title", {},
      `${a.status} ${a.severity} ${a.kind} score ${fmtScore(a.score)} at ${fmtTime(a.ts)}`));
    svg.append(marker);
  }
  return [x0, x1];
}

function renderScore(vm, range) {
  const svg = $("score-chart");
  svg.replaceChildren();
  const series = vm.series || { ts: [] };
  const ts = series.ts || [];
  if (!ts.length) return;
  const [x0, x1] = range || [ts[0], ts[ts.length - 1]];
  const s = scales(svg, x0, x1, 0, 100, false);
  svg.append(el("svg:text", { x: 2, y: 16 }, "score"));
  svg.append(el("svg:path", { class: "threshold-line",
    d: linePath(ts.map((t, i) => [s.x(t), s.y(series.threshold[i])])) }));
  svg.append(el("svg:path", { class: "score-line", id: "score-line",
    d: linePath(ts.map((t, i) => [s.x(t), s.y(series.score[i])])) }));
}

function renderDetails(vm, metric) {
  const incident = $("incident");
  const open = vm.open_incident;
  const latest = vm.alerts.length ? vm.alerts[vm.alerts.length - 1] : null;
  const raised = vm.alerts.filter((a) => a.status !== "resolved");
  const last = raised.length ? raised[raised.length - 1] : latest;
  incident.replaceChildren();
  if (last) {
    incident.append(severityBadge(open || last), el("div", {},
      `${last.incident_id} · ${latest.status} · score ${fmtScore(last.score)} / `
      + `${fmtScore(last.threshold)}`));
    const attribution = Object.entries(last.attribution || {}).sort((a, b) => b[1] - a[1]);
    for (const [feature, points] of attribution.slice(0, 3)) {
      incident.append(el("div", { class: "hint" }, `${feature}: ${fmt(points)} pts · typical `
        + `${fmt((last.typical || {})[feature], feature)} · actual ${fmt((last.actual || {})[feature], feature)}`));
    }
  } else incident.textContent = "no incident";
  const forecast = vm.forecasts[metric];
  const fc = $("forecast");
  if (forecast) {
    const acc = forecast.accuracy || {};
    const cov = Object.entries(acc.coverage || {}).map(([l, c]) => `${l}%: ${fmt(c * 100)}%`);
    fc.textContent = `${forecast.model} · issued ${fmtTime(forecast.issued_at)} · `
      + `${forecast.points.length} points · MAE ${fmt(acc.mae, metric)} · MASE ${fmt(acc.mase)}`
      + (cov.length ? ` · coverage ${cov.join(", ")}` : "");
  } else fc.textContent = "no forecast for this metric yet";
  $("actions").textContent = vm.actions.length
    ? vm.actions.slice(-3).map((a) => `${a.action} ${a.resource}: ${a.reason}`).join(" · ")
    : "none";
  const model = vm.model || {};
  $("model").textContent = model.known
    ? `${model.samples} samples · threshold ${fmtScore(model.threshold)} · `
      + `${model.incidents_opened} incidents · state ${model.state_bytes} B`
    : "–";
}

async function refreshVm() {
  if (!state.vm) return;
  let vm;
  try {
    vm = await getJSON(`/vms/${encodeURIComponent(state.vm)}`);
  } catch (err) {
    $("vm-status").textContent = String(err.message);
    $("vm-status").className = "hint error";
    return;
  }
  state.metric = pickMetric(vm);
  $("vm-title").textContent = vm.vm_id;
  $("vm-status").className = "hint";
  $("vm-status").textContent = `last sample ${vm.last_ts ? fmtTime(vm.last_ts) : "–"}`;
  renderMetricSelect(vm);
  const range = renderChart(vm, state.metric);
  renderScore(vm, range);
  renderDetails(vm, state.metric);
  document.body.dataset.renderedVm = vm.vm_id;
}

async function poll() {
  try {
    const [stats, fleet, alerts] = await Promise.all([
      getJSON("/stats"), getJSON("/vms?limit=25"), getJSON("/alerts?limit=20")]);
    renderSummary(stats);
    renderFleet(fleet);
    renderAlerts(alerts);
    await refreshVm();
  } catch (err) {
    $("summary").textContent = `worker unreachable: ${err.message}`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

$("metric-select").addEventListener("change", (event) => {
  state.metric = event.target.value;
  state.metricChosen = true;
  refreshVm();
});
const fromHash = new URLSearchParams(location.hash.substring(1)).get("vm");
if (fromHash) state.vm = fromHash;
poll();
