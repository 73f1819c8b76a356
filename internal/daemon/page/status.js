// pushd's status page: polls /status.json and draws one section per
// pipeline. Metrics are looked up by name, so series that other parts of
// pushd add show up in "all metrics" without changes here, and the known
// ones (quota share and use, freshness, reduction) appear once registered.
"use strict";
(function () {
  const U = window.PushdUI, el = U.el;
  const $ = (id) => document.getElementById(id);
  const CHART = 120; // seconds: the chart's shortest window

  function family(metrics, name) { return (metrics || []).find((f) => f.name === name); }
  function seriesOf(metrics, name, filter) {
    const f = family(metrics, name);
    return f ? f.series.filter((s) => !filter || filter(s.labels || {})) : [];
  }
  function total(metrics, name, filter) {
    return seriesOf(metrics, name, filter).reduce((a, s) => a + s.value, 0);
  }
  function has(metrics, name) { return !!family(metrics, name); }

  function tile(label, value, key, cls) {
    return el("div", { class: "tile" + (cls ? " " + cls : "") },
      el("dt", { text: label }), el("dd", { "data-stat": key, text: value }));
  }

  function sourceBlock(p, global) {
    const s = p.source, kv = el("dl", { class: "kv" });
    const add = (k, v) => kv.append(el("dt", { text: k }), el("dd", { text: v }));
    add("Type", s.type);
    if (s.type === "stdin") add("Position", `line ${U.fmtInt(s.read)} read`);
    if (s.type === "kafka") {
      add("Topics", (s.topics || []).join(", "));
      add("Group", s.group);
      add("Lag", U.fmtInt(total(p.metrics, "pushd_kafka_lag_messages")) + " records");
    }
    if (s.type === "http") {
      add("Listening on", s.listen);
      add("Events waiting for an answer", U.fmtInt(total(global, "pushd_http_ingest_unacked_events")));
    }
    add("Events read", U.fmtInt(p.counts.events_read));
    const box = el("div", {}, el("h3", { text: "Source" }), kv);
    if (s.type === "kafka") {
      const lag = seriesOf(p.metrics, "pushd_kafka_lag_messages");
      const committed = seriesOf(p.metrics, "pushd_kafka_committed_offset");
      const key = (l) => l.topic + "/" + l.partition;
      const offs = Object.fromEntries(committed.map((x) => [key(x.labels), x.value]));
      const rows = lag.slice().sort((a, b) => key(a.labels).localeCompare(key(b.labels), "en", { numeric: true }))
        .map((x) => el("tr", {}, el("td", { text: x.labels.topic }), el("td", { class: "num", text: x.labels.partition }),
          el("td", { class: "num", text: offs[key(x.labels)] === undefined ? "–" : U.fmtInt(offs[key(x.labels)]) }),
          el("td", { class: "num", text: U.fmtInt(x.value) })));
      box.append(rows.length ? el("div", { class: "scroll tall" }, el("table", { class: "data" },
        el("caption", { class: "sr-only", text: "Kafka lag per partition" }),
        el("thead", {}, el("tr", {}, ...["Topic", "Partition", "Committed", "Lag"].map((h, i) => el("th", { scope: "col", class: i ? "num" : null, text: h })))),
        el("tbody", {}, ...rows))) : el("p", { class: "empty", text: "No partition assigned yet." }));
    }
    return box;
  }

  function targetBlock(p) {
    const t = p.target, kv = el("dl", { class: "kv" });
    const add = (k, v) => kv.append(el("dt", { text: k }), el("dd", { text: v }));
    add("Dataset", t.dataset ? `${t.dataset} (${t.dataset_id})` : t.dataset_id);
    if (t.workspace) add("Workspace", t.workspace);
    add("Table", t.table);
    add("Requests accepted", U.fmtInt(p.counts.requests));
    add("Rows accepted", U.fmtInt(p.counts.rows_accepted));
    return el("div", {}, el("h3", { text: "Target" }), kv);
  }

  function quotaBlock(p) {
    const m = p.metrics, box = el("div", { class: "gauges" });
    const used = seriesOf(m, "pushd_powerbi_quota_used_ratio");
    const names = { requests: "Requests in the window", rows: "Rows in the window", in_flight: "Requests in flight" };
    for (const s of used.sort((a, b) => (a.labels.quota || "").localeCompare(b.labels.quota || ""))) {
      const q = s.labels.quota || "quota";
      const pct = Math.round(s.value * 100);
      U.gauge(box, "used-" + q, names[q] || q, s.value, 1, pct + "% used");
    }
    if (!used.length) box.append(el("p", { class: "empty", "data-quota": "none", text: "Quota use: not reported." }));
    const inflight = total(m, "pushd_powerbi_requests_in_flight");
    const remainingReq = seriesOf(m, "pushd_powerbi_quota_requests_remaining");
    const remainingRows = seriesOf(m, "pushd_powerbi_quota_rows_remaining");
    const kv = el("dl", { class: "kv" });
    const add = (k, v, key) => kv.append(el("dt", { text: k }), el("dd", { "data-stat": key, text: v }));
    const share = seriesOf(m, "pushd_powerbi_quota_share_ratio");
    add("Quota share in force", share.length ? share.map((s) => Math.round(s.value * 100) + "%" + (s.value >= 1 ? " (alone)" : "")).join(", ") : "none", "share");
    add("In flight now", U.fmtInt(inflight), "in_flight");
    if (remainingReq.length) add("Requests available now", U.fmtInt(remainingReq.reduce((a, s) => a + s.value, 0)), "requests_remaining");
    if (remainingRows.length) add("Rows available now", U.fmtInt(remainingRows.reduce((a, s) => a + s.value, 0)), "rows_remaining");
    add("Waited for the limiter", U.fmtSeconds(total(m, "pushd_powerbi_limiter_wait_seconds_total")), "limiter_wait");
    return el("div", {}, el("h3", { text: "Power BI quota" }), box, kv);
  }

  function reductionText(m) {
    const active = seriesOf(m, "pushd_reduce_active", (l) => true).filter((s) => s.value > 0);
    if (!has(m, "pushd_reduce_active")) return "none";
    return active.length ? active.map((s) => s.labels.mode || "on").join(", ") : "none (configured, not applied now)";
  }

  function healthBlock(p) {
    const m = p.metrics, kv = el("dl", { class: "kv" });
    const add = (k, v, key) => kv.append(el("dt", { text: k }), el("dd", { "data-stat": key, text: v }));
    const fresh = seriesOf(m, "pushd_pipeline_freshness_seconds");
    add("Freshness", fresh.length ? U.fmtSeconds(Math.max(...fresh.map((s) => s.value))) + " behind" : "not reported", "freshness");
    add("429s received", U.fmtInt(total(m, "pushd_powerbi_throttled_total")), "throttled");
    add("Retries", U.fmtInt(total(m, "pushd_powerbi_retries_total")), "retries");
    add("Slept for Retry-After", U.fmtSeconds(total(m, "pushd_powerbi_retry_after_seconds_total")), "retry_after");
    add("Events failed (will come again)", U.fmtInt(p.counts.events_failed), "events_failed");
    add("Batches split", U.fmtInt(p.counts.batches_split), "batches_split");
    add("Reduction in force", reductionText(m), "reduction");
    return el("div", {}, el("h3", { text: "Delivery" }), kv);
  }

  function deadLetterBlock(p) {
    const list = p.dead_letters || [];
    const head = el("h3", { text: `Last dead letters (${U.fmtInt(p.dead_letters_total)} in this run)` });
    if (!list.length) return el("div", {}, head, el("p", { class: "empty", text: "None: every event so far was delivered or is on its way." }));
    const why = (d) => d.kind === "rejected" ? `Power BI ${d.status || ""} ${d.code || ""}`.trim()
      : d.kind === "mapping" ? [d.field, d.rule].filter(Boolean).join(": ") : d.kind;
    return el("div", {}, head, el("ol", { class: "events deadletters", "data-dead-letters": p.name, "aria-label": `Last dead letters of ${p.name}, newest first` },
      ...list.map((d) => el("li", {},
        el("time", { datetime: d.at, text: U.fmtClock(d.at) }),
        el("div", { class: "what" },
          el("div", {}, el("span", { class: "badge warn", text: d.kind }), " ", el("strong", { text: why(d) }), " ", el("code", { text: d.position })),
          el("div", { class: "msg", text: d.message }))))));
  }

  function metricsTable(metrics, caption) {
    const rows = [];
    for (const f of metrics || []) for (const s of f.series) {
      const labels = Object.entries(s.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
      rows.push(el("tr", {}, el("td", { class: "code", title: f.help, text: f.name }), el("td", { class: "code", text: labels }),
        el("td", { class: "num", text: f.type === "histogram" || f.type === "summary" ? `${U.fmtNum(s.value)} (${U.fmtInt(s.count)})` : U.fmtNum(s.value) })));
    }
    if (!rows.length) return el("p", { class: "empty", text: "none" });
    return el("table", { class: "data" }, el("caption", { class: "sr-only", text: caption }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Metric" }), el("th", { scope: "col", text: "Labels" }), el("th", { scope: "col", class: "num", text: "Value" }))),
      el("tbody", {}, ...rows));
  }

  function pipelineSection(p, global) {
    const id = "p-" + p.name.replace(/[^A-Za-z0-9_-]/g, "_");
    let sec = document.querySelector(`[data-pipeline="${CSS.escape(p.name)}"]`);
    if (!sec) {
      sec = el("section", { class: "card", "data-pipeline": p.name, "aria-labelledby": id },
        el("h2", { id, text: "Pipeline " + p.name }),
        el("dl", { class: "tiles" }),
        el("figure", {}, U.svg("svg", { class: "chart", role: "img", "aria-labelledby": id + "-cap" }), el("figcaption", { id: id + "-cap" })),
        el("div", { class: "layout body" }),
        el("details", { class: "all" }, el("summary", { text: "All metrics of this pipeline" }), el("div", { class: "scroll tall" })));
    }
    const h = p.rates || [], r = h.length ? h[h.length - 1] : { events_in: 0, rows_out: 0 };
    const fresh = seriesOf(p.metrics, "pushd_pipeline_freshness_seconds");
    const throttled = total(p.metrics, "pushd_powerbi_throttled_total");
    sec.querySelector(".tiles").replaceChildren(
      tile("Events in / s", U.fmtNum(r.events_in), "events_per_second"),
      tile("Rows out / s", U.fmtNum(r.rows_out), "rows_per_second"),
      tile("Rows accepted", U.fmtInt(p.counts.rows_accepted), "rows_accepted"),
      tile("Freshness", fresh.length ? U.fmtSeconds(Math.max(...fresh.map((s) => s.value))) : "–", "freshness_tile"),
      tile("429s", U.fmtInt(throttled), "throttled_tile", throttled ? "warn" : ""),
      tile("Dead letters", U.fmtInt(p.dead_letters_total), "dead_letters", p.dead_letters_total ? "bad" : ""));
    const out = h.map((x) => x.rows_out);
    const shown = Math.max(CHART, out.length); // a fixed window, zeros before pushd started
    // Drawn once the section is in the page, where the chart has its width.
    sec.drawChart = () => U.barChart(sec.querySelector("svg"), Array(shown - out.length).fill(0).concat(out), { span: U.fmtSeconds(shown) + " ago" });
    const peak = Math.max(0, ...out);
    sec.querySelector("figcaption").dataset.peak = String(peak);
    sec.querySelector("figcaption").textContent = `Rows out per second over the last ${U.fmtSeconds(shown)}: ` +
      `now ${U.fmtNum(r.rows_out)}, peak ${U.fmtNum(peak)}; events in now ${U.fmtNum(r.events_in)} per second.`;
    sec.querySelector(".body").replaceChildren(
      el("div", { class: "col" }, sourceBlock(p, global), targetBlock(p), healthBlock(p)),
      el("div", { class: "col" }, quotaBlock(p), deadLetterBlock(p)));
    sec.querySelector(".all .scroll").replaceChildren(metricsTable(p.metrics, "All metrics of " + p.name));
    return sec;
  }

  function draw(st) {
    if (st.metrics_path) $("metrics-link").setAttribute("href", st.metrics_path);
    const box = $("pipelines");
    if (!st.pipelines.length) box.replaceChildren(el("p", { class: "card empty", text: "Starting: no pipeline yet." }));
    else {
      const sections = st.pipelines.map((p) => pipelineSection(p, st.metrics));
      box.replaceChildren(...sections);
      for (const sec of sections) sec.drawChart();
    }
    const n = (st.metrics || []).reduce((a, f) => a + f.series.length, 0);
    $("other-summary").textContent = `${n} series that name no pipeline`;
    $("other").replaceChildren(metricsTable(st.metrics, "Other metrics"));
    document.body.dataset.updated = st.now;
  }

  U.poll(() => "/status.json", 1000, draw, $("status"));
})();
