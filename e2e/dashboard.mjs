// Dashboard end-to-end in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core). Started by tests/api/dashboard/e2e.rs with
// BASE (an instance whose OIDC provider is the tests' provider) and SHOTS (where
// to save a screenshot of each page).
//
// sign in -> the key is shown -> keys page shows scopes -> a reserve made
// through the API with that key appears live on the reservations page, its
// countdown moves, its kind shows, a waiter made through the API raises the
// resource's line and the hand-over lowers it, filters and pages work by
// keyboard -> the activity chart gains a point for a reserve -> the plan
// shows live usage -> 10,000 holds stay paged, and the events page survives
// the trimmed history -> rotate the key -> the old key
// gets 401 from the API.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const BASE = process.env.BASE;
const SHOTS = process.env.SHOTS;
const ADMIN = process.env.ADMIN_TOKEN;
if (!BASE || !SHOTS) {
  console.error("BASE and SHOTS must be set");
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });

const api = async (key, path, body) => {
  const res = await fetch(BASE + path, {
    method: body ? "POST" : "GET",
    headers: { "X-Api-Key": key, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.text() };
};
const expect = (ok, what) => {
  if (!ok) throw new Error(what);
  console.log("ok -", what);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
// Each page in full, and the first screen of the four main pages as the
// README's pictures (docs/img/dashboard-*.png are copies of readme-*.png).
const shot = async (name, readme) => {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
  if (readme) await page.screenshot({ path: `${SHOTS}/readme-${readme}.png` });
};
const text = async (sel) => ((await page.textContent(sel)) || "").trim();

// WCAG AA: every text element matched has a contrast of at least 4.5:1
// against the first opaque background behind it.
const contrast = () =>
  page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const bg = (e) => {
      for (; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const worst = [];
    for (const e of document.querySelectorAll("main *, header *")) {
      if (!e.childNodes.length || ![...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
      if (!e.getClientRects().length) continue;
      const a = lum(rgb(getComputedStyle(e).color).slice(0, 3));
      const b = lum(bg(e));
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < 4.5) worst.push(`${e.tagName}.${e.className} "${e.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
    }
    return worst;
  });

let failed = false;
try {
  await page.goto(BASE + "/dashboard");
  expect(page.url().endsWith("/dashboard/login"), "an unsigned visitor lands on the sign-in page");
  await shot("1-sign-in");

  await page.click("#oidc-signin");
  await page.waitForSelector("#secret");
  const key = (await page.textContent("#secret")).trim();
  expect(key.startsWith("ck_"), "the API key is shown right after the first sign-in");
  await shot("2-welcome-key");

  // Keys: each key's scope, and the scope is chosen when a key is created.
  await page.click("text=Done");
  await page.waitForSelector("table caption");
  expect((await page.textContent("main")).includes("default"), "the keys page lists the default key");
  expect((await text('tr[data-key] td.scope')) === "write", "the default key's scope (write) is shown");
  const scopes = await page.$$eval("#scope option", (os) => os.map((o) => o.value));
  expect(scopes.includes("read") && scopes.includes("write"), "a new key's scope can be set to read or write");
  const badKeys = await contrast();
  expect(badKeys.length === 0, `every text of the keys page passes AA contrast ${badKeys.join("; ")}`);
  await shot("3-keys", "keys");

  // A lease policy (set through the admin API) caps holds at an hour.
  await page.click("nav >> text=Plan");
  const tenant = (await text("main dd code"));
  const patched = await fetch(`${BASE}/api/v1/admin/tenants/${tenant}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ policy: { maxHoldSeconds: 3600 } }),
  });
  expect(patched.status === 200, `the tenant's policy: maxHoldSeconds 3600 (admin PATCH: ${patched.status})`);

  // Reservations: the live marker says it once.
  await page.click("nav >> text=Reservations");
  await page.waitForFunction(() => document.getElementById("live-status")?.dataset.state === "live");
  const marker = await text("p.hint");
  expect(marker === "Updates live", `the live marker says "live" once (got "${marker}")`);
  const reserved = await api(key, "/api/v1/Reservation/reserve", [
    { resource: "e2e-lock", requester: "e2e-worker", ttlSeconds: 600 },
    { resource: "e2e-sem", requester: "e2e-worker", ttlSeconds: 600, limit: 3 },
  ]);
  expect(reserved.status === 200 && reserved.body.includes("RESERVED"), "a reserve through the API with that key");
  await page.waitForSelector('tr[data-resource="e2e-lock"] .countdown', { timeout: 10000 });
  const row = await text('tr[data-resource="e2e-lock"]');
  expect(row.includes("e2e-worker") && row.includes("default"), "the reservation appears live on the reservations page");
  expect((await text('tr[data-resource="e2e-lock"] td.kind')) === "exclusive", "an exclusive hold says so");
  const deadline = await page.getAttribute('tr[data-resource="e2e-lock"] td.deadline time', "datetime");
  const expires = JSON.parse(reserved.body).results[0].expiresAt;
  expect(Date.parse(deadline) - Date.parse(expires) > 2900 * 1000, `a hold's holdDeadline (${deadline}) is shown, an hour after its start`);
  await page.waitForFunction(() => document.querySelector('tr[data-resource="e2e-sem"] td.kind')?.textContent === "semaphore 1/3");
  console.log("ok - a semaphore hold shows its permits used of its limit (1/3)");

  // The countdown moves, by the server's clock.
  await page.waitForFunction(() => /\d/.test(document.querySelector('tr[data-resource="e2e-lock"] .countdown')?.textContent || ""));
  const first = await text('tr[data-resource="e2e-lock"] .countdown');
  await sleep(1600);
  const second = await text('tr[data-resource="e2e-lock"] .countdown');
  expect(first !== second && /min/.test(first), `the countdown moves ("${first}" then "${second}")`);
  const width = await page.$eval('tr[data-resource="e2e-lock"] .bar > span', (s) => parseFloat(s.style.width));
  expect(width > 90 && width <= 100, `the time-left bar is nearly full for a fresh 10-minute hold (${width}%)`);

  // A browser whose clock is an hour fast still counts down by the server's.
  const skewed = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  await skewed.addCookies(await page.context().cookies());
  await skewed.clock.install({ time: Date.now() + 3600 * 1000 });
  const fast = await skewed.newPage();
  await fast.goto(BASE + "/dashboard/reservations");
  await fast.waitForFunction(() => /\d/.test(document.querySelector('tr[data-resource="e2e-lock"] .countdown')?.textContent || ""));
  const browserNow = await fast.evaluate(() => new Date().getTime());
  const fastLeft = await fast.textContent('tr[data-resource="e2e-lock"] .countdown');
  const note = await fast.textContent("#clock-note");
  expect(browserNow - Date.now() > 3500 * 1000 && /^9 min/.test(fastLeft), `with the browser's clock an hour fast the countdown still says "${fastLeft}"`);
  expect(/3[56]\d\d s ahead/.test(note), `and the page says the browser's clock is off ("${note}")`);
  await skewed.close();

  // A waiter raises the line, the hand-over lowers it.
  const holder = await api(key, "/api/v1/Reservation/reserve", [{ resource: "e2e-queue", requester: "first", ttlSeconds: 600 }]);
  const token = JSON.parse(holder.body).results[0].releaseToken;
  expect(Boolean(token), "a holder of e2e-queue");
  await page.waitForSelector('tr[data-resource="e2e-queue"]', { timeout: 10000 });
  expect((await text('tr[data-resource="e2e-queue"] td.waiting')) === "0", "no one waits for e2e-queue yet");
  const waiting = api(key, "/api/v1/Reservation/reserve?waitSeconds=30", [{ resource: "e2e-queue", requester: "second", ttlSeconds: 600 }]);
  await page.waitForFunction(() => document.querySelector('tr[data-resource="e2e-queue"] td.waiting')?.textContent === "1", null, { timeout: 10000 });
  console.log("ok - a waiting reserve through the API raises the waiter count to 1");
  await shot("4-reservations-live", "reservations");
  const released = await api(key, "/api/v1/Reservation/unreserve", [{ resource: "e2e-queue", requester: "first", releaseToken: token }]);
  expect(released.body.includes("UNRESERVED"), "the holder releases e2e-queue");
  const granted = await waiting;
  expect(granted.body.includes("RESERVED") && granted.body.includes("second"), "the waiter is granted e2e-queue");
  await page.waitForFunction(
    () => {
      const r = document.querySelector('tr[data-resource="e2e-queue"]');
      return r && r.querySelector("td.waiting").textContent === "0" && r.textContent.includes("second");
    },
    null,
    { timeout: 10000 },
  );
  console.log("ok - after the hand-over the waiter count falls back to 0");

  // Filters and pages, by keyboard.
  const batch = [];
  for (let i = 0; i < 30; i++) batch.push({ resource: `page-${String(i).padStart(3, "0")}`, requester: "pager", ttlSeconds: 600 });
  expect((await api(key, "/api/v1/Reservation/reserve", batch)).status === 200, "30 holds page-000..029");
  await page.fill("#f-prefix", "page-");
  await page.selectOption("#f-limit", "25");
  await page.focus("#f-limit");
  await page.keyboard.press("Tab");
  const outline = await page.evaluate(() => {
    const a = document.activeElement;
    return `${a.textContent} ${getComputedStyle(a).outlineStyle} ${getComputedStyle(a).outlineWidth}`;
  });
  expect(/^Filter solid 3px/.test(outline), `Tab reaches the Filter button and shows its focus (${outline})`);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll("#reservations tbody tr").length === 25 && !document.getElementById("page-next").disabled);
  expect((await page.$$eval("#reservations tbody tr", (rs) => rs.every((r) => r.dataset.resource.startsWith("page-")))), "the prefix filter keeps only page-* holds, 25 a page");
  await page.focus("#page-next");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll("#reservations tbody tr").length === 5);
  expect((await text("#page-info")).startsWith("Page 2: 5 hold(s)"), "Next page (Enter) shows the last 5");
  await page.fill("#f-prefix", "");
  await page.fill("#f-requester", "second");
  await page.click("#filters button");
  await page.waitForFunction(() => {
    const rs = document.querySelectorAll("#reservations tbody tr");
    return rs.length === 1 && rs[0].dataset.resource === "e2e-queue";
  });
  console.log("ok - the requester filter keeps only that requester's holds");
  await page.fill("#f-requester", "");
  await page.selectOption("#f-limit", "50");
  await page.click("#filters button");
  await page.click('button[data-sort="left"]');
  expect((await page.getAttribute('button[data-sort="left"]', "aria-pressed")) === "true", "sorting by time left is a pressed toggle button");
  const bad = await contrast();
  expect(bad.length === 0, `every text of the reservations page passes AA contrast ${bad.join("; ")}`);

  // Activity: the chart gains a point for a reserve made through the API.
  await page.click("nav >> text=Events");
  await page.waitForSelector("#events tbody tr");
  expect((await page.textContent("#events")).includes("e2e-lock"), "the events page shows the reserve with its apiKeyLabel");
  await page.waitForSelector('#activity-table tr[data-type="RESERVED"]');
  await page.waitForFunction(() => document.getElementById("live-status")?.dataset.state === "live");
  const before = Number(await page.getAttribute('#activity-table tr[data-type="RESERVED"]', "data-total"));
  const label = await page.getAttribute("#chart svg", "aria-label");
  expect(before >= 33 && /reserved \d+/.test(label), `the chart and its text equivalent count the reserves so far (${before}; "${label}")`);
  expect((await api(key, "/api/v1/Reservation/reserve", [{ resource: "e2e-chart", requester: "e2e-worker", ttlSeconds: 600 }])).status === 200, "one more reserve through the API");
  await page.waitForFunction(
    (n) => Number(document.querySelector('#activity-table tr[data-type="RESERVED"]')?.dataset.total) === n + 1,
    before,
    { timeout: 10000 },
  );
  const after = await page.getAttribute("#chart svg", "aria-label");
  expect(after.includes(`reserved ${before + 1}`), `the chart gains the point live ("${after}")`);
  await page.waitForSelector("#contended tbody tr[data-resource]", { timeout: 20000 });
  const top = await page.$$eval("#contended tbody tr[data-resource]", (rs) => rs.map((r) => r.dataset.resource));
  expect(top.includes("e2e-queue"), `the most contended resources list the resources seen (${top.slice(0, 5).join(", ")})`);
  const badEvents = await contrast();
  expect(badEvents.length === 0, `every text of the events page passes AA contrast ${badEvents.join("; ")}`);
  await shot("5-events", "events");

  // Plan: live usage against the tier's limits; the lease policy.
  await page.click("nav >> text=Plan");
  expect((await text("#tier")) === "free", "the plan page shows the free tier");
  await page.waitForFunction(() => /^\d+$/.test(document.querySelector("#u-reads .used")?.textContent || ""));
  const reads = Number(await text("#u-reads .used"));
  const readLimit = Number(await text("#u-reads .limit"));
  const listing = await fetch(BASE + "/api/v1/Reservation?limit=1", { headers: { "X-Api-Key": key } });
  const apiLimit = Number(listing.headers.get("RateLimit-Limit"));
  expect(readLimit === apiLimit && reads >= 0 && reads < readLimit, `read requests left (${reads}) of ${readLimit}, the API's own RateLimit-Limit (${apiLimit})`);
  expect((await text("#u-waiters .limit")) === "10", "the free tier's waiter limit (10)");
  expect((await text("#u-keys .used")) === "1" && (await text("#u-keys .limit")) === "1", "keys: 1 of 1");
  expect(Number(await text("#u-active .used")) >= 33, "active reservations counted");
  const policy = await text("#policy");
  expect(/Longest hold \(s\)\s*3600/.test(policy) && /Longest TTL \(s\)\s*none/.test(policy), `the lease policy is shown field by field, null as none (${policy.replace(/\s+/g, " ")})`);
  expect((await page.$$("#usage meter[aria-label]")).length >= 3, "each usage bar has its numbers as a label");
  const badPlan = await contrast();
  expect(badPlan.length === 0, `every text of the plan page passes AA contrast ${badPlan.join("; ")}`);
  await shot("6-plan", "plan");

  // 10,000 live holds: the page stays paged (never all in the DOM) and quick.
  for (let b = 0; b < 10; b++) {
    const items = [];
    for (let i = 0; i < 1000; i++) items.push({ resource: `bulk/${String(b * 1000 + i).padStart(5, "0")}`, requester: "bulk", ttlSeconds: 900 });
    const r = await api(key, "/api/v1/Reservation/reserve", items);
    if (r.status !== 200) throw new Error(`bulk batch ${b}: ${r.status} ${r.body.slice(0, 200)}`);
    await sleep(150);
  }
  console.log("ok - 10,000 more holds through the API (bulk/00000..09999)");
  const t0 = Date.now();
  await page.goto(BASE + "/dashboard/reservations");
  await page.waitForFunction(() => document.querySelector("#reservations tbody .countdown") && !document.getElementById("page-next").disabled);
  const ms = Date.now() - t0;
  const rows = await page.$$eval("#reservations tbody tr", (rs) => rs.length);
  expect(rows === 50, `with 10,000+ holds the page shows one page of 50 rows (${rows})`);
  expect(ms < 8000, `and is ready in ${ms} ms`);
  await page.fill("#f-prefix", "bulk/0999");
  await page.click("#filters button");
  await page.waitForFunction(() => document.querySelectorAll("#reservations tbody tr").length === 10);
  console.log("ok - a prefix finds 10 of the 10,000 at once");
  await shot("8-reservations-10k");

  // The history is trimmed now (5,000 kept): the events page and its chart
  // still start from the oldest retained event.
  await page.click("nav >> text=Events");
  await page.waitForSelector('#activity-table tr[data-type="RESERVED"]');
  const recent = await page.$$eval("#events tbody tr", (rs) => rs.length);
  const bulk = Number(await page.getAttribute('#activity-table tr[data-type="RESERVED"]', "data-total"));
  expect(recent === 200 && bulk >= 4000 && bulk <= 6000, `after a trim the events page shows the latest 200 events (${recent}) and the chart the retained ones (${bulk})`);

  await page.click("nav >> text=Keys");
  await page.click('button[aria-label="Rotate default"]');
  await page.waitForSelector("#secret");
  const rotated = (await page.textContent("#secret")).trim();
  expect(rotated.startsWith("ck_") && rotated !== key, "rotating on the keys page shows a new key");
  await shot("7-rotated");

  const old = await api(key, "/api/v1/Reservation");
  expect(old.status === 401, `the old key gets 401 from the API (got ${old.status})`);
  const fresh = await api(rotated, "/api/v1/Reservation");
  expect(fresh.status === 200, "the new key works");
} catch (e) {
  failed = true;
  console.error("FAILED:", e.message);
  await shot("failure").catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
