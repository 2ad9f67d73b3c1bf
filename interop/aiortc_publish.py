#!/usr/bin/env python3
"""WHIP (RFC 9725) publisher built on aiortc, for whipgate's interop tests.

Publishes synthetic video (moving 640x360 stripes, encoded live as H264 or
VP8) and a 400 Hz Opus sine tone. By default non-trickle: aiortc gathers every
candidate inside setLocalDescription, so the offer POSTed is complete.

--trickle: the offer is POSTed without its candidates (port 9, c=0.0.0.0,
a=ice-options:trickle), and the candidates follow in one PATCH
(application/trickle-ice-sdpfrag, RFC 8840: ufrag, pwd, the first m-section's
m= line and mid, the candidates, a=end-of-candidates) with If-Match: the ETag
of the 201. Before it, two PATCHes that must be refused: a wrong ETag (412) and
no If-Match (428); with --token, one without Authorization is recorded (its
status is not checked here).

--sessions N: publishes N times in a row to the same endpoint, each time with a
new RTCPeerConnection (new SSRCs, new DTLS), DELETE in between (a publisher
reconnecting); --answer-out/--offer-out then get -1, -2, ... before the suffix.

Every ICE candidate is on loopback: no ICE servers, and aioice's host
address discovery is replaced by ["127.0.0.1"].

    aiortc_publish.py --url http://127.0.0.1:8080/whip/cam1 --codec h264 --seconds 8

Prints the WHIP exchange (status, Location, ETag, DELETE status) and, last,
one line "RESULT {json}" that run_interop.py reads (with --sessions > 1, each
session's own in "sessions"). Exits 0 only when every POST got 201 with an SDP
answer, ICE+DTLS connected, every DELETE got 200 (and with --trickle, the
candidates' PATCH 204 and the refused ones as above).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import math
import struct
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import aioice.ice
import aiohttp
import aiortc
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame


def _loopback_only(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
    return ["127.0.0.1"]


# aioice skips 127.0.0.1 and offers every other interface: keep ICE on loopback.
aioice.ice.get_host_addresses = _loopback_only

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020


class StripesTrack(MediaStreamTrack):
    """Moving diagonal stripes, yuv420p, at a fixed frame rate."""

    kind = "video"

    def __init__(self, width: int, height: int, fps: int) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0
        self._start: float | None = None
        self._period = 64
        # One row of the pattern, long enough to slice at any phase.
        self._base = bytes(16 + (i * 219 // self._period) % 220 for i in range(4096 + self._period))

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            due = self._start + self.frames / self.fps
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = VideoFrame(self.width, self.height, "yuv420p")
        y, u, v = frame.planes
        shift = (self.frames * 2) % self._period
        rows = []
        for r in range(y.height):
            off = (shift + r) % self._period
            rows.append(self._base[off : off + y.line_size])
        y.update(b"".join(rows))
        # Chroma drifts slowly so the colour changes too.
        cu = 64 + (self.frames % 128)
        u.update(bytes([cu]) * u.buffer_size)
        v.update(bytes([255 - cu]) * v.buffer_size)
        frame.pts = self.frames * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames += 1
        return frame


class SineTrack(MediaStreamTrack):
    """A 400 Hz sine tone, mono s16 at 48 kHz, 20 ms per frame."""

    kind = "audio"

    def __init__(self, freq: int = 400) -> None:
        super().__init__()
        self.samples = int(AUDIO_RATE * AUDIO_PTIME)
        self.frames = 0
        self._start: float | None = None
        # 400 Hz divides 48 kHz / 960-sample frames exactly: one buffer fits every frame.
        self._pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / AUDIO_RATE)))
            for i in range(self.samples)
        )

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            due = self._start + self.frames * AUDIO_PTIME
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = AudioFrame(format="s16", layout="mono", samples=self.samples)
        plane = frame.planes[0]
        plane.update(self._pcm + bytes(plane.buffer_size - len(self._pcm)))
        frame.pts = self.frames * self.samples
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.frames += 1
        return frame


def codec_preferences(kind: str, mime: str) -> list:
    """The sender's codecs of `mime` (every H264 profile, say), with RTX kept."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in caps if c.mimeType.lower() == mime.lower()]
    if not chosen:
        raise SystemExit(f"aiortc offers no {mime}: {[c.mimeType for c in caps]}")
    rtx = [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    return chosen + rtx


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pc.connectionState in ("connected", "failed", "closed"):
            return pc.connectionState
        await asyncio.sleep(0.05)
    return pc.connectionState


async def outbound_stats(pc: RTCPeerConnection) -> dict:
    out = {}
    try:
        report = await pc.getStats()
    except Exception as e:  # stats are diagnostics only
        return {"error": repr(e)}
    for s in report.values():
        if s.type == "outbound-rtp":
            out[s.kind] = {"packetsSent": s.packetsSent, "bytesSent": s.bytesSent}
    return out


def numbered(path: str | None, index: int, count: int) -> str | None:
    """answer.sdp -> answer-2.sdp when publishing more than once."""
    if not path or count == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{index}{p.suffix}"))


def trickle_offer(sdp: str) -> tuple[str, dict]:
    """The offer without candidates, as a trickling client POSTs it (RFC 8840: port 9,
    c=IN IP4 0.0.0.0, a=ice-options:trickle), and what the candidates' fragment needs."""
    lines = sdp.splitlines()
    first_m = next(i for i, l in enumerate(lines) if l.startswith("m="))
    out, frag = [], {"candidates": [], "mid": None, "kind": None}
    section = -1
    for i, line in enumerate(lines):
        if line.startswith("m="):
            section += 1
            kind, _port, rest = line[2:].split(" ", 2)
            if section == 0:
                frag["kind"] = kind
            out.append(f"m={kind} 9 {rest}")
            continue
        if line.startswith("a=candidate:"):
            if section == 0:  # BUNDLE: the first m-section's transport carries everything
                frag["candidates"].append(line)
            continue
        if line == "a=end-of-candidates":
            continue
        if line.startswith("c=IN IP4 ") and section >= 0:
            out.append("c=IN IP4 0.0.0.0")
            continue
        if line.startswith("a=mid:") and section == 0 and frag["mid"] is None:
            frag["mid"] = line[len("a=mid:"):]
        if line.startswith("a=ice-ufrag:") and "ufrag" not in frag:
            frag["ufrag"] = line[len("a=ice-ufrag:"):]
        if line.startswith("a=ice-pwd:") and "pwd" not in frag:
            frag["pwd"] = line[len("a=ice-pwd:"):]
        out.append(line)
        if i == first_m - 1 and not any(l.startswith("a=ice-options:") for l in lines[:first_m]):
            out.append("a=ice-options:trickle")
    return "\r\n".join(out) + "\r\n", frag


async def trickle_patches(http, session_url: str, etag: str, frag: dict, headers: dict,
                          token: str | None, result: dict) -> None:
    """The candidates' PATCH (204), after the ones whipgate must refuse."""
    errors: list[str] = result["errors"]
    body = "\r\n".join([
        f"a=ice-ufrag:{frag['ufrag']}", f"a=ice-pwd:{frag['pwd']}",
        f"m={frag['kind']} 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{frag['mid']}",
        *frag["candidates"], "a=end-of-candidates",
    ]) + "\r\n"
    ctype = {"Content-Type": "application/trickle-ice-sdpfrag"}
    refused = [("wrong If-Match", {**headers, **ctype, "If-Match": '"not-the-etag"'}, 412),
               ("no If-Match", {**headers, **ctype}, 428)]
    if token:
        # whipgate wants the ingest's token on the session URL too.
        refused.append(("no Authorization", {**ctype, "If-Match": etag}, 401))
    result["refused_patches"] = []
    for what, hdrs, want in refused:
        async with http.patch(session_url, data=body, headers=hdrs) as resp:
            entry = {"what": what, "status": resp.status, "want": want,
                     "body": (await resp.text())[:200]}
        result["refused_patches"].append(entry)
        print(f"PATCH ({what}) -> {entry['status']}" + (f" (want {want})" if want else ""), flush=True)
        if want is not None and entry["status"] != want:
            errors.append(f"PATCH with {what} answered {entry['status']}, want {want}")
    t = time.monotonic()
    async with http.patch(session_url, data=body, headers={**headers, **ctype, "If-Match": etag}) as resp:
        entry = {"what": f"{len(frag['candidates'])} candidates + end-of-candidates",
                 "status": resp.status, "millis": round((time.monotonic() - t) * 1000),
                 "etag": resp.headers.get("ETag"), "body": (await resp.text())[:200]}
    result["patches"] = [entry]
    result["trickled_candidates"] = len(frag["candidates"])
    result["patch_body"] = body
    print(f"PATCH {entry['what']} -> {entry['status']}", flush=True)
    if entry["status"] != 204:
        errors.append(f"PATCH with the candidates answered {entry['status']}, want 204: {entry['body']!r}")


async def publish_once(args: argparse.Namespace, http, index: int) -> dict:
    result: dict = {
        "client": "aiortc",
        "version": aiortc.__version__,
        "codec": args.codec,
        "trickle": args.trickle,
        "ok": False,
        "errors": [],
    }
    errors: list[str] = result["errors"]

    video = StripesTrack(args.width, args.height, args.fps)
    audio = SineTrack()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    vt = pc.addTransceiver(video, direction="sendonly")
    at = pc.addTransceiver(audio, direction="sendonly")
    vmime = {"h264": "video/H264", "vp8": "video/VP8"}[args.codec]
    vt.setCodecPreferences(codec_preferences("video", vmime))
    at.setCodecPreferences(codec_preferences("audio", "audio/opus"))
    result["ssrcs"] = {"video": getattr(vt.sender, "_ssrc", None),
                       "audio": getattr(at.sender, "_ssrc", None)}

    headers = {"Content-Type": "application/sdp"}
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    headers.update(auth)
    session_url = None
    try:
        # aiortc finishes ICE gathering inside setLocalDescription.
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        frag = None
        if args.trickle:
            offer, frag = trickle_offer(offer)
            if not frag["candidates"] or not frag.get("ufrag") or frag["mid"] is None:
                errors.append(f"trickle: nothing to trickle from aiortc's offer: {frag}")
                return result
        result["offer_candidates"] = [
            l for l in offer.splitlines() if l.startswith("a=candidate:")
        ]
        offer_out = numbered(args.offer_out, index, args.sessions)
        if offer_out:
            with open(offer_out, "w") as f:
                f.write(offer)

        t0 = time.monotonic()
        async with http.post(args.url, data=offer, headers=headers) as resp:
            answer = await resp.text()
            result["post"] = {
                "status": resp.status,
                "content_type": resp.headers.get("Content-Type"),
                "location": resp.headers.get("Location"),
                "etag": resp.headers.get("ETag"),
                "link": resp.headers.getall("Link", []),
                "final_url": str(resp.url),
                "redirects": [
                    {"status": h.status, "location": h.headers.get("Location")}
                    for h in resp.history
                ],
                "millis": round((time.monotonic() - t0) * 1000),
            }
        post = result["post"]
        print(f"POST {args.url} -> {post['status']} ({post['millis']} ms)", flush=True)
        print(f"  Content-Type: {post['content_type']}", flush=True)
        print(f"  Location: {post['location']}", flush=True)
        print(f"  ETag: {post['etag']}", flush=True)
        answer_out = numbered(args.answer_out, index, args.sessions)
        if answer_out:
            with open(answer_out, "w") as f:
                f.write(answer)
        if post["status"] != 201:
            errors.append(f"POST status {post['status']}, want 201: {answer[:300]!r}")
            return result
        ctype = (post["content_type"] or "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            errors.append(f"answer Content-Type {post['content_type']!r}, want application/sdp")
        if not post["location"]:
            errors.append("201 without Location")
            return result
        # A relative Location resolves against the (final) POST URL (RFC 3986).
        session_url = urljoin(post["final_url"], post["location"])
        result["session_url"] = session_url

        if frag is not None:
            # Trickle: the candidates go to the session as soon as its URL and ETag are known.
            await trickle_patches(http, session_url, post["etag"] or "", frag, auth, args.token, result)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        t1 = time.monotonic()
        state = await wait_connected(pc, args.connect_timeout)
        result["connection_state"] = state
        result["connect_millis"] = round((time.monotonic() - t1) * 1000)
        result["connected_at"] = time.time()
        print(f"connectionState {state} after {result['connect_millis']} ms", flush=True)
        if state != "connected":
            errors.append(f"ICE/DTLS did not connect within {args.connect_timeout}s: {state}")
        else:
            # The publishing period itself, not a synchronisation: media flows meanwhile,
            # unless the connection drops.
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                if pc.connectionState != "connected":
                    errors.append(f"connection dropped to {pc.connectionState} while publishing")
                    break
                await asyncio.sleep(min(0.25, max(0.0, end - time.monotonic())))
            result["stats"] = await outbound_stats(pc)
        result["frames_sent"] = {"video": video.frames, "audio": audio.frames}
        print(f"sent {video.frames} video frames, {audio.frames} audio frames", flush=True)

        result["deleted_at"] = time.time()
        async with http.delete(session_url, headers=auth) as resp:
            result["delete"] = {"status": resp.status, "body": (await resp.text())[:300]}
        print(f"DELETE {session_url} -> {result['delete']['status']}", flush=True)
        if result["delete"]["status"] != 200:
            errors.append(f"DELETE status {result['delete']['status']}, want 200")
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        errors.append(f"HTTP error: {e!r}")
    finally:
        video.stop()
        audio.stop()
        await pc.close()
    result["ok"] = not errors
    return result


async def publish(args: argparse.Namespace) -> dict:
    http_timeout = aiohttp.ClientTimeout(total=args.http_timeout)
    sessions = []
    async with aiohttp.ClientSession(timeout=http_timeout) as http:
        for index in range(1, args.sessions + 1):
            if args.sessions > 1:
                print(f"session {index} of {args.sessions}", flush=True)
            r = await publish_once(args, http, index)
            sessions.append(r)
            if not r["ok"]:
                break
    if args.sessions == 1:
        return sessions[0]
    # Several sessions: the first one's fields on top (the shape run_interop.py reads),
    # every error, the frames of all, and each session under "sessions".
    result = dict(sessions[0])
    result["errors"] = [f"session {i}: {e}" for i, r in enumerate(sessions, 1) for e in r["errors"]]
    if len(sessions) < args.sessions:
        result["errors"].append(f"stopped after session {len(sessions)} of {args.sessions}")
    result["frames_sent"] = {k: sum((r.get("frames_sent") or {}).get(k, 0) for r in sessions)
                             for k in ("video", "audio")}
    result["sessions"] = sessions
    result["ok"] = not result["errors"]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip/cam1")
    p.add_argument("--codec", choices=["h264", "vp8"], default="h264")
    p.add_argument("--seconds", type=float, default=8.0, help="how long to publish once connected")
    p.add_argument("--token", help="bearer token (Authorization: Bearer ...)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--http-timeout", type=float, default=10.0)
    p.add_argument("--offer-out", help="write the SDP offer here")
    p.add_argument("--answer-out", help="write the SDP answer here")
    p.add_argument("--trickle", action="store_true",
                   help="POST the offer without candidates, PATCH them after the 201")
    p.add_argument("--sessions", type=int, default=1,
                   help="publish this many times in a row (new peer connection each time)")
    args = p.parse_args()
    result = asyncio.run(publish(args))
    for e in result["errors"]:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
