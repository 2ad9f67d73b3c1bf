#!/usr/bin/env node
// WHIP (RFC 9725) publisher on libwebrtc outside a browser (@roamhq/wrtc, Node), for
// whipgate's interop run. Synthetic video (moving I420 bars, 640x360 at 30 fps, VP8: this
// libwebrtc build has no H264 encoder) and a 440 Hz tone (48 kHz, 10 ms frames, Opus),
// through the library's nonstandard RTCVideoSource / RTCAudioSource.
//
// Trickle ICE (RFC 9725 §4.3): the offer is POSTed as soon as it exists, without waiting for
// candidates; each candidate then goes in a PATCH (application/trickle-ice-sdpfrag,
// If-Match: the ETag of the 201), and a last PATCH carries a=end-of-candidates.
//
//   wrtc_publish.mjs --url http://127.0.0.1:8080/whip/cam1 --seconds 8 [--token T]
//
// Prints the WHIP exchange and, last, one line "RESULT {json}" in the shape
// run_interop.py reads (as aiortc_publish.py does). libwebrtc's connectionState stays
// "new" in this binding: iceConnectionState is what is watched.

import fs from "node:fs";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

const require = createRequire(import.meta.url);
const wrtc = require("@roamhq/wrtc");
const { RTCPeerConnection, nonstandard } = wrtc;
const { RTCVideoSource, RTCAudioSource } = nonstandard;

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    seconds: { type: "string", default: "8" },
    token: { type: "string" },
    width: { type: "string", default: "640" },
    height: { type: "string", default: "360" },
    fps: { type: "string", default: "30" },
    "connect-timeout": { type: "string", default: "10" },
    "answer-out": { type: "string" },
    "offer-out": { type: "string" },
  },
});

const W = Number(opts.width), H = Number(opts.height), FPS = Number(opts.fps);
const RATE = 48000, CHUNK = RATE / 100; // 10 ms
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const log = (m) => process.stdout.write(`${m}\n`);

const result = {
  client: "wrtc",
  version: require("@roamhq/wrtc/package.json").version,
  codec: "vp8",
  trickle: true,
  ok: false,
  errors: [],
  patches: [],
  width: W,
  height: H,
};
const errors = result.errors;

// ---- media
const videoSource = new RTCVideoSource();
const audioSource = new RTCAudioSource();
const videoTrack = videoSource.createTrack();
const audioTrack = audioSource.createTrack();
const frame = new Uint8Array((W * H * 3) / 2);
const ySize = W * H, cSize = ySize / 4;
let videoFrames = 0, audioFrames = 0;

function paintFrame(n) {
  // Vertical luma bars scrolling right, chroma drifting: every frame differs.
  const shift = (n * 4) % W;
  for (let x = 0; x < W; x++) {
    const v = 16 + ((((x + shift) % W) * 219) / W) | 0;
    frame[x] = v;
  }
  for (let y = 1; y < H; y++) frame.copyWithin(y * W, 0, W);
  frame.fill(64 + (n % 128), ySize, ySize + cSize);
  frame.fill(192 - (n % 128), ySize + cSize);
}

const tone = new Int16Array(CHUNK);
let phase = 0;
function nextTone() {
  for (let i = 0; i < CHUNK; i++) {
    tone[i] = Math.round(8000 * Math.sin(phase));
    phase += (2 * Math.PI * 440) / RATE;
  }
  phase %= 2 * Math.PI;
  return tone;
}

let pumping = false;
async function pump(untilMs) {
  // Frames are due on a fixed clock from the start; the loop catches up after any delay.
  pumping = true;
  const t0 = now();
  while (pumping && now() < untilMs) {
    const elapsed = now() - t0;
    while (videoFrames <= (elapsed * FPS) / 1000) {
      paintFrame(videoFrames);
      videoSource.onFrame({ width: W, height: H, data: frame });
      videoFrames++;
    }
    while (audioFrames <= elapsed / 10) {
      audioSource.onData({ samples: nextTone(), sampleRate: RATE, bitsPerSample: 16, channelCount: 1, numberOfFrames: CHUNK });
      audioFrames++;
    }
    await sleep(5);
  }
}

// ---- WHIP
const baseHeaders = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};

async function patchFragment(sessionUrl, etag, lines, what) {
  const body = lines.join("\r\n") + "\r\n";
  const t = now();
  const r = await fetch(sessionUrl, {
    method: "PATCH",
    headers: { ...baseHeaders, "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag },
    body,
    signal: AbortSignal.timeout(5000),
  });
  const entry = { what, status: r.status, millis: Math.round(now() - t), etag: r.headers.get("etag") };
  result.patches.push(entry);
  log(`PATCH ${what} -> ${r.status}`);
  if (r.status !== 204) errors.push(`PATCH ${what} answered ${r.status}, want 204: ${(await r.text()).slice(0, 200)}`);
}

async function publish() {
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
  try {
    pc.addTransceiver(videoTrack, { direction: "sendonly" });
    pc.addTransceiver(audioTrack, { direction: "sendonly" });

    // Candidates are queued from the start, sent once the session URL and ETag are known.
    const candidates = [];
    let gatheringDone = false;
    let wake = null;
    pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) candidates.push(e.candidate);
      else gatheringDone = true;
      if (wake) wake();
    };

    // The offer as createOffer made it: no candidates yet (they all go in PATCHes).
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const offerSdp = offer.sdp;
    if (opts["offer-out"]) fs.writeFileSync(opts["offer-out"], offerSdp);
    result.offer_candidates = offerSdp.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:"));

    const t0 = now();
    const resp = await fetch(opts.url, {
      method: "POST",
      headers: { ...baseHeaders, "Content-Type": "application/sdp" },
      body: offerSdp,
      signal: AbortSignal.timeout(10000),
    });
    const answer = await resp.text();
    const post = result.post = {
      status: resp.status,
      content_type: resp.headers.get("content-type"),
      location: resp.headers.get("location"),
      etag: resp.headers.get("etag"),
      link: resp.headers.get("link") ? [resp.headers.get("link")] : [],
      final_url: resp.url,
      millis: Math.round(now() - t0),
    };
    log(`POST ${opts.url} -> ${post.status} (${post.millis} ms, ${result.offer_candidates.length} candidates in the offer)`);
    log(`  Location: ${post.location}`);
    log(`  ETag: ${post.etag}`);
    if (opts["answer-out"]) fs.writeFileSync(opts["answer-out"], answer);
    if (post.status !== 201) { errors.push(`POST status ${post.status}, want 201: ${answer.slice(0, 300)}`); return; }
    if (!post.location) { errors.push("201 without Location"); return; }
    const sessionUrl = result.session_url = new URL(post.location, resp.url).href;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });

    // Trickle: one PATCH per candidate (the fragment names the ICE credentials and the
    // first m-section's mid: BUNDLE), then end-of-candidates.
    const ufrag = (offerSdp.match(/a=ice-ufrag:(\S+)/) || [])[1];
    const pwd = (offerSdp.match(/a=ice-pwd:(\S+)/) || [])[1];
    const mid = (offerSdp.match(/a=mid:(\S+)/) || [])[1];
    const kind = (offerSdp.match(/^m=(\w+)/m) || [])[1];
    const head = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, `m=${kind} 9 UDP/TLS/RTP/SAVPF 0`, `a=mid:${mid}`];
    const gatherDeadline = now() + 5000;
    let sent = 0;
    const t1 = now();
    let state = pc.iceConnectionState;
    for (;;) {
      while (sent < candidates.length) {
        const c = candidates[sent++];
        await patchFragment(sessionUrl, post.etag, [...head, `a=${c.candidate}`], `candidate ${c.candidate.split(" ").slice(4, 8).join(" ")}`);
      }
      if (gatheringDone || now() > gatherDeadline) break;
      await new Promise((r) => { wake = r; setTimeout(r, 100); });
    }
    wake = null;
    await patchFragment(sessionUrl, post.etag, [...head, "a=end-of-candidates"], "end-of-candidates");
    result.trickled_candidates = sent;

    // Media flows from now on; connected is watched on iceConnectionState.
    const end = now() + Number(opts["connect-timeout"]) * 1000 + Number(opts.seconds) * 1000 + 1000;
    const pumpDone = pump(end);
    const deadline = now() + Number(opts["connect-timeout"]) * 1000;
    while (!["connected", "completed", "failed", "closed"].includes(pc.iceConnectionState) && now() < deadline) await sleep(20);
    state = pc.iceConnectionState;
    result.connection_state = ["connected", "completed"].includes(state) ? "connected" : state;
    result.connect_millis = Math.round(now() - t1);
    log(`iceConnectionState ${state} after ${result.connect_millis} ms (connectionState ${pc.connectionState})`);
    if (result.connection_state !== "connected") {
      errors.push(`ICE did not connect within ${opts["connect-timeout"]} s: ${state}`);
    } else {
      const framesAtConnect = { video: videoFrames, audio: audioFrames };
      // The publishing period itself: media flows, the ICE state is watched.
      const stop = now() + Number(opts.seconds) * 1000;
      while (now() < stop) {
        if (!["connected", "completed"].includes(pc.iceConnectionState)) {
          errors.push(`ICE dropped to ${pc.iceConnectionState} while publishing`);
          break;
        }
        await sleep(100);
      }
      const stats = await pc.getStats();
      result.stats = {};
      stats.forEach((s) => {
        if (s.type === "outbound-rtp") {
          result.stats[s.kind] = { packetsSent: s.packetsSent, bytesSent: s.bytesSent, framesEncoded: s.framesEncoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight };
        }
      });
      // Frames produced while connected (audio: 10 ms chunks, Opus sends 20 ms frames).
      result.frames_sent = {
        video: videoFrames - framesAtConnect.video,
        audio: Math.floor((audioFrames - framesAtConnect.audio) / 2),
      };
    }
    pumping = false;
    await pumpDone;
    log(`sent ${videoFrames} video frames, ${audioFrames} audio chunks of 10 ms`);

    const d = await fetch(sessionUrl, { method: "DELETE", headers: baseHeaders, signal: AbortSignal.timeout(5000) });
    result.delete = { status: d.status, body: (await d.text()).slice(0, 300) };
    log(`DELETE ${sessionUrl} -> ${d.status}`);
    if (d.status !== 200) errors.push(`DELETE status ${d.status}, want 200`);
  } finally {
    pumping = false;
    videoTrack.stop();
    audioTrack.stop();
    pc.close();
  }
}

const hardLimit = setTimeout(() => { errors.push("wrtc publisher hit its overall time limit"); finish(3); },
  (Number(opts.seconds) + 40) * 1000);

let finished = false;
function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(hardLimit);
  result.ok = errors.length === 0;
  for (const e of errors) process.stderr.write(`ERROR: ${e}\n`);
  process.stdout.write("RESULT " + JSON.stringify(result) + "\n", () => process.exit(code ?? (result.ok ? 0 : 1)));
}
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => { errors.push(`got ${sig}`); finish(130); });

try {
  await publish();
} catch (e) {
  errors.push(`${e && e.name}: ${e && e.message}`);
  process.stderr.write(`${e && e.stack}\n`);
}
finish();
