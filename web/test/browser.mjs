// The browser test: a real auth-server (SQLite in a temporary directory) with one allowed
// CORS origin, the built page (dist/) served on two loopback origins, and Debian's headless
// Chromium driven by playwright-core.
//
// 1. From the allowed origin the page registers, logs in, calls GetMe and ListMySessions and
//    shows the email and this browser's session; a screenshot goes to test-output/.
// 2. From an origin not on the list the same page fails with a CORS error in the console,
//    and no call reached a handler: the account it tried to register does not exist.
//
// Usage: node test/browser.mjs [path/to/auth-server]   (default ../target/debug/auth-server)
// Environment: CHROMIUM (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, mkdirSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createNetServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const web = resolve(here, "..");
const dist = join(web, "dist");
const bin = resolve(process.argv[2] ?? join(web, "..", "target", "debug", "auth-server"));
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

for (const [what, path] of [["auth-server", bin], ["Chromium", executablePath], ["the built page", join(dist, "app.js")]]) {
  if (!existsSync(path)) {
    console.error(`browser test: ${what} not found at ${path}`);
    process.exit(2);
  }
}

/** A free loopback port. */
function freePort() {
  return new Promise((ok, fail) => {
    const server = createNetServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/** Serves dist/ on a loopback port; resolves to its origin. */
function servePage(port) {
  const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript" };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = join(dist, path === "/" ? "index.html" : path.slice(1));
    if (!file.startsWith(dist) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(port, "127.0.0.1", () => ok(server)));
}

/** Resolves once something accepts TCP connections on `port`. */
async function waitForPort(port, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const up = await new Promise((ok) => {
      const socket = connect(port, "127.0.0.1", () => { socket.end(); ok(true); });
      socket.once("error", () => ok(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on ${port} after ${ms} ms`);
}

const work = mkdtempSync(join(tmpdir(), "auth-browser-"));
const [apiPort, allowedPort, otherPort] = [await freePort(), await freePort(), await freePort()];
const allowed = `http://127.0.0.1:${allowedPort}`;
// Another port is another origin.
const other = `http://127.0.0.1:${otherPort}`;
const api = `http://127.0.0.1:${apiPort}`;

let log = "";
const server = spawn(bin, ["serve"], {
  env: {
    ...process.env,
    AUTH_LISTEN: `127.0.0.1:${apiPort}`,
    AUTH_DATA_DIR: join(work, "data"),
    AUTH_ALLOW_REGISTRATION: "true",
    AUTH_CORS_ALLOW_ORIGINS: allowed,
    RUST_LOG: "info",
    AUTH_LOG_FORMAT: "json",
  },
  stdio: ["ignore", "pipe", "pipe"],
});
server.stdout.on("data", (d) => { log += d; });
server.stderr.on("data", (d) => { log += d; });

const pages = [await servePage(allowedPort), await servePage(otherPort)];
let browser;
let failed = false;
try {
  await waitForPort(apiPort, 30_000);
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });

  // 1. The allowed origin: the whole flow works.
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  await page.goto(`${allowed}/?api=${encodeURIComponent(api)}`);
  await page.fill("#email", "Browser.User@Example.com");
  await page.fill("#password", "correct horse battery");
  await page.click("#register");
  await page.waitForSelector("#status[data-state=ok]", { timeout: 15_000 });
  assert.equal(await page.textContent("#me-email"), "browser.user@example.com");
  assert.equal(await page.textContent("#me-verified"), "no");
  assert.notEqual(await page.textContent("#me-last-login"), "never");
  const sessions = await page.$$("#sessions tr");
  assert.equal(sessions.length, 1, "one session: this browser's");
  assert.equal(await page.textContent("#sessions .current"), "this browser");
  // Signing in again (the Login button) adds a second session; this one is marked current.
  await page.click("#login");
  await page.waitForFunction(() => document.querySelectorAll("#sessions tr").length === 2);
  assert.equal((await page.$$("#sessions .current")).length, 1);
  mkdirSync(join(web, "test-output"), { recursive: true });
  await page.screenshot({ path: join(web, "test-output", "browser-page.png"), fullPage: true });
  console.log("allowed origin: Register, Login, GetMe and ListMySessions shown; screenshot in web/test-output/browser-page.png");

  // 2. Another origin: the browser blocks the call, nothing reaches a handler.
  const blocked = await browser.newPage();
  const console_ = [];
  blocked.on("console", (m) => console_.push(m.text()));
  await blocked.goto(`${other}/?api=${encodeURIComponent(api)}`);
  await blocked.fill("#email", "blocked@example.com");
  await blocked.fill("#password", "correct horse battery");
  await blocked.click("#register");
  await blocked.waitForSelector("#status[data-state=error]", { timeout: 15_000 });
  const status = await blocked.textContent("#status");
  assert.match(status, /cannot reach the identity service/, status);
  assert.ok(
    console_.some((t) => /CORS policy/.test(t)),
    `a CORS error in the console: ${JSON.stringify(console_)}`,
  );
  // The account it tried to register does not exist: registering it from the allowed origin
  // works (it would be ALREADY_EXISTS had Register run).
  await page.fill("#email", "blocked@example.com");
  await page.fill("#password", "correct horse battery");
  await page.click("#register");
  await page.waitForFunction(
    () => document.querySelector("#me-email")?.textContent === "blocked@example.com",
    null,
    { timeout: 15_000 },
  );
  console.log("other origin: CORS error in the browser, no handler ran");
} catch (error) {
  failed = true;
  console.error("browser test failed:", error);
  console.error("server log:\n" + log.split("\n").slice(-40).join("\n"));
} finally {
  await browser?.close();
  for (const p of pages) p.close();
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
