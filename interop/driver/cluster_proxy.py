"""The checks of the cluster rows in "proxy" mode: the publisher talks to node a only (full, so
it holds no session), and a carries the POST, the DELETE and (rows with `ice_restart`) the ICE
restart PATCH to node b.

What the publisher did comes from its RESULT (every request with its status and whether it
followed a redirect: browser_publish.mjs records the page's fetches, libdatachannel_publish.mjs
its own, ffmpeg_whip_publish.py what its HTTP relay saw; the ICE restart and the DELETE
without the token where the row has them; wall-clock times in ms); what b did comes from
GetIngest on b (sampled with time.time()), its metrics and the FFmpeg output."""

from __future__ import annotations

import re
import time
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .cluster import Cluster
    from .ffmpeg import FrameCrc
    from .row import Row

TRICKLE_ICE = "application/trickle-ice-sdpfrag"
GAUGE_ZERO_S = 5.0


def live_publishers(http: str) -> int | None:
    """whipgate_live_publishers on the node at `http` (host:port), None if unreadable."""
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{http}/metrics", timeout=2) as resp:
            text = resp.read().decode(errors="replace")
    except OSError:
        return None
    m = re.search(r"^whipgate_live_publishers (\d+)", text, re.M)
    return int(m.group(1)) if m else None


def host(url: str | None) -> str:
    return urlsplit(url or "").netloc


def port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def counters_between(samples: list[tuple], start: float, end: float) -> list[tuple]:
    """(time, session id, state, counters) sampled on b strictly between start and end."""
    return [s for s in samples if start < s[0] < end]


def grew(samples: list[tuple], field: str) -> int:
    """How much counter `field` grew from the first to the last sample (0 for fewer than 2)."""
    if len(samples) < 2:
        return 0
    return getattr(samples[-1][3], field) - getattr(samples[0][3], field)


def check(run: Row, cl: Cluster, v: FrameCrc) -> None:
    check, r = run.check, run.pub_result
    a, b = cl.ready_a["http"], cl.ready_b["http"]
    post = r.get("post") or {}
    session_url = r.get("session_url") or ""
    session_id = session_url.rstrip("/").rsplit("/", 1)[-1]

    # The POST: answered by a itself with b's answer; the publisher only ever talked to a.
    check("POST to a answered 201 by a (no redirect followed)",
          post.get("status") == 201 and post.get("redirected") is False
          and host(post.get("final_url")) == a and host(post.get("response_url")) == a,
          f"{post.get('status')} from {post.get('response_url')}, redirected {post.get('redirected')}")
    fetches = r.get("fetches") or []
    check("no request of the publisher saw a 307 or followed a redirect",
          bool(fetches) and all(f.get("status") != 307 and f.get("redirected") is False for f in fetches),
          ", ".join(f"{f.get('method')} {f.get('status')}" for f in fetches))
    check("every request of the publisher went to node a", all(host(f.get("url")) == a for f in fetches),
          f"{sorted({host(f.get('url')) for f in fetches})}, a is {a}")
    try:
        answer = (run.workdir / "answer.sdp").read_text()
    except OSError:
        answer = ""
    ports = sorted({int(p) for p in re.findall(r"^a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ", answer,
                                               re.M | re.I)})
    b_udp, a_udp = port(cl.ready_b["udp"]), port(cl.ready_a["udp"])
    check("the answer is b's: its UDP candidates name b's media port, not a's", ports == [b_udp],
          f"candidate ports {ports}; b {b_udp}, a {a_udp}")
    a_log = run.gw_err.read_text(errors="replace")
    b_log = (run.workdir / "whipgate-b.stderr").read_text(errors="replace")
    check("a handed the POST to b over the cluster's routed call (a's and b's logs)",
          re.search(r"publish handed to a node with room.*\bnode=b\b", a_log) is not None
          and "publish routed here by another node" in b_log)

    if run.spec.ice_restart:
        check_ice_restart(run, cl, v, session_id)
    if run.spec.unauthorized_delete:
        check_unauthorized_delete(run, cl, session_id)

    # The DELETE with the token (Stop) went to a and ended b's session.
    dels = [f for f in fetches if f.get("method") == "DELETE"]
    check("the publisher's last DELETE went to the session URL on a with the token: 200",
          bool(dels) and dels[-1].get("url") == session_url and dels[-1].get("authorization") is True
          and dels[-1].get("status") == 200, f"{dels[-1:]}")
    ga = [g for g in cl.gauges["a"] if g is not None]
    gb = [g for g in cl.gauges["b"] if g is not None]
    check("while live: b's whipgate_live_publishers 1, a's 0",
          bool(gb) and max(gb) == 1 and bool(ga) and max(ga) == 0,
          f"b {sorted(set(gb))}, a {sorted(set(ga))} over {len(gb)} samples")
    deadline = time.monotonic() + GAUGE_ZERO_S
    gauge = live_publishers(b)
    while gauge != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        gauge = live_publishers(b)
    check("after the DELETE through a: b's whipgate_live_publishers 0", gauge == 0, f"{gauge}")


def check_ice_restart(run: Row, cl: Cluster, v: FrameCrc, session_id: str) -> None:
    """The ICE restart: a PATCH to the session URL on a, carried to b."""
    check, r = run.check, run.pub_result
    post, session_url = r.get("post") or {}, r.get("session_url") or ""
    a = cl.ready_a["http"]
    ir = r.get("ice_restart") or {}
    patch, before, after = ir.get("patch") or {}, ir.get("before") or {}, ir.get("after") or {}
    req = patch.get("request") or {}
    check("ICE restart: PATCH to the session URL on a with If-Match: *, trickle-ice-sdpfrag, the token",
          bool(patch) and patch.get("url") == session_url and host(patch.get("url")) == a
          and req.get("if_match") == "*" and req.get("content_type") == TRICKLE_ICE
          and req.get("authorization") is True,
          f"{patch.get('url')} {req}")
    check("ICE restart: 200 trickle-ice-sdpfrag with a new ETag, no redirect",
          patch.get("status") == 200 and (patch.get("content_type") or "").startswith(TRICKLE_ICE)
          and bool(patch.get("etag")) and patch.get("etag") != post.get("etag")
          and patch.get("redirected") is False,
          f"{patch.get('status')} {patch.get('content_type')!r} ETag {patch.get('etag')!r} "
          f"(was {post.get('etag')!r}){'; ' + ir['error'] if ir.get('error') else ''}")
    check("ICE restart: new credentials on both sides (browser's offer, b's fragment)",
          bool(before.get("local_ufrag")) and after.get("local_ufrag") not in (None, before.get("local_ufrag"))
          and bool(before.get("remote_ufrag"))
          and after.get("remote_ufrag") not in (None, before.get("remote_ufrag")),
          f"browser {before.get('local_ufrag')} -> {after.get('local_ufrag')}, "
          f"gateway {before.get('remote_ufrag')} -> {after.get('remote_ufrag')}")
    check("ICE restart: connected again on the new credentials (the selected pair's local ufrag)",
          ir.get("connected_again_at") is not None and bool(after.get("local_ufrag"))
          and after.get("pair_local_ufrag") == after.get("local_ufrag")
          and after.get("pair_state") == "succeeded",
          f"after {ir.get('connected_again_millis')} ms; transport ufrag {after.get('transport_local_ufrag')}, "
          f"selected pair's {after.get('pair_local_ufrag')} ({after.get('pair_state')}, "
          f"{after.get('pair_responses')} responses), {after.get('connection')}")
    restarted = (ir.get("connected_again_at") or 0) / 1000
    stop = (r.get("stop_at") or 0) / 1000
    later = counters_between(cl.samples, restarted, stop) if restarted and stop else []
    same = bool(later) and all(s[1] == session_id and s[2] == run.pb.SESSION_STATE_CONNECTED for s in later)
    check("ICE restart: b's session went on (same id, CONNECTED) and its counters grew after it",
          same and len(later) >= 2 and grew(later, "video_packets") > 0 and grew(later, "audio_packets") > 0
          and grew(later, "packets_forwarded") > 0,
          f"{len(later)} samples on b; video +{grew(later, 'video_packets')}, "
          f"audio +{grew(later, 'audio_packets')}, forwarded +{grew(later, 'packets_forwarded')}")
    sent = sum((st or {}).get("bytesSent", 0) for st in ((r.get("stats") or {}).get(k) for k in ("video", "audio")))
    check("ICE restart: the browser's bytes sent kept growing after it",
          after.get("bytes_sent") is not None and sent > after.get("bytes_sent", 0),
          f"{after.get('bytes_sent')} -> {sent}")
    connected = (r.get("connected_at") or 0) / 1000
    span = (v.pts[-1] - v.pts[0]) * v.tb if len(v.pts) > 1 and v.tb else 0.0
    need = restarted - connected + 0.5 if restarted and connected else None
    check("FFmpeg decoded b's video past the ICE restart",
          need is not None and span >= need,
          f"decoded {span:.1f} s of video from connect on; restart done "
          f"{f'{need - 0.5:.1f} s in' if need is not None else 'never'}")
    run.details["ice_restart_ms"] = ir.get("connected_again_millis")


def check_unauthorized_delete(run: Row, cl: Cluster, session_id: str) -> None:
    """A DELETE without the token to the session URL on a: refused, the session lives on."""
    check, r = run.check, run.pub_result
    a = cl.ready_a["http"]
    stop = (r.get("stop_at") or 0) / 1000
    d = r.get("delete_without_token") or {}
    check("DELETE without the token on a: 401 with WWW-Authenticate: Bearer",
          d.get("status") == 401 and (d.get("www_authenticate") or "").lower().startswith("bearer")
          and host(d.get("url")) == a,
          f"{d.get('status')} {d.get('www_authenticate')!r} from {d.get('url')}")
    refused = (d.get("at") or 0) / 1000
    after_401 = counters_between(cl.samples, refused + 0.5, stop) if refused and stop else []
    check("after the 401 b's session went on (same id, CONNECTED, counters grew)",
          bool(after_401) and all(s[1] == session_id and s[2] == run.pb.SESSION_STATE_CONNECTED
                                  for s in after_401) and grew(after_401, "video_packets") > 0,
          f"{len(after_401)} samples on b; video +{grew(after_401, 'video_packets')}")
