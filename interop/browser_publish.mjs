#!/usr/bin/env node
// Publishes to whipgate from a real browser through whipgate's own publish page
// (GET /publish/{ingest}?codec=...&autostart), for the interop run.
//
//   --browser chromium   Debian's Chromium, driven by playwright-core (CDP over a pipe)
//   --browser firefox    Debian's Firefox ESR, driven by puppeteer-core over WebDriver BiDi
//
// Fake camera and microphone, every ICE candidate on loopback, a fresh profile in
// --profile-dir (the driver kills whatever still runs from it). Waits for
// window.whipgate.state == "connected", publishes --seconds, takes an optional
// screenshot, clicks Stop (the page DELETEs its Location) and prints one line
// "RESULT {json}" in the shape run_interop.py reads (as aiortc_publish.py does).
// With ?simulcast in the page URL, each layer (rid) is sampled on its own and printed live
// as "LAYERS {...}" lines, for the driver's live layer switch.
// --ice-restart-after S: S seconds into publishing, clicks the page's "Restart ICE" (PATCH
// with If-Match: *) and waits until the browser's ICE runs on the new credentials.
// --delete-without-token: then sends a DELETE without Authorization to the session URL (the
// session must live on: 401), before Stop sends the page's own.
//
// An init script (added before the page's own) records, without changing anything the
// page does: every fetch() with its status and WHIP headers, every RTCPeerConnection, and
// the SDP answers handed to setRemoteDescription.

import fs from "node:fs";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

import { CHROMIUM_FLAGS } from "./chromium_flags.mjs";

const require = createRequire(import.meta.url);

// Exactly the flags the interop run specifies (chromium_flags.mjs); the two after them are the
// automation's plumbing (its profile and its DevTools pipe), nothing else is added.

// Firefox ESR: fake devices, no permission prompt, loopback ICE candidates without mDNS
// names, and nothing fetched from outside (puppeteer's own profile defaults already point
// every service URL at dummy.test; the GMP lines stop the OpenH264 download attempt).
const FIREFOX_PREFS = {
  "media.navigator.streams.fake": true,
  "media.navigator.permission.disabled": true,
  // Firefox gathers only its "default address" (none in a loopback-only namespace) for a
  // page without a camera/microphone permission; fake streams grant none: allow by default.
  "permissions.default.camera": 1,
  "permissions.default.microphone": 1,
  "media.peerconnection.ice.loopback": true,
  "media.peerconnection.ice.obfuscate_host_addresses": false,
  "media.peerconnection.ice.default_address_only": false,
  "media.peerconnection.ice.no_host": false,
  "media.peerconnection.ice.proxy_only": false,
  "media.gmp-manager.updateEnabled": false,
  "media.gmp-manager.url": "http://127.0.0.1:9/",
  "network.dns.disableIPv6": true,
  "network.proxy.type": 0,
};

const INIT_SCRIPT = `(() => {
  if (window.__interop) return;
  const rec = window.__interop = { fetches: [], pcs: [], answers: [], errors: [] };
  const origFetch = window.fetch;
  window.fetch = async function (input, init) {
    const entry = {
      method: ((init && init.method) || (input && input.method) || "GET").toUpperCase(),
      url: String((input && input.url) || input), at: Date.now(),
    };
    // What the request said (never the token itself: only whether it was there).
    const sent = new Headers((init && init.headers) || undefined);
    entry.request = { content_type: sent.get("content-type"), if_match: sent.get("if-match"),
      authorization: sent.has("authorization") };
    rec.fetches.push(entry);
    try {
      const r = await origFetch.apply(this, arguments);
      entry.status = r.status;
      entry.headers = {};
      for (const h of ["content-type", "location", "etag", "link", "accept-patch", "www-authenticate"]) entry.headers[h] = r.headers.get(h);
      entry.redirected = r.redirected;
      entry.response_url = r.url;
      entry.millis = Date.now() - entry.at;
      return r;
    } catch (e) { entry.error = String(e); throw e; }
  };
  const Orig = window.RTCPeerConnection;
  if (Orig) {
    const srd = Orig.prototype.setRemoteDescription;
    Orig.prototype.setRemoteDescription = function (desc) {
      if (desc && desc.sdp) rec.answers.push(desc.sdp);
      return srd.apply(this, arguments);
    };
    window.RTCPeerConnection = class extends Orig {
      constructor(...args) { super(...args); rec.pcs.push(this); }
    };
  }
})();`;

// Runs in the page: the publisher's own view of what it sends.
// Runs in the page: the resolution the video encoder sends now, and the camera's.
async function senderResolution() {
  const rec = window.__interop;
  const pc = rec && rec.pcs[rec.pcs.length - 1];
  if (!pc) return null;
  const report = await pc.getStats();
  let res = null;
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video" && s.frameWidth) res = [s.frameWidth, s.frameHeight];
  });
  return res;
}

// Runs in the page: each simulcast layer's outbound-rtp (one per rid), as the encoder sends it now.
async function layerStats() {
  const rec = window.__interop;
  const pc = rec && rec.pcs[rec.pcs.length - 1];
  if (!pc) return null;
  const report = await pc.getStats();
  const out = {};
  report.forEach((s) => {
    if (s.type !== "outbound-rtp" || s.kind !== "video" || !s.rid) return;
    out[s.rid] = {
      width: s.frameWidth || 0, height: s.frameHeight || 0, bytesSent: s.bytesSent || 0,
      framesSent: s.framesSent || 0, active: s.active, fps: s.framesPerSecond,
      targetBitrate: s.targetBitrate, qualityLimitationReason: s.qualityLimitationReason,
      encoderImplementation: s.encoderImplementation, ssrc: s.ssrc,
    };
  });
  return out;
}

function captureSettings() {
  const rec = window.__interop;
  const pc = rec && rec.pcs[rec.pcs.length - 1];
  const sender = pc && pc.getSenders().find((x) => x.track && x.track.kind === "video");
  if (!sender) return null;
  const st = sender.track.getSettings();
  return { width: st.width, height: st.height, frameRate: st.frameRate,
    degradationPreference: (sender.getParameters() || {}).degradationPreference || null };
}

async function senderStats() {
  const rec = window.__interop;
  const pc = rec && rec.pcs[rec.pcs.length - 1];
  const out = { offer: pc && pc.localDescription ? pc.localDescription.sdp : "", iceConnectionState: pc ? pc.iceConnectionState : "" };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type !== "outbound-rtp") return;
    const codec = s.codecId && report.get(s.codecId);
    out[s.kind] = {
      codec: codec ? codec.mimeType : "", packetsSent: s.packetsSent || 0, bytesSent: s.bytesSent || 0,
      framesSent: s.framesSent, framesEncoded: s.framesEncoded, frameWidth: s.frameWidth,
      frameHeight: s.frameHeight, framesPerSecond: s.framesPerSecond,
      encoderImplementation: s.encoderImplementation,
      qualityLimitationReason: s.qualityLimitationReason,
      qualityLimitationResolutionChanges: s.qualityLimitationResolutionChanges,
    };
  });
  return out;
}

// Runs in the page: the ICE credentials in use now (the local description's, the remote
// description's, and what getStats says the transport and its selected pair use).
async function iceView() {
  const rec = window.__interop;
  const pc = rec && rec.pcs[rec.pcs.length - 1];
  if (!pc) return null;
  const attr = (sdp, name) => ((sdp || "").match(new RegExp(`^a=${name}:(.*)$`, "m")) || [])[1]?.trim() || "";
  const out = {
    local_ufrag: attr(pc.localDescription?.sdp, "ice-ufrag"),
    remote_ufrag: attr(pc.remoteDescription?.sdp, "ice-ufrag"),
    signaling: pc.signalingState, ice: pc.iceConnectionState, connection: pc.connectionState,
  };
  const report = await pc.getStats();
  let bytes = 0;
  report.forEach((s) => {
    if (s.type === "outbound-rtp") bytes += s.bytesSent || 0;
    if (s.type !== "transport") return;
    out.transport_state = s.iceState || s.dtlsState;
    out.transport_local_ufrag = s.iceLocalUsernameFragment;
    const pair = s.selectedCandidatePairId && report.get(s.selectedCandidatePairId);
    if (pair) {
      out.pair_state = pair.state;
      out.pair_responses = pair.responsesReceived;
      const local = report.get(pair.localCandidateId);
      out.pair_local_ufrag = local && local.usernameFragment;
    }
  });
  out.bytes_sent = bytes;
  return out;
}

function videoCapabilities() {
  const caps = window.RTCRtpSender && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities("video");
  return caps ? [...new Set(caps.codecs.map((c) => c.mimeType))] : null;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now();

function log(msg) {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)} ${opts.browser}] ${msg}\n`);
}

const { values: opts } = parseArgs({
  options: {
    browser: { type: "string" },
    url: { type: "string" },            // the publish page, with ?codec=...&autostart
    codec: { type: "string" },
    seconds: { type: "string", default: "7" },
    "profile-dir": { type: "string" },
    screenshot: { type: "string" },
    "answer-out": { type: "string" },
    "offer-out": { type: "string" },
    "connect-timeout": { type: "string", default: "20" },
    "ice-restart-after": { type: "string" },
    "delete-without-token": { type: "boolean", default: false },
  },
});

const result = {
  client: opts.browser, codec: opts.codec, trickle: false, ok: false, errors: [],
  driver: "", browser_version: "",
};
const errors = result.errors;

let browser = null;
let page = null;

async function launch() {
  const dir = opts["profile-dir"];
  if (opts.browser === "chromium") {
    const { chromium } = require("playwright-core");
    result.driver = `playwright-core ${require("playwright-core/package.json").version}`;
    // ignoreDefaultArgs: true: Chromium gets our flags and nothing of Playwright's defaults.
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      ignoreDefaultArgs: true,
      args: [...CHROMIUM_FLAGS, `--user-data-dir=${dir}`, "--remote-debugging-pipe", "--no-startup-window"],
      timeout: 30000,
      handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
    });
    result.browser_version = browser.version();
    const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    page = await context.newPage();
    page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log(`pageerror: ${e}`));
    await page.addInitScript(INIT_SCRIPT);
    return {
      goto: (url) => page.goto(url, { timeout: 15000 }),
      evaluate: (fn, arg) => page.evaluate(fn, arg),
      click: (sel) => page.click(sel, { timeout: 5000 }),
      screenshot: (path) => page.screenshot({ path, timeout: 10000 }),
    };
  }
  if (opts.browser === "firefox") {
    const puppeteer = require("puppeteer-core");
    result.driver = `puppeteer-core ${require("puppeteer-core/package.json").version} (WebDriver BiDi)`;
    browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: "/usr/bin/firefox-esr",
      headless: true,
      userDataDir: dir,
      extraPrefsFirefox: FIREFOX_PREFS,
      defaultViewport: { width: 1000, height: 700 },
      timeout: 30000,
      protocolTimeout: 20000,
      handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
    });
    result.browser_version = await browser.version();
    page = await browser.newPage();
    page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log(`pageerror: ${e}`));
    await page.evaluateOnNewDocument(INIT_SCRIPT);
    return {
      goto: (url) => page.goto(url, { timeout: 15000 }),
      evaluate: (fn, arg) => page.evaluate(fn, arg),
      click: (sel) => page.click(sel),
      screenshot: (path) => page.screenshot({ path }),
    };
  }
  throw new Error(`unknown --browser ${opts.browser}`);
}

const status = (b) => b.evaluate(() => ({ ...window.whipgate }));

async function waitFor(b, pred, timeoutMs, what) {
  const deadline = now() + timeoutMs;
  let s = await status(b);
  while (!pred(s)) {
    if (now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (state ${JSON.stringify(s)})`);
    await sleep(100);
    s = await status(b);
  }
  return s;
}

// The page's "Restart ICE", then the wait until ICE runs on the browser's new credentials:
// the selected candidate pair's local candidate has the new ufrag (the transport's
// iceLocalUsernameFragment changes as soon as the new offer is applied, before any check on
// the new credentials succeeded: no proof) and the connection is connected. Returns what the
// driver checks.
async function restartIce(b) {
  const before = await b.evaluate(iceView);
  const clicked = now();
  await b.click("#restart");
  const s = await waitFor(b, (x) => x.iceRestarts > 0 || x.restartError, 15000, "ICE restart answered");
  const patch = (await b.evaluate(() => window.__interop.fetches)).filter((f) => f.method === "PATCH").pop() || {};
  const out = {
    clicked_at: clicked, status: s.restartStatus, error: s.restartError, etag: s.etag, before,
    patch: { url: patch.url, status: patch.status, request: patch.request, redirected: patch.redirected,
      content_type: patch.headers?.["content-type"], etag: patch.headers?.etag },
  };
  if (s.restartError) { errors.push(`ICE restart: ${s.restartError}`); return out; }
  out.answered_at = now();
  const deadline = now() + 10000;
  let v = await b.evaluate(iceView);
  const onNew = (x) => x.local_ufrag !== before.local_ufrag && x.connection === "connected"
    && x.pair_local_ufrag === x.local_ufrag && x.pair_state === "succeeded";
  while (!onNew(v) && now() < deadline) {
    await sleep(100);
    v = await b.evaluate(iceView);
  }
  out.after = v;
  if (onNew(v)) {
    out.connected_again_at = now();
    out.connected_again_millis = out.connected_again_at - clicked;
    log(`ICE restart: ${s.restartStatus}; on ufrag ${v.local_ufrag} (was ${before.local_ufrag}) after ${out.connected_again_millis} ms`);
  } else {
    errors.push(`ICE restart: not connected on the new credentials within 10 s (${JSON.stringify(v)})`);
  }
  return out;
}

// A DELETE of the session URL without Authorization, from the page's origin.
async function deleteWithoutToken(b) {
  const at = now();
  const r = await b.evaluate(async () => {
    const resp = await fetch(window.whipgate.location, { method: "DELETE" });
    return { status: resp.status, www_authenticate: resp.headers.get("www-authenticate"), url: resp.url };
  });
  log(`DELETE without the token -> ${r.status}`);
  return { at, ...r };
}

async function publish() {
  const b = await launch();
  log(`${result.browser_version} via ${result.driver}`);
  const t0 = now();
  await b.goto(opts.url);
  result.capabilities = await b.evaluate(videoCapabilities);
  // autostart: the page publishes on load. Wait for connected (or a terminal state).
  let s = await waitFor(b, (x) => ["connected", "failed", "error", "closed", "disconnected"].includes(x.state),
    Number(opts["connect-timeout"]) * 1000, "connected");
  const rec = await b.evaluate(() => ({ fetches: window.__interop.fetches, answers: window.__interop.answers }));
  const post = rec.fetches.find((f) => f.method === "POST");
  if (post) {
    result.post = {
      redirected: post.redirected, response_url: post.response_url,
      status: post.status, content_type: post.headers?.["content-type"], location: post.headers?.location,
      etag: post.headers?.etag, link: post.headers?.link ? [post.headers.link] : [], final_url: post.url,
      millis: post.millis,
    };
  }
  result.page = { ...s };
  if (s.state !== "connected") {
    const caps = result.capabilities || [];
    if (s.state === "error" && /cannot send/i.test(s.error || "") && !caps.some((c) => c.toLowerCase() === `video/${opts.codec}`)) {
      // Firefox encodes H264 only with the OpenH264 plugin it downloads at run time (Debian
      // has no package of it, and nothing is downloaded here).
      const why = opts.browser === "firefox" && opts.codec === "h264" ? " (OpenH264 plugin not installed)" : "";
      result.na = `no ${opts.codec.toUpperCase()} encoder${why}, sends ${caps.filter((c) => !/rtx|red|ulpfec/.test(c)).map((c) => c.split("/")[1]).join(", ") || "nothing"}`;
    }
    errors.push(`page state ${s.state}: ${s.error || "(no error text)"}`);
    const st = await b.evaluate(senderStats).catch(() => ({}));
    if (st.offer && opts["offer-out"]) fs.writeFileSync(opts["offer-out"], st.offer);
    result.offer_candidates = (st.offer || "").split(/\r?\n/).filter((l) => l.startsWith("a=candidate:"));
    result.ice_state = st.iceConnectionState;
    return;
  }
  result.connection_state = "connected";
  result.connect_millis = now() - t0; // page load + getUserMedia + POST + ICE/DTLS
  result.connected_at = now();
  if (rec.answers.length && opts["answer-out"]) fs.writeFileSync(opts["answer-out"], rec.answers[rec.answers.length - 1]);
  if (post?.headers?.location) result.session_url = s.location;
  log(`connected after ${result.connect_millis} ms; session ${s.location}`);

  result.capture = await b.evaluate(captureSettings);
  // The publishing period itself (media flows meanwhile); the state is watched throughout,
  // and the resolution the encoder sends (it follows the bandwidth estimate) is sampled.
  const seen = new Set();
  const timeline = [];
  // ?simulcast: every layer's resolution over time, and at every sample a line on stdout
  // "LAYERS {ms, layers: {rid: {res: WxH, bytes}}}" that run_interop.py reads live (it
  // switches the forwarded layer while this publishes).
  const simulcast = new URL(opts.url).searchParams.has("simulcast");
  const layerTimeline = [];
  let lastLayers = "";
  const end = now() + Number(opts.seconds) * 1000;
  const restartAt = opts["ice-restart-after"] ? now() + Number(opts["ice-restart-after"]) * 1000 : Infinity;
  let shot = !opts.screenshot;
  while (now() < end) {
    if (now() >= restartAt && !result.ice_restart) {
      result.ice_restart = await restartIce(b);
      if (opts["delete-without-token"]) result.delete_without_token = await deleteWithoutToken(b);
    }
    s = await status(b);
    if (s.state !== "connected") { errors.push(`state dropped to ${s.state} while publishing`); break; }
    if (s.width) seen.add(`${s.width}x${s.height}`);
    if (simulcast) {
      const layers = await b.evaluate(layerStats);
      const current = Object.fromEntries(Object.entries(layers || {}).filter(([, l]) => l.width)
        .map(([rid, l]) => [rid, `${l.width}x${l.height}`]));
      const key = JSON.stringify(current);
      if (key !== lastLayers) {
        lastLayers = key;
        layerTimeline.push({ ms: now() - t0, layers: current });
      }
      const sample = Object.fromEntries(Object.entries(layers || {}).filter(([, l]) => l.width)
        .map(([rid, l]) => [rid, { res: `${l.width}x${l.height}`, bytes: l.bytesSent }]));
      process.stdout.write(`LAYERS ${JSON.stringify({ ms: now() - t0, layers: sample })}\n`);
      result.layer_stats = layers;
    }
    const r = simulcast ? null : await b.evaluate(senderResolution);
    if (r && (!timeline.length || timeline[timeline.length - 1].res !== `${r[0]}x${r[1]}`)) {
      timeline.push({ ms: now() - t0, res: `${r[0]}x${r[1]}` });
    }
    // The screenshot once the page shows live numbers, a few seconds in (the bitrate has ramped).
    if (!shot && s.width && s.bitrateBps > 0 && now() - t0 - result.connect_millis > 3000) {
      await b.screenshot(opts.screenshot);
      shot = true;
      log(`screenshot ${opts.screenshot} (${s.width}x${s.height}, ${s.bitrateBps} bit/s)`);
    }
    await sleep(Math.min(250, Math.max(0, end - now())));
  }
  if (!shot) errors.push("no screenshot: the page never showed a resolution and a bitrate");
  const stats = await b.evaluate(senderStats);
  if (stats.offer && opts["offer-out"]) fs.writeFileSync(opts["offer-out"], stats.offer);
  result.offer_candidates = (stats.offer || "").split(/\r?\n/).filter((l) => l.startsWith("a=candidate:"));
  delete stats.offer;
  result.stats = stats;
  result.page = { ...s };
  result.resolutions_seen = [...seen]; // window.whipgate.width x height, in order
  if (stats.video && stats.video.frameWidth && !simulcast) {
    const last = `${stats.video.frameWidth}x${stats.video.frameHeight}`;
    if (!timeline.length || timeline[timeline.length - 1].res !== last) timeline.push({ ms: now() - t0, res: last });
  }
  if (simulcast) {
    // Every resolution any layer sent, in order of first appearance (per layer below).
    for (const { ms, layers } of layerTimeline) {
      for (const res of Object.values(layers)) {
        if (!timeline.some((t) => t.res === res)) timeline.push({ ms, res });
      }
    }
    result.layer_timeline = layerTimeline;
    result.layer_stats = await b.evaluate(layerStats);
    const sent = Object.values(result.layer_stats || {}).map((l) => l.framesSent || 0);
    if (stats.video && sent.length) stats.video.framesSent = Math.max(...sent);
  }
  result.resolution_timeline = timeline; // getStats outbound-rtp frameWidth x frameHeight
  if (s.width) { result.width = s.width; result.height = s.height; }
  result.frames_sent = {
    video: stats.video ? (stats.video.framesSent ?? stats.video.framesEncoded ?? 0) : 0,
    audio: stats.audio ? stats.audio.packetsSent : 0, // one 20 ms Opus frame per packet
  };

  // Stop: the page DELETEs its Location.
  result.stop_at = now();
  await b.click("#stop");
  s = await waitFor(b, (x) => x.state === "stopped", 10000, "stopped after Stop");
  const fetches = await b.evaluate(() => window.__interop.fetches);
  const del = fetches.filter((f) => f.method === "DELETE").pop();
  // Every request the page made (no token: only whether Authorization was sent).
  result.fetches = fetches.map((f) => ({ method: f.method, url: f.url, status: f.status,
    redirected: f.redirected, response_url: f.response_url, authorization: f.request?.authorization }));
  result.delete = { status: s.deleteStatus, fetch_status: del ? del.status : null, url: del ? del.url : null };
  result.page_after_stop = { ...s };
  log(`Stop: DELETE ${del ? del.url : "(none)"} -> ${s.deleteStatus}`);
  if (s.deleteStatus !== 200) errors.push(`DELETE answered ${s.deleteStatus}, want 200`);
}

async function closeBrowser() {
  if (!browser) return;
  const b = browser;
  browser = null;
  await Promise.race([b.close().catch((e) => log(`close: ${e}`)), sleep(10000)]);
}

const hardLimit = setTimeout(() => {
  errors.push("browser publisher hit its overall time limit");
  finish(3);
}, (Number(opts.seconds) + 60) * 1000);

let finished = false;
async function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(hardLimit);
  await closeBrowser();
  result.ok = errors.length === 0;
  process.stdout.write("RESULT " + JSON.stringify(result) + "\n", () => process.exit(code ?? (result.ok ? 0 : 1)));
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => { errors.push(`got ${sig}`); finish(130); });
}

try {
  await publish();
} catch (e) {
  errors.push(`${e && e.name}: ${e && e.message}`);
  log(e && e.stack);
}
await finish();
