
"use strict";
// Polls /api/status and redraws. Every value is set as text, never as
// markup: plugin errors and names are data, not HTML.
(function () {
  const POLL_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function num(n, digits) {
    if (n === null || n === undefined) return "–";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits || 0 });
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return num(n, i ? 1 : 0) + " " + units[i];
  }

  // A line chart of `values` (per second), scaled to its own maximum.
  function chart(values, everySeconds, what) {
    const box = el("div", "chart");
    const w = 400, h = 60;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    const max = values.reduce((a, b) => Math.max(a, b), 0);
    const line = document.createElementNS(SVG, "polyline");
    const step = values.length > 1 ? w / (values.length - 1) : w;
    line.setAttribute("points", values.map((v, i) =>
      (i * step).toFixed(1) + "," + (h - 2 - (max > 0 ? v / max : 0) * (h - 6)).toFixed(1)).join(" "));
    svg.appendChild(line);
    box.appendChild(svg);
    const minutes = Math.round(values.length * everySeconds / 60);
    box.appendChild(el("div", "caption", what + ": peak " + num(max, 1) + "/s over the last " +
      (minutes > 0 ? minutes + " min" : values.length * everySeconds + " s")));
    box.dataset.peak = String(max);
    return box;
  }

  function stat(label, value) {
    const d = el("div");
    d.appendChild(el("span", "label", label));
    d.appendChild(el("span", "value", value));
    return d;
  }

  function pumpCard(p, samples, every) {
    const card = el("section", "card pump");
    card.dataset.pump = p.name;
    card.dataset.state = p.state;
    card.dataset.rate = String(p.rate);
    const head = el("div", "pump-head");
    head.appendChild(el("h3", null, p.name));
    head.appendChild(el("span", "badge " + p.state, p.state));
    card.appendChild(head);
    const plugin = el("div", "mono", p.plugin_name + " " + p.plugin_version + " · sha256 " + p.sha256);
    plugin.title = p.plugin;
    card.appendChild(plugin);
    if (p.state !== "ok") {
      const err = el("p", "error", (p.kind ? p.kind + ": " : "") + p.error);
      if (p.since) err.title = "since " + p.since;
      card.appendChild(err);
    }
    const grid = el("div", "grid");
    grid.appendChild(stat("Records / s", num(p.rate, 1)));
    grid.appendChild(stat("Written", num(p.written)));
    grid.appendChild(stat("Dead letters", num(p.dead_lettered)));
    grid.appendChild(stat("Lane depth", num(p.lane_depth)));
    if (p.spool) {
      grid.appendChild(stat("Spool records", num(p.spool.records)));
      grid.appendChild(stat("Spool bytes", bytes(p.spool.bytes)));
    } else {
      grid.appendChild(stat("Buffer", "memory"));
    }
    card.appendChild(grid);
    const rates = samples.map((s) => (s.pumps[p.name] || { written: 0 }).written);
    const c = chart(rates, every, "records written");
    card.dataset.peak = c.dataset.peak;
    card.appendChild(c);
    const kinds = Object.keys(p.errors_by_kind);
    if (kinds.length) {
      const t = el("table", "errors");
      const hr = el("tr");
      hr.appendChild(el("th", null, "Error kind"));
      hr.appendChild(el("th", "num", "Count"));
      t.appendChild(hr);
      for (const k of kinds.sort()) {
        const r = el("tr");
        r.dataset.kind = k;
        r.appendChild(el("td", null, k));
        r.appendChild(el("td", "num", num(p.errors_by_kind[k])));
        t.appendChild(r);
      }
      card.appendChild(t);
    }
    return card;
  }

  function render(s) {
    const ready = $("ready");
    ready.textContent = s.ready ? "ready" : (s.started ? "not ready" : "starting");
    ready.className = "badge " + (s.ready ? "ok" : "down");
    ready.dataset.ready = String(s.ready);
    $("meta").textContent = "v" + s.version + " · " + s.now;
    const src = s.source;
    $("redis").textContent = (src.redis || "–") + (src.reachable ? " (reachable)" : " (unreachable)");
    $("redis").className = "value " + (src.reachable ? "" : "error-text");
    $("topology").textContent = [src.topology, src.kind, src.tls ? "TLS" : null].filter(Boolean).join(" · ");
    $("backlog").textContent = num(src.backlog);
    $("claim-rate").textContent = num(src.claim_rate, 1);
    $("claimed").textContent = num(src.claimed);
    $("takeovers").textContent = num(src.lease_takeovers);
    const re = $("redis-error");
    re.hidden = !src.error;
    re.textContent = src.error || "";
    const samples = s.history.samples;
    const every = s.history.every_seconds;
    $("claim-chart").replaceChildren(chart(samples.map((x) => x.claimed), every, "records claimed"));
    const body = el("tbody");
    for (const k of src.keys) {
      const r = el("tr");
      r.appendChild(el("td", "mono", k.key));
      r.appendChild(el("td", "num", num(k.backlog)));
      body.appendChild(r);
    }
    $("keys").tBodies[0].replaceWith(body);
    const rl = $("reload-text");
    if (s.last_reload) {
      rl.textContent = s.last_reload.at + " · " + s.last_reload.result + " · " + s.last_reload.detail;
      rl.className = s.last_reload.result === "ok" ? "" : "error";
    }
    $("pumps").replaceChildren(...s.pumps.map((p) => pumpCard(p, samples, every)));
    document.body.dataset.loaded = "true";
  }

  async function poll() {
    const fe = $("fetch-error");
    try {
      const r = await fetch("api/status", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      fe.hidden = true;
    } catch (e) {
      fe.hidden = false;
      fe.textContent = "cannot read /api/status: " + e.message;
    }
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
