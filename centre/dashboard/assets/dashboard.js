// The operations page: renders each State the server pushes over
// server-sent events; EventSource reconnects by itself.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let state = null, skew = 0, updates = 0;

  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  const time = (s) => (s && !s.startsWith("0001") ? new Date(s).toLocaleTimeString() : "—");
  function ago(s) {
    if (!s || s.startsWith("0001")) return "never";
    const secs = Math.max(0, Math.round((Date.now() + skew - new Date(s).getTime()) / 1000));
    return secs < 90 ? `${secs} s ago` : `${Math.round(secs / 60)} min ago`;
  }

  function bars(g) {
    const max = Math.max(1, ...g.per_minute);
    const box = el("span", { class: "bars", title: g.per_minute.join(" ") });
    g.per_minute.forEach((n, i) => {
      const b = el("span", { class: g.admits_per_minute[i] === n && n > 0 ? "admit" : "" });
      b.style.height = `${Math.round((n / max) * 28)}px`;
      box.append(b);
    });
    return el("span", {}, box, ` ${g.per_minute[g.per_minute.length - 1]}/min`);
  }

  function render() {
    const s = state;
    $("span").textContent = `${s.minutes.length} min`;
    $("totals").textContent = `${s.totals.online}/${s.totals.gates} online · ${s.totals.admitted} admitted · ${s.totals.denied} denied · ${s.totals.conflicts} conflicts`;
    const alerts = $("alerts");
    alerts.replaceChildren(...(s.alerts.length ? s.alerts.map((a) => el("li", { class: a.level, "data-gate": a.gate || "" }, `${a.gate ? a.gate + ": " : ""}${a.text}`))
      : [el("li", { class: "none", text: "none" })]));
    $("gates").tBodies[0].replaceChildren(...s.gates.map((g) => el("tr", { "data-gate": g.key, "data-entries": String(g.entries), "data-admitted": String(g.admitted) },
      el("td", { class: "mono", text: g.key }),
      el("td", { text: g.event || "" }),
      el("td", { class: g.online ? "online" : "offline", text: g.online ? "online" : "offline" }),
      el("td", { class: "ago", "data-t": g.last_seen || "", text: ago(g.last_seen) }),
      el("td", { text: String(g.backlog) }),
      el("td", { text: `${g.clock_offset_ms >= 0 ? "+" : ""}${g.clock_offset_ms} ms` }),
      el("td", { class: "admitted", text: String(g.admitted) }),
      el("td", { text: String(g.denied) }),
      el("td", {}, bars(g)),
      el("td", { class: g.last ? g.last.verdict : "" }, g.last ? `${g.last.verdict} ${g.last.reason} ${time(g.last.at)}` : "—"))));
    $("nconflicts").textContent = `(${s.totals.conflicts})`;
    $("conflicts").tBodies[0].replaceChildren(...s.conflicts.map((c) => el("tr", {},
      el("td", { text: time(c.detected_at) }), el("td", { class: "mono", text: c.ticket }), el("td", { text: c.kind }),
      el("td", { text: `${c.first.gate} ${time(c.first.at)}` }), el("td", { text: `${c.second.gate} ${time(c.second.at)}` }))));
    document.body.dataset.updates = String(++updates);
  }

  function connect() {
    const es = new EventSource("/dashboard/events");
    es.addEventListener("state", (ev) => {
      state = JSON.parse(ev.data);
      skew = new Date(state.now).getTime() - Date.now();
      $("conn").textContent = "live";
      $("conn").className = "conn on";
      render();
    });
    es.onerror = () => {
      $("conn").textContent = "reconnecting…";
      $("conn").className = "conn off";
    };
  }
  // "last seen" ages between pushes.
  setInterval(() => document.querySelectorAll("td.ago").forEach((td) => { td.textContent = ago(td.dataset.t); }), 1000);
  connect();
})();
