// The emulator's live page: polls /emulator/v1/live and draws it.
"use strict";
(function () {
  const U = window.PushdUI, el = U.el;
  const $ = (id) => document.getElementById(id);
  const select = $("table-select");
  let chosen = "";       // "datasetId\ntable" of the rows shown
  let formFilled = false; // the fault form is filled once, then left to the user

  function liveURL() {
    const u = new URL("/emulator/v1/live", location.href);
    if (chosen) {
      const [ds, table] = chosen.split("\n");
      u.searchParams.set("dataset", ds);
      u.searchParams.set("table", table);
      u.searchParams.set("newest", "20");
    }
    return u.toString();
  }

  function tile(label, value, key, cls) {
    return el("div", { class: "tile" + (cls ? " " + cls : "") },
      el("dt", { text: label }), el("dd", { "data-total": key, text: U.fmtInt(value) }));
  }

  function drawTotals(v) {
    const t = v.totals;
    $("totals").replaceChildren(
      tile("Rows accepted", t.rows_accepted, "rows_accepted"),
      tile("POST rows accepted", t.post_rows, "post_rows"),
      tile("429 answers", t.throttled, "throttled", t.throttled ? "warn" : ""),
      tile("Injected errors", t.injected_errors, "injected_errors", t.injected_errors ? "bad" : ""),
      tile("Connections cut", t.connections_cut, "connections_cut", t.connections_cut ? "bad" : ""),
      tile("Datasets", (v.datasets || []).length, "datasets"));
  }

  function drawRate(v) {
    const secs = v.seconds || [];
    const rows = secs.map((s) => s.rows);
    U.barChart($("rate-chart"), rows, { span: U.fmtSeconds(secs.length) + " ago" });
    const last = rows.slice(-10);
    const now = last.length ? last.reduce((a, b) => a + b, 0) / last.length : 0;
    const peak = Math.max(0, ...rows);
    const total = rows.reduce((a, b) => a + b, 0);
    $("rate-desc").textContent = `Last ${U.fmtSeconds(secs.length)}: ${U.fmtInt(total)} rows, ` +
      `peak ${U.fmtInt(peak)} rows/s, ${U.fmtNum(now)} rows/s over the last 10 s.`;
    $("rate-desc").dataset.rate = String(now);
  }

  const kinds = [
    { key: "throttled", kind: "throttled", label: "429" },
    { key: "errors", kind: "error", label: "error" },
    { key: "cuts", kind: "cut", label: "cut" },
  ];

  function eventText(e) {
    const what = { throttled: "429", error: "error " + (e.status || ""), cut: "connection cut" }[e.kind] || e.kind;
    const where = e.table ? `${datasetName(e.dataset)} / ${e.table}` : datasetName(e.dataset);
    let s = what + (e.reason ? " · " + e.reason.replaceAll("_", " ") : "");
    if (where) s += " · " + where;
    if (e.retry_after) s += ` · Retry-After ${e.retry_after} s`;
    return s;
  }

  let names = {};
  function datasetName(id) { return id ? (names[id] || id) : ""; }

  function drawTimeline(v) {
    const secs = v.seconds || [];
    U.strip($("event-chart"), secs, kinds);
    const sum = (k) => secs.reduce((a, s) => a + s[k], 0);
    $("event-desc").textContent = `Last ${U.fmtSeconds(secs.length)}: ${U.fmtInt(sum("throttled"))} 429s, ` +
      `${U.fmtInt(sum("errors"))} injected errors, ${U.fmtInt(sum("cuts"))} cut connections.`;
    const list = $("events");
    const events = (v.events || []).slice(0, 50);
    if (!events.length) {
      list.replaceChildren(el("li", { class: "empty", text: "Nothing refused or cut so far." }));
      return;
    }
    list.replaceChildren(...events.map((e) => el("li", { "data-kind": e.kind },
      el("span", { class: "dot dot-" + e.kind, "aria-hidden": "true" }),
      el("time", { datetime: e.at, text: U.fmtClock(e.at) }),
      el("span", { class: "what", text: eventText(e) }))));
  }

  function quotaGauges(box, d, lim) {
    const q = d.quota;
    const win = (s) => U.fmtWindow(s);
    U.gauge(box, "requests", `Requests this ${win(lim.request_window_seconds)}`, q.requests, lim.requests_per_window,
      lim.requests_per_window ? `${U.fmtInt(q.requests)} / ${U.fmtInt(lim.requests_per_window)}` : `${U.fmtInt(q.requests)} (no limit)`);
    U.gauge(box, "rows", `Rows this ${win(lim.rows_window_seconds)}`, q.rows, lim.rows_per_window,
      lim.rows_per_window ? `${U.fmtInt(q.rows)} / ${U.fmtInt(lim.rows_per_window)}` : `${U.fmtInt(q.rows)} (no limit)`);
    U.gauge(box, "in_flight", "Requests in flight", q.in_flight, lim.max_in_flight,
      lim.max_in_flight ? `${q.in_flight} / ${lim.max_in_flight}` : `${q.in_flight} (no limit)`);
    if (lim.large_table_rows > 0) {
      U.gauge(box, "large_table", `Largest table (${q.largest_table || "none"}) toward the large-table rule`,
        q.largest_rows, lim.large_table_rows, `${U.fmtInt(q.largest_rows)} / ${U.fmtInt(lim.large_table_rows)} rows`);
      U.gauge(box, "large_requests", `Requests this ${win(lim.large_table_window_seconds)}` + (q.large_table ? " (rule applies)" : " (rule not yet applying)"),
        q.large_requests, lim.large_table_requests_per_window,
        `${U.fmtInt(q.large_requests)} / ${U.fmtInt(lim.large_table_requests_per_window)}`);
    }
  }

  function datasetCard(d, lim) {
    let card = document.querySelector(`[data-dataset-card="${CSS.escape(d.id)}"]`);
    if (!card) {
      const hid = "ds-" + d.id;
      card = el("article", { class: "card", "data-dataset-card": d.id, "aria-labelledby": hid },
        el("h3", { id: hid }), el("p", { class: "hint meta" }), el("div", { class: "gauges" }),
        el("details", { class: "tables" }, el("summary"), el("div", { class: "scroll tall" })));
      if (!document.querySelector("[data-dataset-card]")) card.querySelector("details").open = true;
    }
    card.querySelector("h3").textContent = d.name;
    card.querySelector(".meta").textContent = `${d.id} · retention ${d.retention}` +
      (d.workspace ? ` · workspace ${d.workspace}` : "") + ` · ${U.fmtInt(d.rows_accepted)} rows accepted, ${U.fmtInt(d.throttled)} 429s`;
    quotaGauges(card.querySelector(".gauges"), d, lim);
    const tables = d.tables || [];
    card.querySelector("summary").textContent = `${tables.length} table${tables.length === 1 ? "" : "s"}, ` +
      `${U.fmtInt(tables.reduce((a, t) => a + t.rows, 0))} rows held`;
    const body = el("tbody", {}, ...tables.map((t) => el("tr", {},
      el("th", { scope: "row", text: t.name }),
      el("td", { class: "num", "data-dataset": d.id, "data-table": t.name, text: U.fmtInt(t.rows) }))));
    card.querySelector(".scroll").replaceChildren(el("table", { class: "data" },
      el("caption", { class: "sr-only", text: `Tables of ${d.name}` }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Table" }), el("th", { scope: "col", class: "num", text: "Rows" }))),
      body));
    return card;
  }

  function drawDatasets(v) {
    const box = $("datasets");
    const list = v.datasets || [];
    if (!list.length) {
      box.replaceChildren(el("p", { class: "card empty", text: "No datasets yet: pushd provision, or pushd run with the embedded emulator, creates them." }));
      return;
    }
    box.replaceChildren(...list.map((d) => datasetCard(d, v.limits)));
  }

  function drawSelect(v) {
    const opts = [];
    for (const d of v.datasets || []) for (const t of d.tables || []) opts.push({ value: d.id + "\n" + t.name, label: `${d.name} / ${t.name}`, rows: t.rows });
    if (!chosen || !opts.some((o) => o.value === chosen)) {
      const first = opts.find((o) => o.rows > 0) || opts[0];
      chosen = first ? first.value : "";
      if (chosen) setTimeout(refresh, 0); // fetch its rows now, not at the next poll
    }
    const same = select.options.length === opts.length && opts.every((o, i) => select.options[i].value === o.value);
    if (!same) {
      select.replaceChildren(...opts.map((o) => el("option", { value: o.value, text: o.label })));
    }
    select.value = chosen;
  }

  function drawRows(v) {
    const box = $("rows");
    const r = v.rows;
    if (!r) {
      $("rows-count").textContent = "";
      box.replaceChildren(el("p", { class: "empty", text: chosen ? "Loading…" : "No table yet." }));
      return;
    }
    $("rows-count").textContent = `${U.fmtInt(r.count)} rows held; the newest ${r.rows.length}, newest first`;
    if (!r.rows.length) {
      box.replaceChildren(el("p", { class: "empty", text: r.count ? "Rows are counted but not kept (--discard-rows)." : "No rows yet." }));
      return;
    }
    const cols = [];
    for (const row of r.rows) for (const k of Object.keys(row)) if (!cols.includes(k)) cols.push(k);
    const cell = (x) => (x === null || x === undefined) ? "" : (typeof x === "object" ? JSON.stringify(x) : String(x));
    box.replaceChildren(el("table", { class: "data", "data-rows-of": r.table },
      el("caption", { class: "sr-only", text: `Newest rows of ${r.table}` }),
      el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col", text: c })))),
      el("tbody", {}, ...r.rows.slice().reverse().map((row) => el("tr", {}, ...cols.map((c) => el("td", { text: cell(row[c]) })))))));
  }

  function faultsText(f) {
    const parts = [];
    if (f.throttle_until && new Date(f.throttle_until) > new Date()) parts.push("429 until " + U.fmtClock(f.throttle_until) + (f.throttle_retry_after ? ` (Retry-After ${f.throttle_retry_after})` : ""));
    if (f.error_rate) parts.push(`errors ${Math.round(f.error_rate * 100)}%` + (f.all_routes ? " on every route" : ""));
    if (f.cut_rate) parts.push(`cuts ${Math.round(f.cut_rate * 100)}%`);
    if (f.latency) parts.push("latency " + f.latency);
    if (f.token_outage) parts.push("token outage");
    if (f.token_outage_until && new Date(f.token_outage_until) > new Date()) parts.push("token outage until " + U.fmtClock(f.token_outage_until));
    return parts.length ? parts.join(", ") : "none";
  }

  function drawFaults(v) {
    $("faults-now").textContent = "Faults in force: " + faultsText(v.faults || {}) + ".";
    if (formFilled) return;
    formFilled = true;
    const f = v.faults || {}, form = $("faults");
    form.error_rate.value = f.error_rate || 0;
    form.cut_rate.value = f.cut_rate || 0;
    form.latency.value = f.latency || "";
    form.throttle_retry_after.value = f.throttle_retry_after || "";
    form.all_routes.checked = !!f.all_routes;
    form.token_outage.checked = !!f.token_outage;
  }

  async function postFaults(body) {
    const out = $("faults-result");
    try {
      const r = await fetch("/emulator/v1/faults", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const data = await r.json();
      if (!r.ok) throw new Error((data.error && data.error.message) || ("HTTP " + r.status));
      out.textContent = "Applied at " + U.fmtClock(new Date()) + ": " + faultsText(data) + ".";
    } catch (e) {
      out.textContent = "Not applied: " + e.message;
    }
  }

  $("faults").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target, body = {
      error_rate: Number(f.error_rate.value) || 0, cut_rate: Number(f.cut_rate.value) || 0,
      all_routes: f.all_routes.checked, token_outage: f.token_outage.checked,
    };
    for (const k of ["latency", "throttle_for", "throttle_retry_after", "token_outage_for"]) {
      if (f[k].value.trim()) body[k] = f[k].value.trim();
    }
    postFaults(body);
  });
  $("faults-clear").addEventListener("click", () => {
    const f = $("faults");
    f.reset();
    postFaults({});
  });
  select.addEventListener("change", () => { chosen = select.value; refresh(); });

  function draw(v) {
    names = {};
    for (const d of v.datasets || []) names[d.id] = d.name;
    $("url").textContent = v.url;
    drawTotals(v);
    drawRate(v);
    drawTimeline(v);
    drawDatasets(v);
    drawSelect(v);
    drawRows(v);
    drawFaults(v);
    document.body.dataset.updated = v.now;
  }

  const status = $("status");
  let refresh = () => {};
  U.poll(liveURL, 1000, draw, status);
  refresh = async () => {
    try { draw(await (await fetch(liveURL(), { cache: "no-store" })).json()); } catch (e) { /* the next poll says */ }
  };
})();
