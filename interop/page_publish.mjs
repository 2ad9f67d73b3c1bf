#!/usr/bin/env node
// The loss harness's publisher (scripts/impair): Debian's Chromium (playwright-core, the
// interop run's flags from chromium_flags.mjs) on lossy_publish.html, served by the WHIP proxy.
//
//   --url URL            the page, e.g. http://127.0.0.1:P/_lossy/lossy_publish.html?whip=/whip/x
//   --seconds S          publishing time once connected (default 20)
//   --linger S           after the tracks stop sending (replaceTrack(null)), wait this long for
//                        the last repairs before the DELETE (default 1.5)
//   --profile-dir DIR    a fresh profile (the caller kills whatever still runs from it)
//   --fps N              the fake camera's frame rate (default 30; Chromium's own default is 20)
//
// While publishing, samples getStats() every second (outbound-rtp per kind: bytes, packets,
// resolution, fps, qualityLimitationReason, NACKs and PLIs received, retransmissions;
// remote-inbound-rtp; the selected candidate pair). Prints one line "RESULT {json}".

import { createRequire } from "node:module";
import { parseArgs } from "node:util";

import { CHROMIUM_FLAGS } from "./chromium_flags.mjs";

const require = createRequire(import.meta.url);
const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    seconds: { type: "string", default: "20" },
    linger: { type: "string", default: "1.5" },
    "profile-dir": { type: "string" },
    "connect-timeout": { type: "string", default: "20" },
    fps: { type: "string", default: "30" },
  },
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now();
const log = (m) => process.stderr.write(`[${new Date().toISOString().slice(11, 23)} page_publish] ${m}\n`);
const result = { ok: false, errors: [], samples: [] };

// Runs in the page: what the publisher sends now.
async function sample() {
  const pc = window.impairPc;
  if (!pc) return null;
  const report = await pc.getStats();
  const out = { t: Date.now(), connection: pc.connectionState };
  report.forEach((s) => {
    if (s.type === "outbound-rtp") {
      const codec = s.codecId && report.get(s.codecId);
      out[s.kind] = {
        codec: codec ? codec.mimeType : "", payloadType: codec ? codec.payloadType : null,
        ssrc: s.ssrc, bytesSent: s.bytesSent || 0, packetsSent: s.packetsSent || 0,
        headerBytesSent: s.headerBytesSent || 0,
        retransmittedPacketsSent: s.retransmittedPacketsSent || 0, retransmittedBytesSent: s.retransmittedBytesSent || 0,
        nackCount: s.nackCount || 0, pliCount: s.pliCount || 0, firCount: s.firCount || 0,
        frameWidth: s.frameWidth, frameHeight: s.frameHeight, framesPerSecond: s.framesPerSecond,
        framesEncoded: s.framesEncoded, framesSent: s.framesSent, keyFramesEncoded: s.keyFramesEncoded,
        targetBitrate: s.targetBitrate, qualityLimitationReason: s.qualityLimitationReason,
        qualityLimitationResolutionChanges: s.qualityLimitationResolutionChanges,
        encoderImplementation: s.encoderImplementation, rid: s.rid,
      };
    } else if (s.type === "remote-inbound-rtp") {
      out[`remote_${s.kind}`] = { packetsLost: s.packetsLost, fractionLost: s.fractionLost, roundTripTime: s.roundTripTime };
    } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      out.pair = { availableOutgoingBitrate: s.availableOutgoingBitrate, currentRoundTripTime: s.currentRoundTripTime };
    }
  });
  return out;
}

const state = (page) => page.evaluate(() => ({ ...window.impair }));

// The interop run's flags, but the fake camera at --fps (its default is 20 frames per second).
const flags = CHROMIUM_FLAGS.map((f) => (f === "--use-fake-device-for-media-stream"
  ? `${f}=fps=${opts.fps}` : f));

let browser = null;
async function run() {
  const { chromium } = require("playwright-core");
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    ignoreDefaultArgs: true,
    args: [...flags, `--user-data-dir=${opts["profile-dir"]}`, "--remote-debugging-pipe", "--no-startup-window"],
    timeout: 30000, handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
  });
  result.browser_version = browser.version();
  const context = await browser.newContext({ viewport: { width: 640, height: 400 } });
  const page = await context.newPage();
  page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log(`pageerror: ${e}`));
  const t0 = now();
  await page.goto(opts.url, { timeout: 15000 });
  const deadline = now() + Number(opts["connect-timeout"]) * 1000;
  let s = await state(page);
  while (!["connected", "failed", "error", "closed", "disconnected"].includes(s.state)) {
    if (now() > deadline) break;
    await sleep(50);
    s = await state(page);
  }
  result.post_status = s.postStatus;
  result.capture = s.capture;
  result.location = s.location;
  result.offer = s.offer;
  result.answer = s.answer;
  if (s.state !== "connected") {
    result.errors.push(`not connected: state ${s.state} ${s.error || ""} (POST ${s.postStatus})`);
    return;
  }
  result.connect_millis = now() - t0;
  result.connected_at = now();
  log(`connected after ${result.connect_millis} ms, ${s.location}`);
  const end = now() + Number(opts.seconds) * 1000;
  let next = now();
  while (now() < end) {
    const x = await page.evaluate(sample);
    if (x) result.samples.push(x);
    if (x && x.connection !== "connected") { result.errors.push(`connection ${x.connection} while publishing`); break; }
    next += 1000;
    await sleep(Math.max(0, Math.min(next, end) - now()));
  }
  result.samples.push(await page.evaluate(sample));
  await page.evaluate(() => window.impairStop());
  result.stopped_at = now();
  await sleep(Number(opts.linger) * 1000); // the last repairs arrive; nothing waits on a condition here
  result.final = await page.evaluate(sample);
  result.delete_status = await page.evaluate(() => window.impairDelete());
  log(`DELETE -> ${result.delete_status}`);
}

const hardLimit = setTimeout(() => { result.errors.push("overall time limit"); finish(3); },
  (Number(opts.seconds) + Number(opts.linger) + 60) * 1000);
let finished = false;
async function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(hardLimit);
  if (browser) await Promise.race([browser.close().catch((e) => log(`close: ${e}`)), sleep(10000)]);
  result.ok = result.errors.length === 0;
  process.stdout.write("RESULT " + JSON.stringify(result) + "\n", () => process.exit(code ?? (result.ok ? 0 : 1)));
}
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => { result.errors.push(`got ${sig}`); finish(130); });

try {
  await run();
} catch (e) {
  result.errors.push(`${e && e.name}: ${e && e.message}`);
  log(e && e.stack);
}
await finish();
