// cooplocker dashboard: keeps the reservations, events and plan pages live
// from the tenant's event stream (/dashboard/live) and the JSON of
// /dashboard/data/* (both opened by the session cookie). No libraries, no
// build step: the chart is inline SVG drawn here.
"use strict";
(function () {
  // Revoke and force release ask first.
  document.addEventListener("submit", (ev) => {
    const danger = ev.target.querySelector("button.danger");
    if (danger && !window.confirm(danger.textContent + "?")) ev.preventDefault();
  });
  const $ = (id) => document.getElementById(id);
  const reservations = $("reservations");
  const events = $("events");
  const usage = $("usage");
  if (!reservations && !events && !usage) return;

  // ---- The server's clock -------------------------------------------------
  // Every answer of /dashboard/data carries `now`. The browser's clock may be
  // off by minutes: `offset` is the server's clock minus the browser's, taken
  // at the middle of the round trip, and every countdown uses it.
  let offset = 0;
  let clockKnown = false;
  const serverNow = () => Date.now() + offset;
  // An event's `at` is the store's clock: the store's now is at least that
  // when the event arrives, so it raises the offset if the server's `now`
  // was behind the store.
  const sawStoreTime = (at) => {
    const t = Date.parse(at);
    if (!Number.isNaN(t) && t - Date.now() > offset) offset = t - Date.now();
  };
  const clockNote = () => {
    const note = $("clock-note");
    if (!note || !clockKnown) return;
    const off = Math.round(offset / 1000);
    note.textContent = Math.abs(off) < 2
      ? "Times left are counted by the store's clock (this browser's clock agrees with it)."
      : `Times left are counted by the store's clock (this browser's clock is ${Math.abs(off)} s ${off > 0 ? "behind" : "ahead"}).`;
  };
  async function getJSON(url) {
    const sent = Date.now();
    const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const received = Date.now();
    if (!res.ok) throw new Error("HTTP " + res.status);
    const body = await res.json();
    const server = Date.parse(body.now);
    if (!Number.isNaN(server)) {
      offset = server - (sent + received) / 2;
      clockKnown = true;
    }
    return { body, res };
  }

  const status = $("live-status");
  const say = (state, text) => {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  };
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  };
  const cell = (row, text, cls) => row.appendChild(el("td", text, cls));

  /** "1 h 02 min", "4 min 05 s", "9 s"; "expired" at or below zero. */
  function left(ms) {
    if (ms <= 0) return "expired";
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (h > 0) return `${h} h ${two(m)} min ${two(sec)} s`;
    if (m > 0) return `${m} min ${two(sec)} s`;
    return `${sec} s`;
  }

  // ---- The live feed -------------------------------------------------------
  const listeners = [];
  function follow() {
    const source = new EventSource("/dashboard/live");
    source.onopen = () => say("live", "Updates live");
    source.onerror = () => say("reconnecting", "Reconnecting…");
    const handle = (msg) => {
      let e;
      try { e = JSON.parse(msg.data); } catch (_) { return; }
      if (e.type === "GAP") { for (const l of listeners) l(null); return; }
      if (e.at) sawStoreTime(e.at);
      for (const l of listeners) l(e);
    };
    for (const t of ["RESERVED", "UNRESERVED", "EXTENDED", "EXPIRED", "FORCE_RELEASED", "EXPIRING"]) source.addEventListener(t, handle);
    source.onmessage = handle;
  }

  // ---- Reservations --------------------------------------------------------
  // One page at a time from the listing's cursor (never every hold in the
  // DOM); re-read when an event arrives (at most once a second) and every 3 s
  // for the lines of waiters, which change without events.
  if (reservations) {
    const csrf = reservations.dataset.csrf;
    const body = reservations.tBodies[0];
    const form = $("filters");
    const info = $("page-info");
    const empty = $("empty");
    const next = $("page-next");
    const prev = $("page-prev");
    const first = $("page-first");
    const view = { cursor: "", back: [], nextCursor: null, sort: "resource", rows: [], lines: {} };
    let busy = false;
    let again = false;

    const query = () => {
      const p = new URLSearchParams();
      for (const n of ["prefix", "requester", "limit"]) {
        const v = form.elements[n].value.trim();
        if (v) p.set(n, v);
      }
      if (view.cursor) p.set("cursor", view.cursor);
      return p;
    };

    function kind(r) {
      if (r.mode !== "semaphore") return r.mode;
      const line = view.lines[r.resource];
      return `semaphore ${line ? Math.max(line.holders, 1) : 1}/${r.limit}`;
    }

    function sorted() {
      const rows = view.rows.slice();
      const by = {
        resource: (a, b) => (a.resource < b.resource ? -1 : a.resource > b.resource ? 1 : a.fencingToken - b.fencingToken),
        requester: (a, b) => (a.requester < b.requester ? -1 : a.requester > b.requester ? 1 : 0),
        left: (a, b) => (a.expiresAt ? Date.parse(a.expiresAt) : Infinity) - (b.expiresAt ? Date.parse(b.expiresAt) : Infinity),
        waiting: (a, b) => ((view.lines[b.resource] || {}).queueLength || 0) - ((view.lines[a.resource] || {}).queueLength || 0),
      }[view.sort];
      return rows.sort(by);
    }

    function render() {
      body.textContent = "";
      for (const r of sorted()) {
        const row = el("tr");
        row.dataset.resource = r.resource;
        cell(row, r.resource);
        cell(row, r.requester);
        cell(row, r.apiKeyLabel);
        cell(row, kind(r), "kind");
        cell(row, String(r.fencingToken));
        const td = cell(row, undefined, "left");
        if (r.expiresAt) {
          td.dataset.expires = String(Date.parse(r.expiresAt));
          td.dataset.reserved = String(Date.parse(r.reservedAt));
          const bar = el("span", undefined, "bar");
          bar.setAttribute("aria-hidden", "true");
          bar.appendChild(el("span"));
          td.appendChild(bar);
          td.appendChild(el("span", "", "countdown"));
          td.title = "expires at " + r.expiresAt;
        } else {
          td.textContent = "no expiry";
        }
        const line = view.lines[r.resource];
        cell(row, String(line ? line.queueLength : 0), "waiting");
        const deadline = cell(row, undefined, "deadline");
        if (r.holdDeadline) {
          // The lease policy's maxHoldSeconds: no extend goes past it.
          const t = el("time", r.holdDeadline.replace("T", " ").replace(/\.\d+Z$/, " UTC"));
          t.dateTime = r.holdDeadline;
          deadline.appendChild(t);
        }
        const action = el("td");
        const f = el("form");
        f.method = "post";
        f.action = "/dashboard/reservations/release";
        for (const [n, v] of [["csrf", csrf], ["resource", r.resource]]) {
          const i = el("input");
          i.type = "hidden"; i.name = n; i.value = v; f.appendChild(i);
        }
        const b = el("button", "Force release", "danger");
        b.type = "submit";
        b.setAttribute("aria-label", "Force release " + r.resource);
        f.appendChild(b); action.appendChild(f); row.appendChild(action);
        body.appendChild(row);
      }
      tick();
      const page = view.back.length + 1;
      info.textContent = `Page ${page}: ${view.rows.length} hold(s)` + (view.nextCursor ? ", more on the next page" : "");
      if (empty) empty.hidden = view.rows.length > 0;
      next.disabled = !view.nextCursor;
      prev.disabled = view.back.length === 0;
      first.disabled = view.back.length === 0;
    }

    // The countdowns and bars, from the server's clock.
    function tick() {
      if (!clockKnown) return;
      const now = serverNow();
      for (const td of body.querySelectorAll("td.left[data-expires]")) {
        const end = Number(td.dataset.expires);
        const start = Number(td.dataset.reserved);
        const ms = end - now;
        const share = end > start ? Math.max(0, Math.min(1, ms / (end - start))) : 0;
        const fill = td.querySelector(".bar > span");
        if (fill) fill.style.width = (share * 100).toFixed(1) + "%";
        const text = td.querySelector(".countdown");
        if (text) text.textContent = left(ms);
      }
    }

    async function load() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const { body: page } = await getJSON("/dashboard/data/reservations?" + query());
        view.rows = page.reservations;
        view.lines = page.resources || {};
        view.nextCursor = page.nextCursor;
        render();
        clockNote();
      } catch (e) {
        info.textContent = "Could not read the reservations (" + e.message + "); retrying.";
      } finally {
        busy = false;
        if (again) { again = false; setTimeout(load, 1000); }
      }
    }

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      view.cursor = ""; view.back = [];
      const url = new URL(window.location.href);
      url.search = query().toString();
      window.history.replaceState(null, "", url);
      load();
    });
    next.addEventListener("click", () => {
      if (!view.nextCursor) return;
      view.back.push(view.cursor);
      view.cursor = view.nextCursor;
      load();
    });
    prev.addEventListener("click", () => { view.cursor = view.back.pop() || ""; load(); });
    first.addEventListener("click", () => { view.cursor = ""; view.back = []; load(); });
    for (const b of document.querySelectorAll("button.sort")) {
      b.addEventListener("click", () => {
        view.sort = b.dataset.sort;
        for (const o of document.querySelectorAll("button.sort")) o.setAttribute("aria-pressed", String(o === b));
        render();
      });
    }
    let pending = null;
    listeners.push(() => { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 300); });
    setInterval(tick, 250);
    setInterval(load, 3000);
    load();
  }

  // ---- Activity (events page) -----------------------------------------------
  const TYPES = [
    // Colours pass WCAG AA on white (4.5:1 and more); each line also has its
    // own dash pattern, so colour is never the only cue.
    { type: "RESERVED", name: "reserved", colour: "#1b6b3a", dash: "" },
    { type: "UNRESERVED", name: "released", colour: "#1d3557", dash: "6 3" },
    { type: "EXPIRED", name: "expired", colour: "#8a4500", dash: "2 3" },
    { type: "FORCE_RELEASED", name: "force released", colour: "#9b1c1c", dash: "10 3 2 3" },
  ];
  if (events) {
    const chart = $("chart");
    const numbers = $("activity-table").tBodies[0];
    const contended = $("contended").tBodies[0];
    let series = null; // { start, bucketMs, counts: {TYPE: [..]} }

    // Moves the window so that its last bucket holds the server's now.
    function roll() {
      if (!series || !clockKnown) return;
      const n = series.counts.RESERVED.length;
      const last = Math.floor(serverNow() / series.bucketMs) * series.bucketMs;
      let shift = Math.round((last - (series.start + (n - 1) * series.bucketMs)) / series.bucketMs);
      if (shift <= 0) return;
      shift = Math.min(shift, n);
      for (const t of TYPES) {
        const c = series.counts[t.type];
        c.splice(0, shift);
        for (let i = 0; i < shift; i++) c.push(0);
      }
      series.start += shift * series.bucketMs;
    }

    function draw() {
      if (!series) return;
      roll();
      const n = series.counts.RESERVED.length;
      const secs = series.bucketMs / 1000;
      const W = 720, H = 180, L = 44, B = 24, T = 10;
      let peak = 0;
      for (const t of TYPES) for (const v of series.counts[t.type]) peak = Math.max(peak, v / secs);
      const top = Math.max(peak, 1);
      const x = (i) => L + (i * (W - L - 8)) / (n - 1);
      const y = (v) => T + (H - T - B) * (1 - v / secs / top);
      const NS = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(NS, "svg");
      svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
      svg.setAttribute("width", "100%");
      svg.setAttribute("role", "img");
      const add = (tag, attrs, text) => {
        const e = document.createElementNS(NS, tag);
        for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
        if (text !== undefined) e.textContent = text;
        svg.appendChild(e);
        return e;
      };
      add("line", { x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: "#4a5560" });
      add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#4a5560" });
      add("text", { x: L - 6, y: T + 10, "text-anchor": "end", "font-size": 11, fill: "#1d232a" }, top.toFixed(top < 10 ? 1 : 0) + "/s");
      add("text", { x: L - 6, y: H - B, "text-anchor": "end", "font-size": 11, fill: "#1d232a" }, "0");
      add("text", { x: L, y: H - 6, "font-size": 11, fill: "#1d232a" }, "15 min ago");
      add("text", { x: W - 8, y: H - 6, "text-anchor": "end", "font-size": 11, fill: "#1d232a" }, "now");
      const summary = [];
      let points = 0;
      numbers.textContent = "";
      for (const t of TYPES) {
        const c = series.counts[t.type];
        const pts = c.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
        const line = add("polyline", { points: pts, fill: "none", stroke: t.colour, "stroke-width": 2 });
        if (t.dash) line.setAttribute("stroke-dasharray", t.dash);
        line.dataset.type = t.type;
        const total = c.reduce((a, b) => a + b, 0);
        const minute = c.slice(-Math.round(60 / secs)).reduce((a, b) => a + b, 0);
        const most = Math.max(...c) / secs;
        points += c.filter((v) => v > 0).length;
        summary.push(`${t.name} ${total}`);
        const row = el("tr");
        row.dataset.type = t.type;
        row.dataset.total = String(total);
        const th = el("th");
        th.scope = "row";
        const key = el("span", undefined, "swatch");
        key.style.borderTopColor = t.colour;
        key.style.borderTopStyle = t.dash ? "dashed" : "solid";
        key.setAttribute("aria-hidden", "true");
        th.appendChild(key);
        th.appendChild(document.createTextNode(t.name + " (" + t.type + ")"));
        row.appendChild(th);
        cell(row, String(total), "total");
        cell(row, String(minute));
        cell(row, most.toFixed(1));
        numbers.appendChild(row);
      }
      svg.setAttribute("aria-label", "Events in the last 15 minutes: " + summary.join(", ") + ". Numbers in the table below.");
      svg.dataset.points = String(points);
      chart.textContent = "";
      chart.appendChild(svg);
    }

    function renderTop(top) {
      contended.textContent = "";
      if (!top.length) {
        const row = el("tr");
        const td = cell(row, "No events or waits in the last 15 minutes.");
        td.colSpan = 7;
        contended.appendChild(row);
        return;
      }
      for (const c of top) {
        const row = el("tr");
        row.dataset.resource = c.resource;
        cell(row, c.resource);
        cell(row, String(c.waiting), "waiting");
        cell(row, String(c.waits), "waits");
        cell(row, String(c.timedOut), "timed-out");
        cell(row, String(c.reserved));
        cell(row, String(c.expired));
        cell(row, String(c.forceReleased));
        contended.appendChild(row);
      }
    }

    async function loadActivity() {
      try {
        const { body } = await getJSON("/dashboard/data/activity");
        series = body.series;
        draw();
        renderTop(body.top);
      } catch (_) { /* the next reading tries again */ }
    }

    const prepend = (e) => {
      const row = el("tr", undefined, "fresh");
      for (const v of [e.at, e.type, e.resource || "", e.requester || "", e.apiKeyLabel || ""]) cell(row, v);
      events.tBodies[0].insertBefore(row, events.tBodies[0].firstChild);
      while (events.tBodies[0].rows.length > 200) events.tBodies[0].lastChild.remove();
    };
    listeners.push((e) => {
      if (!e) { window.location.reload(); return; }
      prepend(e);
      if (!series || !series.counts[e.type]) return;
      roll();
      const at = Date.parse(e.at);
      const i = Math.floor((at - series.start) / series.bucketMs);
      const c = series.counts[e.type];
      // An event stamped a little ahead of our estimate of now still counts.
      c[Math.max(0, Math.min(c.length - 1, i))] += 1;
      draw();
    });
    setInterval(draw, 2000);
    setInterval(loadActivity, 15000);
    loadActivity();
  }

  // ---- Plan: usage now ---------------------------------------------------------
  if (usage) {
    const put = (id, used, limit) => {
      const row = $(id);
      row.querySelector(".used").textContent = used;
      if (limit !== undefined) row.querySelector(".limit").textContent = limit;
      const share = row.querySelector(".share");
      const u = Number(used), l = Number(limit === undefined ? row.querySelector(".limit").textContent : limit);
      share.textContent = "";
      if (Number.isFinite(u) && Number.isFinite(l) && l > 0) {
        const m = el("meter");
        m.min = 0; m.max = l; m.value = Math.min(u, l);
        m.setAttribute("aria-label", `${u} of ${l}`);
        share.appendChild(m);
      }
    };
    async function loadUsage() {
      try {
        const { body: u, res } = await getJSON("/dashboard/data/usage");
        // What is left, as the API reports it: its RateLimit-* headers.
        const remaining = res.headers.get("RateLimit-Remaining") ?? String(u.reads.remaining);
        const limit = res.headers.get("RateLimit-Limit") ?? String(u.reads.limit);
        put("u-reads", remaining, limit);
        put("u-waiters", String(u.waiters), String(u.waiterLimit));
        put("u-keys", String(u.keys), u.keyLimit === null ? "unlimited" : String(u.keyLimit));
        put("u-active", String(u.active));
        say("live", "Updated " + new Date(serverNow()).toISOString().slice(11, 19) + " UTC.");
      } catch (e) {
        say("reconnecting", "Could not read the usage (" + e.message + "); retrying.");
      }
    }
    setInterval(loadUsage, 5000);
    loadUsage();
    return; // the plan page needs no event stream
  }
  follow();
})();
