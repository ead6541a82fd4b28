// Clicks through qgate's web console (served by the admin listener) in headless Chromium.
//
//   node console.mjs CONSOLE_URL SCREENSHOT_DIR [--timeout MS]
//
// Prints one line per step on stdout, for test_console.py to follow:
//   EVENT overview N        the queue list shows "orders" with N available messages
//   EVENT live N            ... and, without a reload, N after the test published more
//   RESULT {...}            what the queue page did (move, publish, purge), as JSON
// Screenshots (PNG) of the overview and of a queue page go to SCREENSHOT_DIR.
import { join } from "node:path";

import { chromium } from "playwright-core";

const [url, shots, ...rest] = process.argv.slice(2);
const timeout = rest[0] === "--timeout" ? Number(rest[1]) : 20000;
const cell = (queue, column) =>
  `#queues tbody tr[data-queue="${queue}"] td:nth-child(${column})`;

async function textOf(page, selector) {
  return (await page.locator(selector).first().textContent({ timeout })).trim();
}

const browser = await chromium.launch({
  executablePath: process.env.QGATE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  timeout,
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const outside = [];
  page.on("request", (r) => { if (!r.url().startsWith(new URL(url).origin)) outside.push(r.url()); });
  page.on("console", (m) => process.stderr.write(`console.${m.type()}: ${m.text()}\n`));
  page.on("pageerror", (e) => process.stderr.write(`pageerror: ${e}\n`));
  page.on("dialog", (d) => d.accept());
  await page.goto(url);
  await page.waitForSelector(cell("orders", 3), { timeout });
  const first = await textOf(page, cell("orders", 3));
  process.stdout.write(`EVENT overview ${first}\n`);
  // The test publishes more now; the list follows without a reload.
  await page.waitForFunction(
    (sel) => Number(document.querySelector(sel)?.textContent) >= 8,
    cell("orders", 3),
    { timeout },
  );
  // Let the chart draw a few points of the rate.
  await page.waitForFunction(() => Number(document.getElementById("publish-rate").textContent) >= 0,
    null, { timeout });
  await page.screenshot({ path: join(shots, "console-overview.png"), fullPage: true });
  process.stdout.write(`EVENT live ${await textOf(page, cell("orders", 3))}\n`);

  // The dead-letter queue's page: peek, then move its messages back to "orders".
  await page.click(`#queues tbody tr[data-queue="orders-dlq"]`);
  await page.waitForSelector("#messages tbody tr", { timeout });
  const peeked = await page.locator("#messages tbody tr").count();
  const target = await page.inputValue("#m-to");
  await page.screenshot({ path: join(shots, "console-queue.png"), fullPage: true });
  await page.click("#move button");
  await page.waitForFunction(
    () => document.getElementById("q-result").textContent.startsWith("moved"), null, { timeout });
  const moved = await textOf(page, "#q-result");
  await page.fill("#p-body", "a test message from the console");
  await page.click("#publish button");
  await page.waitForFunction(
    () => document.getElementById("q-result").textContent.startsWith("published"), null, { timeout });
  const published = await textOf(page, "#q-result");
  await page.waitForSelector("#messages tbody tr", { timeout });
  const body = await textOf(page, "#messages tbody tr td:nth-child(7)");
  await page.click("#purge");
  await page.waitForFunction(
    () => document.getElementById("q-result").textContent.startsWith("purged"), null, { timeout });
  const purged = await textOf(page, "#q-result");
  const listeners = await page.locator("#listeners tbody tr").count();
  process.stdout.write(`RESULT ${JSON.stringify({
    peeked, target, moved, published, body, purged, listeners, outside,
    health: await textOf(page, "#health"),
  })}\n`);
} catch (e) {
  process.stderr.write(`driver: ${e}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
