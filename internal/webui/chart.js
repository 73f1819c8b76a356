// Shared helpers of pushd's pages: DOM building without innerHTML, number
// formatting, an SVG bar chart, an event strip, gauges and JSON polling.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";

  // el builds an element; attrs set attributes ("text" sets textContent),
  // children are nodes or strings.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    setAttrs(e, attrs);
    return e;
  }
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }

  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const decFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  function fmtInt(n) { return intFmt.format(Math.round(n || 0)); }
  function fmtNum(n) { return Math.abs(n) >= 100 ? intFmt.format(n) : decFmt.format(n || 0); }
  function fmtSeconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return decFmt.format(s) + " s";
    if (s < 7200) return decFmt.format(s / 60) + " min";
    return decFmt.format(s / 3600) + " h";
  }
  function fmtWindow(s) {
    if (s === 60) return "minute";
    if (s === 3600) return "hour";
    return fmtSeconds(s);
  }
  function fmtClock(d) {
    const t = d instanceof Date ? d : new Date(d);
    return t.toLocaleTimeString("en-GB", { hour12: false });
  }

  // niceMax rounds a chart maximum up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // barChart draws values (oldest first, one per second) into an <svg>.
  function barChart(node, values, opts) {
    // Drawn in the element's own pixels, so text keeps its shape at any width.
    const w = Math.max(node.clientWidth, 200), h = Math.max(node.clientHeight, 100), left = 46, bottom = 20, top = 8;
    node.setAttribute("viewBox", `0 0 ${w} ${h}`);
    node.replaceChildren();
    const max = niceMax(Math.max(0, ...values));
    const plotW = w - left - 4, plotH = h - top - bottom;
    for (const f of [0, 0.5, 1]) {
      const y = top + plotH * (1 - f);
      node.append(svg("line", { class: f === 0 ? "axis" : "grid", x1: left, x2: w - 4, y1: y, y2: y }));
      node.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", text: fmtNum(max * f) }));
    }
    const n = values.length, bw = plotW / Math.max(n, 1);
    let d = `M ${left} ${top + plotH}`;
    values.forEach((v, i) => {
      const y = top + plotH * (1 - v / max);
      d += ` L ${left + i * bw} ${y} L ${left + (i + 1) * bw} ${y}`;
    });
    d += ` L ${left + n * bw} ${top + plotH} Z`;
    node.append(svg("path", { class: "area", d }));
    const label = opts && opts.span ? opts.span : "";
    node.append(svg("text", { x: left, y: h - 4, text: label }));
    node.append(svg("text", { x: w - 4, y: h - 4, "text-anchor": "end", text: "now" }));
  }

  // strip draws, per second, a mark for each kind with a count (oldest
  // first): rows of marks for the kinds given.
  function strip(node, seconds, kinds) {
    const w = Math.max(node.clientWidth, 200), left = 46, rowH = 14, h = kinds.length * rowH + 4;
    node.setAttribute("viewBox", `0 0 ${w} ${h}`);
    node.replaceChildren();
    const n = seconds.length, bw = (w - left - 4) / Math.max(n, 1);
    kinds.forEach((k, r) => {
      const y = 2 + r * rowH;
      node.append(svg("text", { x: left - 6, y: y + 10, "text-anchor": "end", text: k.label }));
      node.append(svg("line", { class: "grid", x1: left, x2: w - 4, y1: y + rowH / 2, y2: y + rowH / 2 }));
      seconds.forEach((s, i) => {
        if (s[k.key] > 0) {
          node.append(svg("rect", { class: "mark-" + k.kind, x: left + i * bw, y: y + 1, width: Math.max(bw, 2), height: rowH - 2 }));
        }
      });
    });
  }

  // gauge returns (or updates) a meter: label, value of max, with the
  // text shown and read out; max 0 means "no limit".
  function gauge(container, key, label, value, max, text) {
    let g = container.querySelector(`[data-gauge="${key}"]`);
    if (!g) {
      const id = "g-" + Math.random().toString(36).slice(2);
      g = el("div", { class: "gauge", "data-gauge": key },
        el("div", { class: "gl" }, el("span", { id, text: label }), el("span", { class: "gv" })),
        el("div", { class: "track", role: "meter", "aria-labelledby": id, "aria-valuemin": 0 }, el("div", { class: "fill" })));
      container.append(g);
    }
    const track = g.querySelector(".track");
    const ratio = max > 0 ? Math.min(value / max, 1) : 0;
    g.classList.toggle("off", !(max > 0));
    g.classList.toggle("mid", ratio >= 0.6 && ratio < 0.9);
    g.classList.toggle("high", ratio >= 0.9);
    g.querySelector(".gv").textContent = text;
    g.dataset.value = String(value);
    track.setAttribute("aria-valuemax", String(max > 0 ? max : 1));
    track.setAttribute("aria-valuenow", String(max > 0 ? Math.min(value, max) : 0));
    track.setAttribute("aria-valuetext", label + ": " + text);
    g.querySelector(".fill").style.width = (ratio * 100).toFixed(1) + "%";
    return g;
  }

  // poll fetches url() every interval ms and hands the JSON to onData;
  // status shows whether the page is live.
  function poll(url, interval, onData, status) {
    let busy = false;
    async function tick() {
      if (busy) return;
      busy = true;
      try {
        const r = await fetch(url(), { cache: "no-store", headers: { Accept: "application/json" } });
        if (!r.ok) throw new Error("HTTP " + r.status);
        const data = await r.json();
        onData(data);
        status.textContent = "live · updated " + fmtClock(new Date());
        status.className = "status live";
      } catch (e) {
        status.textContent = "not updating: " + e.message;
        status.className = "status lost";
      } finally {
        busy = false;
      }
    }
    tick();
    return setInterval(tick, interval);
  }

  window.PushdUI = { el, svg, fmtInt, fmtNum, fmtSeconds, fmtWindow, fmtClock, niceMax, barChart, strip, gauge, poll };
})();
