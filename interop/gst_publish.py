#!/usr/bin/python3
"""WHIP (RFC 9725) publisher built on GStreamer's webrtcbin, for whipgate's interop run.

Runs on the system python3 with Debian's GStreamer and gi bindings (Debian 12 has no
whipsink): videotestsrc (640x360 at 30 fps, a moving ball) encoded live with x264enc
(H264, packetization-mode 1) or vp8enc, and audiotestsrc (a 440 Hz sine) with opusenc.

Non-trickle: the offer is POSTed once webrtcbin has gathered every candidate. libnice
skips loopback addresses: 127.0.0.1 is added with the ICE agent's add-local-ip-address
signal (the only interface in the interop run's network namespace).

    gst_publish.py --url http://127.0.0.1:8080/whip/cam1 --codec h264 --seconds 8

Prints the WHIP exchange and, last, one line "RESULT {json}" in the shape run_interop.py
reads (as aiortc_publish.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 30
_KEEP: list = []

# x264enc threads=1: one slice per frame. With tune=zerolatency's sliced threads (two slices
# on two cores), FFmpeg 5.1 conceals half of every IDR frame (GStreamer -> FFmpeg directly, no
# whipgate in between, shows the same).
VIDEO = {
    "h264": ("x264enc tune=zerolatency speed-preset=ultrafast bitrate=1000 key-int-max=60 threads=1 "
             "! video/x-h264,profile=constrained-baseline "
             "! rtph264pay name=vpay config-interval=-1 aggregate-mode=zero-latency pt=102 "
             "! application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102"),
    "vp8": ("vp8enc deadline=1 cpu-used=8 target-bitrate=1000000 keyframe-max-dist=60 "
            "error-resilient=partitions "
            "! rtpvp8pay name=vpay pt=96 "
            "! application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96"),
}


def pipeline_text(codec: str, bundle_policy: str) -> str:
    return (
        f"webrtcbin name=wb bundle-policy={bundle_policy} "
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={WIDTH},height={HEIGHT},"
        f"framerate={FPS}/1 ! videoconvert ! queue ! {VIDEO[codec]} ! wb. "
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample "
        "! audio/x-raw,rate=48000,channels=1 ! opusenc frame-size=20 ! rtpopuspay name=apay pt=111 "
        "! application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111 ! wb."
    )


def promise_reply(emit) -> Gst.Structure | None:
    p = Gst.Promise.new()
    emit(p)
    if p.wait() != Gst.PromiseResult.REPLIED:
        raise RuntimeError("webrtcbin did not answer a promise")
    return p.get_reply()


def poll(cond, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def bus_errors(pipeline: Gst.Pipeline) -> list[str]:
    out = []
    bus = pipeline.get_bus()
    while True:
        msg = bus.pop_filtered(Gst.MessageType.ERROR)
        if msg is None:
            return out
        err, dbg = msg.parse_error()
        out.append(f"{msg.src.get_name()}: {err.message}")


def http(method: str, url: str, body: bytes | None, headers: dict, timeout: float = 10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode(errors="replace"), r.geturl()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace"), url


def publish(args: argparse.Namespace) -> dict:
    result: dict = {
        "client": "gstreamer",
        "version": Gst.version_string().split()[-1],
        "codec": args.codec,
        "trickle": False,
        "ok": False,
        "errors": [],
        "width": WIDTH,
        "height": HEIGHT,
    }
    errors = result["errors"]
    pipeline = Gst.parse_launch(pipeline_text(args.codec, args.bundle_policy))
    wb = pipeline.get_by_name("wb")
    counts = {"video": 0, "audio": 0}

    def counter(kind):
        def probe(pad, info):
            buf = info.get_buffer()
            # One encoded frame per buffer into the payloader (x264enc/vp8enc/opusenc).
            if buf is not None and not buf.has_flags(Gst.BufferFlags.HEADER):
                counts[kind] += 1
            return Gst.PadProbeReturn.OK
        return probe

    pipeline.get_by_name("vpay").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, counter("video"))
    pipeline.get_by_name("apay").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, counter("audio"))

    # GStreamer 1.22's default (rtcp-sync-send-time=true) sends Sender Reports whose RTP time
    # runs at twice the NTP rate here (seen on the wire: 9.8 s of RTP time in 4.9 s of NTP);
    # FFmpeg syncs on SRs (whipgate forwards them), and its timestamps then jump backwards.
    # Mapping SRs from capture time gives consistent ones.
    rtpbin = wb.get_by_name("rtpbin")
    if not args.sr_send_time and rtpbin is not None:
        rtpbin.set_property("rtcp-sync-send-time", False)
    # libnice leaves loopback out: add it. Keep the agent referenced while the pipeline runs.
    agent = wb.get_property("ice-agent")
    _KEEP.append(agent)  # until os._exit (see the end of this file)
    if not agent.emit("add-local-ip-address", "127.0.0.1"):
        errors.append("ICE agent refused add-local-ip-address 127.0.0.1")
    # (get-transceivers returns a GArray that gi cannot walk: ask by index.)
    n = 0
    while (t := wb.emit("get-transceiver", n)) is not None:
        t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        n += 1
    if n != 2:
        errors.append(f"webrtcbin has {n} transceivers, want 2")

    headers = {"Content-Type": "application/sdp"}
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    session_url = None
    try:
        pipeline.set_state(Gst.State.PLAYING)
        # The offer's codecs come from the caps on webrtcbin's sink pads: wait for them.
        pads = [p for p in wb.sinkpads]
        if not poll(lambda: all(p.get_current_caps() is not None for p in pads), 10):
            errors.append(f"webrtcbin's sink pads got no caps within 10 s: {bus_errors(pipeline)}")
            return result
        reply = promise_reply(lambda p: wb.emit("create-offer", None, p))
        offer = reply.get_value("offer")
        promise_reply(lambda p: wb.emit("set-local-description", offer, p))
        # Non-trickle: wait for gathering to finish, then send the complete offer.
        if not poll(lambda: wb.get_property("ice-gathering-state")
                    == GstWebRTC.WebRTCICEGatheringState.COMPLETE, 10):
            errors.append("ICE gathering did not complete within 10 s")
        local = wb.get_property("local-description").sdp.as_text()
        result["offer_candidates"] = [l for l in local.splitlines() if l.startswith("a=candidate:")]
        if args.offer_out:
            with open(args.offer_out, "w") as f:
                f.write(local)

        t0 = time.monotonic()
        status, h, answer, final = http("POST", args.url, local.encode(), {**headers, **auth})
        post = result["post"] = {
            "status": status, "content_type": h.get("Content-Type"), "location": h.get("Location"),
            "etag": h.get("ETag"), "link": h.get_all("Link") or [], "final_url": final,
            "millis": round((time.monotonic() - t0) * 1000),
        }
        print(f"POST {args.url} -> {status} ({post['millis']} ms, "
              f"{len(result['offer_candidates'])} candidates)", flush=True)
        print(f"  Location: {post['location']}\n  ETag: {post['etag']}", flush=True)
        if args.answer_out:
            with open(args.answer_out, "w") as f:
                f.write(answer)
        if status != 201:
            errors.append(f"POST status {status}, want 201: {answer[:300]!r}")
            return result
        if not post["location"]:
            errors.append("201 without Location")
            return result
        session_url = result["session_url"] = urljoin(final, post["location"])
        res, msg = GstSdp.SDPMessage.new_from_text(answer)
        if res != GstSdp.SDPResult.OK:
            errors.append(f"answer does not parse: {res}")
            return result
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        promise_reply(lambda p: wb.emit("set-remote-description", desc, p))

        t1 = time.monotonic()
        ok_states = (GstWebRTC.WebRTCPeerConnectionState.CONNECTED,)
        bad_states = (GstWebRTC.WebRTCPeerConnectionState.FAILED,
                      GstWebRTC.WebRTCPeerConnectionState.CLOSED)
        poll(lambda: wb.get_property("connection-state") in ok_states + bad_states, args.connect_timeout)
        state = wb.get_property("connection-state")
        result["connection_state"] = state.value_nick
        result["connect_millis"] = round((time.monotonic() - t1) * 1000)
        print(f"connection-state {state.value_nick} after {result['connect_millis']} ms "
              f"(ice {wb.get_property('ice-connection-state').value_nick})", flush=True)
        if state not in ok_states:
            errors.append(f"did not connect within {args.connect_timeout} s: {state.value_nick}; "
                          f"{bus_errors(pipeline)}")
        else:
            at_connect = dict(counts)
            # The publishing period itself: media flows, the connection is watched.
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                if wb.get_property("connection-state") not in ok_states:
                    errors.append(f"connection dropped to {wb.get_property('connection-state').value_nick}")
                    break
                errs = bus_errors(pipeline)
                if errs:
                    errors.append(f"pipeline error: {errs}")
                    break
                time.sleep(0.1)
            result["frames_sent"] = {k: counts[k] - at_connect[k] for k in counts}
            print(f"sent {result['frames_sent']['video']} video frames, "
                  f"{result['frames_sent']['audio']} audio frames", flush=True)

        status, _, body, _ = http("DELETE", session_url, None, auth, timeout=5)
        result["delete"] = {"status": status, "body": body[:300]}
        print(f"DELETE {session_url} -> {status}", flush=True)
        if status != 200:
            errors.append(f"DELETE status {status}, want 200")
    except (OSError, urllib.error.URLError) as e:
        errors.append(f"HTTP error: {e!r}")
    finally:
        pipeline.set_state(Gst.State.NULL)
    result["ok"] = not errors
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--codec", choices=sorted(VIDEO), default="h264")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--token")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--bundle-policy", default="max-bundle",
                   help="webrtcbin bundle-policy (RFC 9725 §4.4.1: max-bundle)")
    p.add_argument("--sr-send-time", action="store_true",
                   help="keep rtpbin's rtcp-sync-send-time=true (GStreamer's default; its SRs "
                        "are inconsistent here)")
    p.add_argument("--offer-out")
    p.add_argument("--answer-out")
    args = p.parse_args()
    Gst.init(None)
    try:
        result = publish(args)
    except Exception as e:  # report, never hang
        result = {"client": "gstreamer", "ok": False, "errors": [f"{type(e).__name__}: {e}"]}
    for e in result["errors"]:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # GStreamer 1.22's webrtcbin "ice-agent" getter hands out its agent without a reference of
    # its own, so a normal interpreter exit unrefs it twice (GStreamer-CRITICAL). The pipeline is
    # already stopped: leave without finalizers.
    os._exit(code)
