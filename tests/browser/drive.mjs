// Drives Debian's Chromium (headless) through page.html with playwright-core.
//
//   node drive.mjs QUERY [--spki BASE64_SHA256] [--timeout MS]
//
// page.html is served over HTTP from 127.0.0.1 by this script, as a web app would be (a
// file:// page sends "Origin: null", which WebSocket servers refuse, and a page from a
// public origin may not reach loopback under Chromium's local network access rules).
// Prints one line per step on stdout, for the Python test to follow:
//   EVENT subscribed      the page's STOMP subscription is in place (its RECEIPT came)
//   RESULT {...}          what the page observed (window.qgateResult), as JSON
// Console messages and page errors of the page go to stderr. Exits 1 on a timeout.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
// The only files the page may load, and their types.
const FILES = {
  "/page.html": ["page.html", "text/html; charset=utf-8"],
  "/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js": [
    "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js",
    "text/javascript",
  ],
};

const web = createServer(async (req, res) => {
  const file = FILES[new URL(req.url, "http://127.0.0.1").pathname];
  if (file === undefined) {
    res.writeHead(404).end("not found");
    return;
  }
  res.writeHead(200, { "content-type": file[1] }).end(await readFile(join(HERE, file[0])));
});
await new Promise((resolve) => web.listen(0, "127.0.0.1", resolve));

const args = process.argv.slice(2);
const pageUrl = `http://127.0.0.1:${web.address().port}/page.html?${args[0]}`;
let spki = "";
let timeout = 20000;
for (let i = 1; i < args.length; i += 2) {
  if (args[i] === "--spki") spki = args[i + 1];
  else if (args[i] === "--timeout") timeout = Number(args[i + 1]);
  else throw new Error(`unknown argument ${args[i]}`);
}

const flags = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
if (spki) {
  // Trust exactly the test server's key (not every certificate, as
  // --ignore-certificate-errors would): the test CA is not in any store Chromium reads.
  flags.push(`--ignore-certificate-errors-spki-list=${spki}`);
}

const browser = await chromium.launch({
  executablePath: process.env.QGATE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: flags,
  timeout,
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => process.stderr.write(`console.${m.type()}: ${m.text()}\n`));
  page.on("pageerror", (e) => process.stderr.write(`pageerror: ${e}\n`));
  await page.goto(pageUrl);
  await page.waitForFunction(
    () => window.qgateResult !== undefined || window.qgateEvents.includes("subscribed"),
    null,
    { timeout },
  );
  if (await page.evaluate(() => window.qgateResult === undefined)) {
    process.stdout.write("EVENT subscribed\n");
  }
  await page.waitForFunction(() => window.qgateResult !== undefined, null, { timeout });
  const result = await page.evaluate(() => window.qgateResult);
  result.userAgent = await page.evaluate(() => navigator.userAgent);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
} catch (e) {
  process.stderr.write(`driver: ${e}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
  web.close();
}
