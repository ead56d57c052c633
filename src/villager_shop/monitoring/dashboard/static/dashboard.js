// The live dashboard: polls /api/monitoring/summary and /api/monitoring/history every 2 s and draws
// uPlot charts. Every figure is put in an element with a data-testid; its raw value is in
// data-value (the browser test compares those with the API).
"use strict";
(function () {
  const POLL_MS = 2000;
  const HORIZON_S = 3600;
  const $ = (id) => document.getElementById(id);
  const hist = {t: [], connections: [], threshold: [], p95: [], errors: [], redis: [], pg: []};
  let lastT = null;
  const charts = {};

  function show(id, value, text) {
    const el = $(id);
    if (!el) return;
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.textContent = text !== undefined ? text : (value === null || value === undefined ? "–" : String(value));
  }
  function fmt(v, digits) {
    return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", {maximumFractionDigits: digits});
  }
  function badge(id, status) {
    const el = $(id);
    el.dataset.value = status || "";
    el.textContent = status || "UNKNOWN";
    el.className = "badge " + (status === "OK" ? "ok" : status === "CRITICAL" ? "critical" : "unknown");
  }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function makeChart(id, series, opts) {
    const el = $(id);
    const o = Object.assign({
      width: Math.max(280, el.clientWidth || 400), height: 170,
      legend: {show: series.length > 1}, cursor: {show: true, points: {show: false}},
      scales: {x: {time: true}}, series: [{}].concat(series),
      axes: [{stroke: "#8892a6", grid: {stroke: "#2a3142"}}, {stroke: "#8892a6", grid: {stroke: "#2a3142"}, size: 55}],
    }, opts || {});
    const data = [[]].concat(series.map(() => []));
    const u = new uPlot(o, data, el);
    charts[id] = u;
    el.dataset.points = "0";
    return u;
  }

  function bars() { return uPlot.paths.bars({size: [0.8, 60]}); }

  function setup() {
    makeChart("chart-connections", [
      {label: "connections", stroke: "#5aa9ff", width: 2, spanGaps: true},
      {label: "threshold", stroke: "#ff6b6b", dash: [6, 4], width: 1, spanGaps: true}],
      {scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(10, max * 1.1)]}}});
    makeChart("chart-p95", [{label: "p95 ms", stroke: "#ffd166", width: 2, spanGaps: false}],
      {scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(5, max * 1.2)]}}});
    makeChart("chart-errors", [{label: "5xx %", stroke: "#ff6b6b", width: 2, spanGaps: false}],
      {scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.2)]}}});
    makeChart("chart-cache", [
      {label: "Redis", stroke: "#06d6a0", width: 2, spanGaps: false},
      {label: "PostgreSQL", stroke: "#5aa9ff", width: 2, spanGaps: true}],
      {scales: {x: {time: true}, y: {range: [0, 100]}}});
    makeChart("chart-orders", [{label: "orders", stroke: "#c77dff", fill: "rgba(199,125,255,0.45)", paths: bars(),
      points: {show: false}}], {scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.2)]}}});
    makeChart("chart-revenue", [{label: "revenue", stroke: "#06d6a0", fill: "rgba(6,214,160,0.45)", paths: bars(),
      points: {show: false}}], {scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.2)]}}});
    window.addEventListener("resize", () => {
      for (const [id, u] of Object.entries(charts)) u.setSize({width: Math.max(280, $(id).clientWidth), height: 170});
    });
  }

  function draw(id, data) {
    charts[id].setData(data);
    $(id).dataset.points = String(data[0].length);
  }

  function addHistory(points) {
    for (const p of points) {
      if (lastT !== null && p.t <= lastT) continue;
      lastT = p.t;
      hist.t.push(p.t); hist.connections.push(p.connections); hist.threshold.push(p.connections_threshold);
      hist.p95.push(p.p95_ms); hist.errors.push(p.error_pct); hist.redis.push(p.redis_hit_pct); hist.pg.push(p.pg_hit_pct);
    }
    const cut = (lastT || 0) - HORIZON_S;
    while (hist.t.length && hist.t[0] < cut) for (const k of Object.keys(hist)) hist[k].shift();
    draw("chart-connections", [hist.t, hist.connections, hist.threshold]);
    draw("chart-p95", [hist.t, hist.p95]);
    draw("chart-errors", [hist.t, hist.errors]);
    draw("chart-cache", [hist.t, hist.redis, hist.pg]);
  }

  function renderSummary(s) {
    show("seq", s.seq);
    $("sampled-at").textContent = new Date(s.sampled_at).toLocaleTimeString();
    badge("overall", s.status);
    show("connections", s.connections.value);
    show("connections-threshold", s.connections.threshold);
    badge("connections-status", s.connections.status);
    show("pg-hit", s.pg_cache_hit.value, fmt(s.pg_cache_hit.value, 2));
    badge("pg-hit-status", s.pg_cache_hit.status);
    show("redis-hit", s.redis_cache_hit.value, fmt(s.redis_cache_hit.value, 2));
    $("redis-hits").textContent = fmt(s.redis_cache_hit.hits, 0);
    $("redis-misses").textContent = fmt(s.redis_cache_hit.misses, 0);
    show("p95", s.latency_p95_ms, fmt(s.latency_p95_ms, 2));
    show("rps", s.rps, fmt(s.rps, 1));
    show("error-rate", s.error_pct, fmt(s.error_pct, 2));
    show("pool", s.pool.size, `${s.pool.size} open · ${s.pool.available} idle · ${s.pool.waiting} waiting (this worker)`);
    const o = s.orders || {};
    show("orders-last-hour", o.last_hour);
    show("orders-today", o.orders_today);
    show("revenue-today", o.revenue_today, fmt(o.revenue_today, 2));
    if (o.per_hour) draw("chart-orders", [o.per_hour.map((x) => x.t), o.per_hour.map((x) => x.orders)]);
    if (o.per_day) draw("chart-revenue", [o.per_day.map((x) => x.t), o.per_day.map((x) => x.revenue)]);
    renderMigration(s.migration || {});
    renderSlow(s.slow_queries || {});
    $("error").textContent = s.error ? "last sample failed: " + s.error : "";
  }

  function renderMigration(mg) {
    const phase = mg.phase || "unknown";
    const el = $("migration-phase");
    el.textContent = phase; el.dataset.value = phase;
    el.className = "badge " + (phase === "completed" || phase === "migrated" ? "ok" : phase.startsWith("roll") ? "critical" : "info");
    show("migration-steps", mg.steps_done, `${mg.steps_done ?? "–"} / ${mg.steps_total ?? "–"}`);
    $("migration-running").textContent = mg.running ? "running now" : "not running";
    const box = $("migration-tables");
    box.replaceChildren();
    for (const b of mg.backfill || []) {
      const row = document.createElement("div");
      row.className = "bar-row";
      const pct = b.rows_total ? Math.min(100, 100 * b.rows_done / b.rows_total) : 100;
      const label = document.createElement("div");
      label.className = "bar-label";
      const rows = document.createElement("span");
      rows.dataset.testid = "migration-rows-" + b.step;
      rows.dataset.value = String(b.rows_done);
      rows.textContent = `${fmt(b.rows_done, 0)} / ${fmt(b.rows_total, 0)}`;
      label.append(`${b.table} (${b.step}) `, rows,
        ` · ${b.finished ? "done" : fmt(b.rows_per_s, 0) + " rows/s · ETA " + duration(b.eta_s)}`);
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("div");
      fill.className = "fill" + (b.finished ? " done" : "");
      fill.style.width = pct.toFixed(1) + "%";
      bar.append(fill);
      row.append(label, bar);
      box.append(row);
    }
    if (!(mg.backfill || []).length) box.textContent = "no backfill recorded";
  }

  function renderSlow(sq) {
    show("slow-count", sq.available ? sq.count : null, sq.available ? String(sq.count) : "n/a");
    $("slow-note").textContent = sq.note || "";
    const body = $("slow-rows");
    body.replaceChildren();
    for (const q of sq.top || []) {
      const tr = document.createElement("tr");
      for (const v of [fmt(q.mean_ms, 1), fmt(q.max_ms, 1), fmt(q.calls, 0), q.query]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      body.append(tr);
    }
  }

  async function getJson(url) {
    const r = await fetch(url, {credentials: "same-origin", cache: "no-store"});
    if (r.status === 401 || r.status === 403) { location.reload(); throw new Error("signed out"); }
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  async function poll() {
    try {
      const url = "/api/monitoring/history" + (lastT !== null ? "?since=" + lastT : "");
      const [h, s] = await Promise.all([getJson(url), getJson("/api/monitoring/summary")]);
      addHistory(h.points);
      renderSummary(s);
      $("fetch-state").textContent = "live";
      $("fetch-state").dataset.value = "live";
    } catch (e) {
      $("fetch-state").textContent = "fetch failed: " + e.message;
      $("fetch-state").dataset.value = "error";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  setup();
  poll();
})();
