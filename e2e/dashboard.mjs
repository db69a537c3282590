// Dashboard end-to-end in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core). Started by tests/api/dashboard/e2e.rs with
// BASE (an instance whose OIDC provider is the tests' provider) and SHOTS (where
// to save a screenshot of each page).
//
// sign in -> the key is shown -> a reserve made through the API with that key
// appears live on the reservations page -> rotate the key on the keys page ->
// the old key gets 401 from the API.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const BASE = process.env.BASE;
const SHOTS = process.env.SHOTS;
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
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
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

  await page.click("text=Done");
  await page.waitForSelector("table caption");
  expect((await page.textContent("main")).includes("default"), "the keys page lists the default key");
  await shot("3-keys");

  await page.click("nav >> text=Reservations");
  await page.waitForFunction(() => document.getElementById("live-status")?.textContent === "live");
  const reserved = await api(key, "/api/v1/Reservation/reserve", [
    { resource: "e2e-lock", requester: "e2e-worker", ttlSeconds: 600 },
  ]);
  expect(reserved.status === 200 && reserved.body.includes("RESERVED"), "a reserve through the API with that key");
  await page.waitForSelector('tr[data-resource="e2e-lock"]', { timeout: 10000 });
  const row = await page.textContent('tr[data-resource="e2e-lock"]');
  expect(row.includes("e2e-worker") && row.includes("default"), "the reservation appears live on the reservations page");
  await shot("4-reservations-live");

  await page.click("nav >> text=Events");
  await page.waitForSelector("#events tbody tr");
  expect((await page.textContent("#events")).includes("e2e-lock"), "the events page shows the reserve with its apiKeyLabel");
  await shot("5-events");

  await page.click("nav >> text=Plan");
  expect((await page.textContent("#tier")).trim() === "free", "the plan page shows the free tier");
  await shot("6-plan");

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
