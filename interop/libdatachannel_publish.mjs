#!/usr/bin/env node
// WHIP (RFC 9725) publisher on libdatachannel (OBS Studio's WebRTC library) through its
// Node binding node-datachannel, for whipgate's interop run. It rebuilds what OBS's
// plugins/obs-webrtc/whip-output.cpp does, step by step:
//
// - one PeerConnection, an audio track (mid "0", Opus, payload type 111, SSRC base) and a
//   video track (mid "1", H264, payload type 96, SSRC base + 1), both sendonly, one random
//   msid and cname;
// - the media handler chains OBS builds: audio RtpPacketizer (node-datachannel has no
//   OpusRtpPacketizer class: libdatachannel's is an RtpPacketizer at 48 kHz) ->
//   RtcpSrReporter -> RtcpNackResponder; video H264RtpPacketizer (start-code separated NAL
//   units, 1200-byte fragments) -> RtcpSrReporter -> RtcpNackResponder(4000) ->
//   PacingHandler(bitrate kbps * 10000 bit/s, 5 ms), OBS's numbers;
// - setLocalDescription(), then the offer POSTed with Content-Type: application/sdp and
//   Authorization: Bearer; a 307 is followed with the same method, body and headers, the
//   token included (libcurl's FOLLOWLOCATION + UNRESTRICTED_AUTH, as OBS sets them);
// - --offer-candidates yes: the offer once ICE gathering is complete (OBS before 30.2);
//   no: POSTed at once without candidates (OBS 30.2+; OBS 31 disables auto-gathering and
//   gathers after the answer, a call node-datachannel does not expose: libjuice's host
//   candidate is gathered synchronously, so its a=candidate lines are taken out of the text
//   POSTed instead, which is what goes on the wire either way); no trickle;
// - the encoder starts when the 201 is in (OBS begins data capture after Connect()); each
//   frame's RTP timestamp advances by its duration (OBS's Send()); frames produced while a
//   track is not open are dropped (OBS's `if (!track->isOpen()) return;`);
// - PLI from the server is ignored (counted only): keyframes come on the encoder's own
//   schedule, one at start and one every 2 s (x264 keyint=60 at 30 fps);
// - at the end the PeerConnection is closed, then DELETE with the token (OBS's StopThread);
//   anything but 200 is an error (OBS logs a warning).
//
// The media is real encoder output: FFmpeg (libx264 constrained baseline, SPS/PPS on every
// IDR, no B-frames; libopus 20 ms stereo frames) encodes testsrc2 and a sine tone into an
// Annex-B file and an Ogg file first; the publisher then emits one access unit every 1/30 s
// and one Opus packet every 20 ms on a clock started at the 201.
//
// Loopback only: libjuice leaves loopback interfaces out of its host candidates, so the
// peer connection binds 127.0.0.1 (--bind), and has no STUN/TURN server.
//
//   libdatachannel_publish.mjs --url http://127.0.0.1:8080/whip/cam1 --seconds 8 --token T
//       --offer-candidates no --workdir DIR
//
// Prints the WHIP exchange and, last, one line "RESULT {json}" in the shape
// run_interop.py reads (as aiortc_publish.py does).

import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";

const require = createRequire(import.meta.url);
const ndc = require("node-datachannel");

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    seconds: { type: "string", default: "8" },
    token: { type: "string" },
    "offer-candidates": { type: "string", default: "yes" },
    "delete-without-token": { type: "boolean", default: false },
    workdir: { type: "string", default: "." },
    ffmpeg: { type: "string", default: "ffmpeg" },
    bind: { type: "string", default: "127.0.0.1" },
    width: { type: "string", default: "640" },
    height: { type: "string", default: "360" },
    "bitrate-kbps": { type: "string", default: "2500" },
    "connect-timeout": { type: "string", default: "10" },
    "answer-out": { type: "string" },
    "offer-out": { type: "string" },
  },
});

/** node-datachannel's own version (its package.json is not among its exports). */
function bindingVersion() {
  const main = require.resolve("node-datachannel");
  let dir = path.dirname(main);
  while (!fs.existsSync(path.join(dir, "package.json")) || path.basename(dir) !== "node-datachannel") dir = path.dirname(dir);
  return JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;
}

const FPS = 30, KEYINT = 60, OPUS_MS = 20;
const AUDIO_PT = 111, VIDEO_PT = 96, MAX_VIDEO_FRAGMENT_SIZE = 1200, VIDEO_NACK_BUFFER = 4000;
const SECONDS = Number(opts.seconds), CONNECT_TIMEOUT_MS = Number(opts["connect-timeout"]) * 1000;
const WITH_CANDIDATES = opts["offer-candidates"] !== "no";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mono = () => performance.now();
const log = (m) => process.stdout.write(`${m}\n`);

const result = {
  client: "libdatachannel",
  version: `${ndc.getLibraryVersion()} (node-datachannel ${bindingVersion()})`,
  driver: "node-datachannel",
  codec: "h264",
  trickle: false,
  offer_with_candidates: WITH_CANDIDATES,
  ok: false,
  errors: [],
  fetches: [],
  width: Number(opts.width),
  height: Number(opts.height),
};
const errors = result.errors;

// ---------------------------------------------------------------- the encoder's output

function encode() {
  // The publishing time and some slack, in whole GOPs: the publisher loops over it (from an
  // IDR) if connecting took longer.
  const total = String(Math.ceil((SECONDS + 4) / (KEYINT / FPS)) * (KEYINT / FPS));
  const h264 = path.join(opts.workdir, "libdatachannel-video.h264");
  const ogg = path.join(opts.workdir, "libdatachannel-audio.ogg");
  const t = mono();
  const r = spawnSync(opts.ffmpeg, [
    "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
    "-f", "lavfi", "-i", `testsrc2=size=${opts.width}x${opts.height}:rate=${FPS}`,
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-map", "0:v", "-t", total, "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline",
    "-pix_fmt", "yuv420p", "-bf", "0", "-b:v", `${opts["bitrate-kbps"]}k`,
    "-x264-params", `keyint=${KEYINT}:min-keyint=${KEYINT}:scenecut=0:repeat-headers=1`,
    "-f", "h264", h264,
    "-map", "1:a", "-t", total, "-c:a", "libopus", "-ac", "2", "-ar", "48000", "-b:a", "96k",
    "-frame_duration", String(OPUS_MS), "-f", "ogg", ogg,
  ], { timeout: 60000, stdio: ["ignore", "ignore", "pipe"], killSignal: "SIGKILL" });
  if (r.status !== 0) throw new Error(`ffmpeg encode failed (${r.status ?? r.signal}): ${String(r.stderr).slice(-500)}`);
  result.encode_millis = Math.round(mono() - t);
  return { video: accessUnits(fs.readFileSync(h264)), audio: opusPackets(fs.readFileSync(ogg)) };
}

/** Start-code positions and NAL unit bounds of an Annex-B stream. */
function nalUnits(buf) {
  const starts = [];
  for (let i = 0; i + 3 <= buf.length; i++) {
    if (buf[i] === 0 && buf[i + 1] === 0 && buf[i + 2] === 1) {
      const at = i > 0 && buf[i - 1] === 0 ? i - 1 : i;
      starts.push({ at, payload: i + 3 });
      i += 2;
    }
  }
  return starts.map((s, k) => ({ at: s.at, payload: s.payload, end: k + 1 < starts.length ? starts[k + 1].at : buf.length }));
}

/** Access units (each with its start codes, as an encoder hands them to OBS): a new one
 * starts at an AUD, SPS, PPS or SEI after a slice, or at a slice whose first_mb_in_slice
 * is 0 after a slice. */
function accessUnits(buf) {
  const aus = [];
  let cur = null, sawSlice = false;
  for (const n of nalUnits(buf)) {
    const type = buf[n.payload] & 0x1f;
    const slice = type === 1 || type === 5;
    const firstMb0 = slice && (buf[n.payload + 1] & 0x80) !== 0;
    const startsNew = cur === null || (sawSlice && ([6, 7, 8, 9].includes(type) || firstMb0));
    if (startsNew) {
      if (cur) aus.push(cur);
      cur = { at: n.at, end: n.end, idr: false };
      sawSlice = false;
    }
    cur.end = n.end;
    if (slice) sawSlice = true;
    if (type === 5) cur.idr = true;
  }
  if (cur) aus.push(cur);
  return aus.map((a) => ({ data: buf.subarray(a.at, a.end), idr: a.idr }));
}

/** The Opus packets of an Ogg stream (RFC 3533 pages, RFC 7845 mapping), headers dropped. */
function opusPackets(buf) {
  const packets = [];
  let partial = [];
  for (let off = 0; off + 27 <= buf.length;) {
    if (buf.toString("latin1", off, off + 4) !== "OggS") throw new Error(`Ogg: no page at ${off}`);
    const nseg = buf[off + 26];
    const lacing = buf.subarray(off + 27, off + 27 + nseg);
    let body = off + 27 + nseg;
    for (const len of lacing) {
      partial.push(buf.subarray(body, body + len));
      body += len;
      if (len < 255) {
        packets.push(Buffer.concat(partial));
        partial = [];
      }
    }
    off = body;
  }
  return packets.filter((p) => !p.subarray(0, 8).toString("latin1").startsWith("Opus"));
}

// ---------------------------------------------------------------- the peer connection

const ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const randomId = (n) => Array.from({ length: n }, () => ALNUM[crypto.randomInt(ALNUM.length)]).join("");

function setup() {
  const pc = new ndc.PeerConnection("whip-output", { iceServers: [], bindAddress: opts.bind });
  const baseSsrc = crypto.randomInt(1, 2 ** 32 - 2);
  const msid = randomId(16), cname = randomId(16);

  // ConfigureAudioTrack
  const audio = new ndc.Audio("0", "SendOnly");
  audio.addOpusCodec(AUDIO_PT);
  audio.addSSRC(baseSsrc, cname, msid, `${msid}-audio`);
  const audioTrack = pc.addTrack(audio);
  const audioConfig = new ndc.RtpPacketizationConfig(baseSsrc, cname, AUDIO_PT, 48000);
  const audioPacketizer = new ndc.RtpPacketizer(audioConfig);
  const audioSr = new ndc.RtcpSrReporter(audioConfig);
  audioPacketizer.addToChain(audioSr);
  audioPacketizer.addToChain(new ndc.RtcpNackResponder());
  audioTrack.setMediaHandler(audioPacketizer);

  // ConfigureVideoTrack
  const video = new ndc.Video("1", "SendOnly");
  video.addSSRC(baseSsrc + 1, cname, msid, `${msid}-video`);
  const videoConfig = new ndc.RtpPacketizationConfig(baseSsrc + 1, cname, VIDEO_PT, 90000);
  video.addH264Codec(VIDEO_PT);
  const videoPacketizer = new ndc.H264RtpPacketizer("StartSequence", videoConfig, MAX_VIDEO_FRAGMENT_SIZE);
  const videoSr = new ndc.RtcpSrReporter(videoConfig);
  videoPacketizer.addToChain(videoSr);
  videoPacketizer.addToChain(new ndc.RtcpNackResponder(VIDEO_NACK_BUFFER));
  videoPacketizer.addToChain(new ndc.PacingHandler(Number(opts["bitrate-kbps"]) * 10000, 5));
  const videoTrack = pc.addTrack(video);
  videoTrack.setMediaHandler(videoPacketizer);

  result.ssrcs = { audio: baseSsrc, video: baseSsrc + 1 };
  return { pc, audioTrack, videoTrack, audioConfig, videoConfig };
}

/** PLIs in a compound RTCP packet (RFC 4585: PT 206, FMT 1). */
function countPli(msg) {
  let n = 0;
  for (let off = 0; off + 4 <= msg.length;) {
    if ((msg[off] >> 6) !== 2) break;
    if (msg[off + 1] === 206 && (msg[off] & 0x1f) === 1) n++;
    off += (msg.readUInt16BE(off + 2) + 1) * 4;
  }
  return n;
}

// ---------------------------------------------------------------- WHIP over HTTP

const auth = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
const userAgent = { "User-Agent": `libdatachannel_publish (OBS whip-output on libdatachannel ${ndc.getLibraryVersion()})` };

async function request(method, url, { headers = {}, body, record = true } = {}) {
  const at = Date.now();
  const resp = await fetch(url, { method, headers: { ...userAgent, ...headers }, body, redirect: "manual",
    signal: AbortSignal.timeout(8000) });
  const text = await resp.text();
  if (record) {
    result.fetches.push({ method, url, status: resp.status, redirected: false, response_url: url,
      authorization: "Authorization" in headers, at });
  }
  return { resp, text };
}

/** POST, following 307/308 with the same method, body and headers (token included). */
async function post(offer) {
  const headers = { "Content-Type": "application/sdp", ...auth };
  const redirects = [];
  let url = opts.url;
  const t0 = mono();
  for (let hop = 0; ; hop++) {
    const { resp, text } = await request("POST", url, { headers, body: offer });
    if ((resp.status === 307 || resp.status === 308) && hop < 5) {
      const next = new URL(resp.headers.get("location"), url).href;
      redirects.push({ status: resp.status, location: next });
      log(`POST ${url} -> ${resp.status}, Location ${next}`);
      url = next;
      continue;
    }
    return {
      text,
      post: {
        status: resp.status,
        content_type: resp.headers.get("content-type"),
        location: resp.headers.get("location"),
        etag: resp.headers.get("etag"),
        link: resp.headers.get("link") ? [resp.headers.get("link")] : [],
        final_url: url,
        response_url: url,
        redirected: false,
        redirects,
        millis: Math.round(mono() - t0),
      },
    };
  }
}

// The peer connection's callbacks wake whoever waits for a state (no polling).
let waiters = [];
function changed() {
  const woken = waiters;
  waiters = [];
  for (const wake of woken) wake();
}

/** Resolves with pred() once it holds (checked on every state change) or after timeoutMs. */
async function waitFor(pred, timeoutMs) {
  const deadline = mono() + timeoutMs;
  while (!pred() && mono() < deadline) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, deadline - mono()));
      waiters.push(() => { clearTimeout(timer); resolve(); });
    });
  }
  return pred();
}

// ---------------------------------------------------------------- the publish

async function publish() {
  const media = encode();
  log(`encoded ${media.video.length} access units (${media.video.filter((a) => a.idr).length} IDR), `
    + `${media.audio.length} Opus packets in ${result.encode_millis} ms`);
  const { pc, audioTrack, videoTrack, audioConfig, videoConfig } = setup();
  const ev = { connectingAt: null, connectedAt: null, open: {} };
  let state = "new";
  pc.onStateChange((s) => {
    state = s;
    if (s === "connecting") ev.connectingAt = mono();
    if (s === "connected" && ev.connectedAt === null) ev.connectedAt = mono();
    log(`PeerConnection state is now: ${s}`);
    changed();
  });
  let gathering = "new";
  pc.onGatheringStateChange((s) => { gathering = s; changed(); });
  const plis = { video: 0, audio: 0 };
  for (const [kind, track] of [["video", videoTrack], ["audio", audioTrack]]) {
    track.onOpen(() => { ev.open[kind] = mono(); });
    track.onMessage((msg) => { plis[kind] += countPli(msg); });
  }

  try {
    pc.setLocalDescription();
    if (WITH_CANDIDATES) await waitFor(() => gathering === "complete", 5000);
    let offer = pc.localDescription().sdp;
    result.candidates_gathered = offer.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:")).length;
    if (!WITH_CANDIDATES) offer = offer.split("\r\n").filter((l) => !/^a=(candidate:|end-of-candidates)/.test(l)).join("\r\n");
    result.offer_candidates = offer.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:"));
    if (opts["offer-out"]) fs.writeFileSync(opts["offer-out"], offer);

    const tPost = mono();
    const { text, post: p } = await post(offer);
    result.post = p;
    log(`POST ${p.final_url} -> ${p.status} (${p.millis} ms, ${result.offer_candidates.length} candidates in the offer)`);
    log(`  Location: ${p.location}`);
    const answer = text.slice(Math.max(0, text.indexOf("v=0")));
    if (opts["answer-out"]) fs.writeFileSync(opts["answer-out"], answer);
    if (p.status !== 201) { errors.push(`POST status ${p.status}, want 201: ${text.slice(0, 300)}`); return; }
    if (!p.location) { errors.push("201 without Location"); return; }
    const sessionUrl = result.session_url = new URL(p.location, p.final_url).href;
    pc.setRemoteDescription(answer, "answer");

    // Data capture begins: the encoder clock starts now; frame n is out (n + 1) intervals later.
    const t0 = mono();
    const stats = { video: { sent: 0, dropped: 0, idrSent: 0 }, audio: { sent: 0, dropped: 0 } };
    let vi = 0, ai = 0, firstIdrAt = null, running = true;
    const pump = (async () => {
      let videoTs = videoConfig.timestamp, audioTs = audioConfig.timestamp;
      while (running) {
        const nextV = t0 + ((vi + 1) * 1000) / FPS, nextA = t0 + (ai + 1) * OPUS_MS;
        const due = Math.min(nextV, nextA);
        if (mono() < due) { await sleep(Math.max(0, due - mono())); continue; }
        if (nextV <= nextA) {
          const au = media.video[vi % media.video.length];
          vi++;
          if (!videoTrack.isOpen()) { stats.video.dropped++; continue; }
          videoTs = (videoTs + 90000 / FPS) >>> 0;
          videoConfig.timestamp = videoTs;
          videoTrack.sendMessageBinary(au.data);
          stats.video.sent++;
          if (au.idr) { stats.video.idrSent++; if (firstIdrAt === null) firstIdrAt = mono(); }
        } else {
          const pkt = media.audio[ai % media.audio.length];
          ai++;
          if (!audioTrack.isOpen()) { stats.audio.dropped++; continue; }
          audioTs = (audioTs + (48000 * OPUS_MS) / 1000) >>> 0;
          audioConfig.timestamp = audioTs;
          audioTrack.sendMessageBinary(pkt);
          stats.audio.sent++;
        }
      }
    })();

    await waitFor(() => ["connected", "failed", "closed"].includes(state), CONNECT_TIMEOUT_MS);
    result.connection_state = state === "connected" ? "connected" : state;
    // As OBS measures it: PeerConnection "connecting" -> "connected".
    result.connect_millis = ev.connectedAt !== null ? Math.round(ev.connectedAt - (ev.connectingAt ?? tPost)) : null;
    result.post_to_connected_millis = ev.connectedAt !== null ? Math.round(ev.connectedAt - tPost) : null;
    result.connected_at = Date.now();
    log(`state ${state} after ${result.connect_millis} ms (${result.post_to_connected_millis} ms after the POST)`);
    if (result.connection_state !== "connected") {
      errors.push(`ICE/DTLS did not connect within ${opts["connect-timeout"]} s: ${state}`);
    } else {
      const pair = pc.getSelectedCandidatePair();
      result.selected_pair = pair ? { local: `${pair.local.address}:${pair.local.port}`, remote: `${pair.remote.address}:${pair.remote.port}` } : null;
      const stop = mono() + SECONDS * 1000;
      let sentDeleteWithoutToken = false;
      while (mono() < stop) {
        if (state !== "connected") { errors.push(`connection dropped to ${state} while publishing`); break; }
        if (opts["delete-without-token"] && !sentDeleteWithoutToken && mono() > stop - (SECONDS * 1000) / 2) {
          sentDeleteWithoutToken = true;
          const at = Date.now();
          const { resp } = await request("DELETE", sessionUrl);
          result.delete_without_token = { at, url: sessionUrl, status: resp.status,
            www_authenticate: resp.headers.get("www-authenticate") };
          log(`DELETE without the token -> ${resp.status}`);
        }
        await sleep(50);
      }
    }
    running = false;
    await pump;
    result.tracks_open_millis = Object.fromEntries(Object.entries(ev.open).map(([k, v]) => [k, Math.round(v - tPost)]));
    result.first_keyframe_after_connected_millis = firstIdrAt !== null && ev.connectedAt !== null ? Math.round(firstIdrAt - ev.connectedAt) : null;
    result.frames_dropped_before_open = { video: stats.video.dropped, audio: stats.audio.dropped };
    result.frames_sent = { video: stats.video.sent, audio: stats.audio.sent };
    result.keyframes_sent = stats.video.idrSent;
    result.plis_received_ignored = plis.video + plis.audio;
    log(`sent ${stats.video.sent} access units (${stats.video.idrSent} IDR; ${stats.video.dropped} dropped before the track was open), `
      + `${stats.audio.sent} Opus packets (${stats.audio.dropped} dropped); ${result.plis_received_ignored} PLI ignored; `
      + `first IDR ${result.first_keyframe_after_connected_millis} ms after connected`);

    // StopThread: close the peer connection, then DELETE the resource.
    result.stop_at = Date.now();
    pc.close();
    const { resp, text: body } = await request("DELETE", sessionUrl, { headers: auth });
    result.delete = { status: resp.status, body: body.slice(0, 300), url: sessionUrl };
    log(`DELETE ${sessionUrl} -> ${resp.status}`);
    if (resp.status !== 200) errors.push(`DELETE request for resource URL failed. HTTP Code: ${resp.status}`);
  } finally {
    pc.close();
  }
}

const hardLimit = setTimeout(() => { errors.push("libdatachannel publisher hit its overall time limit"); finish(3); },
  (SECONDS + 60) * 1000);

let finished = false;
function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(hardLimit);
  result.ok = errors.length === 0;
  for (const e of errors) process.stderr.write(`ERROR: ${e}\n`);
  try { ndc.cleanup(); } catch { /* already gone */ }
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
