// cooplocker dashboard: keeps the reservations and events pages live from the
// tenant's event stream (/dashboard/live, opened by the session cookie).
"use strict";
(function () {
  // Revoke and force release ask first.
  document.addEventListener("submit", (ev) => {
    const danger = ev.target.querySelector("button.danger");
    if (danger && !window.confirm(danger.textContent + "?")) ev.preventDefault();
  });
  const reservations = document.getElementById("reservations");
  const events = document.getElementById("events");
  if (!reservations && !events) return;
  const status = document.getElementById("live-status");
  const say = (t) => { if (status) status.textContent = t; };
  const cell = (row, text) => { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); return td; };
  const csrf = reservations ? reservations.dataset.csrf : "";
  const empty = document.getElementById("empty");

  function upsert(e) {
    const body = reservations.tBodies[0];
    let row = Array.from(body.rows).find((r) => r.dataset.resource === e.resource);
    if (e.type === "RESERVED" || e.type === "EXTENDED") {
      if (!row) {
        row = document.createElement("tr");
        row.dataset.resource = e.resource;
        const before = Array.from(body.rows).find((r) => r.dataset.resource > e.resource);
        body.insertBefore(row, before || null);
      }
      row.textContent = "";
      cell(row, e.resource);
      cell(row, e.requester);
      cell(row, e.apiKeyLabel);
      cell(row, String(e.fencingToken));
      cell(row, e.expiresAt || "never");
      const td = document.createElement("td");
      const form = document.createElement("form");
      form.method = "post";
      form.action = "/dashboard/reservations/release";
      for (const [n, v] of [["csrf", csrf], ["resource", e.resource]]) {
        const i = document.createElement("input");
        i.type = "hidden"; i.name = n; i.value = v; form.appendChild(i);
      }
      const b = document.createElement("button");
      b.type = "submit"; b.className = "danger"; b.textContent = "Force release";
      form.appendChild(b); td.appendChild(form); row.appendChild(td);
      row.classList.add("fresh");
    } else if (row) {
      row.remove();
    }
    if (empty) empty.hidden = body.rows.length > 0;
  }

  function prepend(e) {
    const row = document.createElement("tr");
    for (const v of [e.at, e.type, e.resource || "", e.requester || "", e.apiKeyLabel || ""]) cell(row, v);
    row.classList.add("fresh");
    events.tBodies[0].insertBefore(row, events.tBodies[0].firstChild);
    while (events.tBodies[0].rows.length > 200) events.tBodies[0].lastChild.remove();
  }

  const source = new EventSource("/dashboard/live");
  source.onopen = () => say("live");
  source.onerror = () => say("reconnecting…");
  const handle = (msg) => {
    let e;
    try { e = JSON.parse(msg.data); } catch (_) { return; }
    if (e.type === "GAP") { window.location.reload(); return; }
    if (reservations) upsert(e);
    if (events) prepend(e);
  };
  for (const t of ["RESERVED", "UNRESERVED", "EXTENDED", "EXPIRED", "FORCE_RELEASED"]) source.addEventListener(t, handle);
  source.onmessage = handle;
})();
