// Drives the dashboard in a real headless Chromium, as a person would:
// each view loaded with real data (and nothing on the console), a dead
// job replayed by a click, a new job appearing without a reload.
//
//   node dashboard.mjs PLAN.json
//
// PLAN: {"base", "token", "shots" (a folder), "views": {"#/route": "text it must show"},
//        "replay": dead job id, "live_job": {"task", "args"}}
// Prints one JSON object: {"views": {route: {ok, why}}, "errors": [...],
// "replayed": bool, "live": bool, "streaming": bool}.
import { readFileSync, mkdirSync } from "node:fs";
import puppeteer from "puppeteer-core";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = { views: {}, errors: [], replayed: false, live: false, streaming: false, bulk: null };
mkdirSync(plan.shots, { recursive: true });

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 860 });
  page.on("console", (m) => { if (m.type() === "error") out.errors.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => out.errors.push(`page: ${e.message}`));
  page.on("requestfailed", (r) => out.errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));

  // Waits until the view `name` has been drawn (again, if `after` renders).
  const drawn = (name, after = 0) => page.waitForFunction(
    (n, a) => document.body.dataset.loaded === n && Number(document.body.dataset.renders || 0) > a,
    { timeout: 15000 }, name, after);
  const renders = () => page.evaluate(() => Number(document.body.dataset.renders || 0));

  await page.goto(`${plan.base}/#token=${encodeURIComponent(plan.token)}`, { waitUntil: "load" });
  await drawn("overview");

  for (const [route, text] of Object.entries(plan.views)) {
    const name = route.replace(/^#\//, "").split(/[/?]/)[0] || "overview";
    const before = await renders();
    await page.evaluate((r) => { location.hash = r; }, route);
    try {
      await drawn(name, before);
      await page.waitForFunction((t) => document.querySelector("#view").innerText.includes(t), { timeout: 10000 }, text);
      out.views[route] = { ok: true };
    } catch (e) {
      const shown = await page.evaluate(() => document.querySelector("#view").innerText.slice(0, 400));
      out.views[route] = { ok: false, why: `${e.message}; the page shows: ${shown}` };
    }
    const file = name + (route.includes("/", 2) ? "-detail" : "");
    await page.screenshot({ path: `${plan.shots}/${file}.png`, fullPage: false });
  }

  // The dead-letter queue: replay one job by clicking its button; the row
  // goes once the job is back in its queue.
  await page.evaluate(() => { location.hash = "#/dlq"; });
  const row = `tr[data-id="${plan.replay}"]`;
  await page.waitForSelector(`${row} button.replay`, { timeout: 15000 });
  await page.click(`${row} button.replay`);
  await page.waitForFunction((sel) => !document.querySelector(sel), { timeout: 15000 }, row);
  out.replayed = true;

  // A live update: a job enqueued elsewhere shows up without a reload.
  await page.evaluate(() => { location.hash = "#/jobs"; window.__sameDocument = true; });
  await drawn("jobs");
  // ...told by the server's event stream, not by polling.
  await page.waitForFunction(() => document.body.dataset.stream === "on", { timeout: 15000 });
  out.streaming = true;
  const id = await page.evaluate(async (p) => {
    const r = await fetch("/api/jobs", {
      method: "POST",
      headers: { Authorization: `Bearer ${p.token}`, "Content-Type": "application/json" },
      body: JSON.stringify(p.live_job),
    });
    return (await r.json()).id;
  }, plan);
  await page.waitForSelector(`tr[data-id="${id}"]`, { timeout: 15000 });
  out.live = await page.evaluate(() => window.__sameDocument === true);

  // A bulk action on a selection: the new job (waiting in its paused
  // queue) selected and cancelled.
  page.on("dialog", (d) => d.accept());
  await page.click(`tr[data-id="${id}"] input.pick`);
  await page.click('button[data-act="cancel"]');
  await page.waitForFunction(() => document.querySelector("#msg").innerText.includes("1 cancelled"), { timeout: 15000 });
  out.bulk = id;
} catch (e) {
  out.errors.push(`driver: ${e.message}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
