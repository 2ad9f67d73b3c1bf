#!/usr/bin/env node
// The dashboard check: starts whipgate (with an API key), registers two ingests with
// `whipgate ctl`, publishes one from headless Chromium's fake camera through the publish page,
// opens /dashboard in a second page (the key typed into its form: the page gets an events
// token, EventSource carries it), and asserts the live publisher's bitrate shows within
// --patience seconds. Saves a screenshot to --out (a scratch dir by default, never the tree);
// --update-docs also copies it to docs/dashboard.png. Prints "RESULT {json}"; exit 1 on failure.
//
// Run it where no packet can leave loopback (scripts/test does, in a private network
// namespace):
//   unshare --net -- sh -c 'ip link set lo up && exec node interop/dashboard_check.mjs \
//     --whipgate target/debug/whipgate'

import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const { values: opts } = parseArgs({
  options: {
    whipgate: { type: "string", default: "target/debug/whipgate" },
    out: { type: "string" },
    patience: { type: "string", default: "15" },
    "update-docs": { type: "boolean", default: false },
  },
});
const KEY = "dashboard-check-key";
const out = opts.out || fs.mkdtempSync(path.join(os.tmpdir(), "whipgate-dashboard-"));
fs.mkdirSync(out, { recursive: true });
const log = (m) => process.stderr.write(`dashboard_check: ${m}\n`);
const result = { ok: false, out };
let gateway = null;
let browser = null;
let profile = null;
let dataDir = null;

// Every helper process is bounded: the whole check, whatever happens.
const deadline = setTimeout(() => { log("overall timeout (120 s)"); cleanup().then(() => process.exit(1)); }, 120000);

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  if (gateway && gateway.exitCode === null) gateway.kill("SIGKILL");
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
}

function startGateway() {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whipgate-dashboard-data-"));
  gateway = spawn(opts.whipgate, [
    "--data-dir", dataDir,
    "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--udp-listen", "127.0.0.1:0",
    "--tcp-listen", "127.0.0.1:0",
    "--stats-interval-secs", "1",
  ], { env: { ...process.env, WHIPGATE_API_KEY: KEY, RUST_LOG: "error" }, stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: gateway.stdout });
    lines.once("line", (line) => resolve(JSON.parse(line)));
    gateway.once("exit", (code) => reject(new Error(`whipgate exited ${code}`)));
  });
}

function ctl(grpc, ...args) {
  return execFileSync(opts.whipgate, ["ctl", ...args], {
    env: { ...process.env, WHIPGATE_CTL_ADDR: `http://${grpc}`, WHIPGATE_API_KEY: KEY },
    timeout: 10000,
  }).toString();
}

try {
  const bound = await startGateway();
  const base = `http://${bound.http}`;
  log(`whipgate at ${base}, gRPC ${bound.grpc}`);
  ctl(bound.grpc, "register", "studio-a", "--video", "127.0.0.1:5004", "--audio", "127.0.0.1:5006", "--label", "room=a");
  ctl(bound.grpc, "register", "studio-b", "--codec", "h264", "--codec", "vp8", "--max-bitrate-bps", "6000000");

  profile = fs.mkdtempSync(path.join(os.tmpdir(), "whipgate-dashboard-profile-"));
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    ignoreDefaultArgs: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
      `--user-data-dir=${profile}`, "--remote-debugging-pipe", "--no-startup-window",
    ],
    timeout: 30000,
    handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
  });
  result.browser_version = browser.version();
  const context = await browser.newContext({ viewport: { width: 1200, height: 820 } });

  const publisher = await context.newPage();
  publisher.on("pageerror", (e) => log(`publish page error: ${e}`));
  await publisher.goto(`${base}/publish/studio-a?codec=h264&autostart`, { timeout: 15000 });
  await publisher.waitForFunction(() => window.whipgate && window.whipgate.state === "connected", null, { timeout: 20000 });
  log("publisher connected");

  const dashboard = await context.newPage();
  dashboard.on("pageerror", (e) => log(`dashboard error: ${e}`));
  const opened = Date.now();
  await dashboard.goto(`${base}/dashboard`, { timeout: 15000 });
  // The gateway has a key: the page asks for it.
  await dashboard.waitForSelector("#key", { state: "visible", timeout: 10000 });
  await dashboard.fill("#key", KEY);
  await dashboard.press("#key", "Enter");
  const patience = Number(opts.patience) * 1000;
  await dashboard.waitForFunction(() => {
    const b = document.querySelector('[data-ingest="studio-a"] .bitrate');
    return b && Number(b.dataset.bps) > 0;
  }, null, { timeout: patience, polling: 100 });
  result.bitrate_shown_after_ms = Date.now() - opened;
  result.bitrate_text = await dashboard.textContent('[data-ingest="studio-a"] .bitrate');
  result.state = await dashboard.textContent('[data-ingest="studio-a"] .state');
  result.connection = await dashboard.textContent("#conn");
  if (result.state !== "connected") throw new Error(`studio-a shows ${result.state}`);
  if (!(await dashboard.$('[data-ingest="studio-b"]'))) throw new Error("the idle ingest is missing");
  // A few more stats ticks, so the sparklines have a shape in the screenshot.
  await dashboard.waitForFunction(() => window.whipgateDashboard.ingests.get("studio-a").bitrate.length >= 6, null, { timeout: 10000 });
  const shot = path.join(out, "dashboard.png");
  await dashboard.screenshot({ path: shot, fullPage: true, timeout: 10000 });
  result.screenshot = shot;
  if (opts["update-docs"]) {
    const docs = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "docs", "dashboard.png");
    fs.copyFileSync(shot, docs);
    result.docs = path.resolve(docs);
  }
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
} finally {
  clearTimeout(deadline);
  await cleanup();
}
console.log(`RESULT ${JSON.stringify(result)}`);
process.exit(result.ok ? 0 : 1);
