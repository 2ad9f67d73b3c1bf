"""A row's result object (what interop/render_table.py reads) and the summary lines."""

from __future__ import annotations

import re
import time
from collections import Counter

from .procs import tail
from .publishers import CLIENTS
from .row import Row


def row_result(row: Row, ffver: str) -> dict:
    """The row as one JSON object; prints the failures and the logs' tails when any failed."""
    failed = row.check.failed()
    result = "fail" if failed or not row.check.items else ("n/a" if row.na else "pass")
    spec, client = row.spec, CLIENTS[row.spec.client]
    out = {
        "row": spec.name,
        "client": client.name,
        "version": client.version() or row.version or "unknown",
        "driver": row.driver,
        "codecs": spec.codecs,
        "scenario": spec.label,
        "trickle": row.trickle,
        "result": result,
        "reason": row.na,
        "frames": dict(row.frames),
        "frames_sent": row.sent,
        "resolution": row.resolution_text(),
        "resolutions_decoded": row.decoded_resolutions or None,
        "capture": row.pub_result.get("capture"),
        "consumer": f"FFmpeg {ffver}",
        "seconds": round(time.monotonic() - row.started, 1),
        "checks": len(row.check.items),
        "failures": [f"{n}: {d}" if d else n for n, _, d in failed],
        "notes": row.check.notes,
    }
    # The gateway's connect timings (GetIngest's Session.timings) of the row's first session;
    # None where the gateway has no such field.
    sessions = [s for s in (row.pub_result.get("sessions") or [row.pub_result])]
    ids = [((s.get("post") or {}).get("location") or "").rstrip("/").rsplit("/", 1)[-1] for s in sessions]
    timings = [row.timings.get(i) for i in ids if i]
    out["timings"] = timings[0] if timings else None
    if len(timings) > 1:
        out["timings_per_session"] = timings
    out["publisher_connect_ms"] = row.pub_result.get("connect_millis")
    out["gateway_warn_lines"] = len(row.gateway_warns)
    out["gateway_warns"] = [f"{n}x {w}" for w, n in Counter(
        re.sub(r"^\S+\s+WARN\s+", "", w.split(": ", 1)[1]) for w in row.gateway_warns).most_common(10)]
    if row.details:
        out["details"] = row.details
    if failed:
        print(f"\n---- {spec.name}: {len(failed)} failed check(s)", flush=True)
        for n, _, d in failed:
            print(f"  FAIL {n}" + (f": {d}" if d else ""))
        for title, path, n in (("whipgate stderr", row.gw_err, 60), ("ffmpeg stderr", row.ff_err, 30),
                               ("publisher stdout", row.pub_out, 20), ("publisher stderr", row.pub_err, 30)):
            print(f"---- {title} (last {n} lines of {path})\n{tail(path, n)}", flush=True)
    return out


def summary_line(r: dict) -> str:
    f = r["frames"]
    extra = f"  ({r['reason']})" if r["reason"] else ""
    t = r.get("timings") or {}
    timing = (f"connect={t.get('connect_ms')}ms keyframe={t.get('first_keyframe_ms')}ms" if t
              else "connect=- keyframe=-")
    return (f"{r['row']:<22} {r['client']} {r['version']}  {r['codecs']:<10} "
            f"trickle={'yes' if r['trickle'] else 'no':<3} {r['result'].upper():<4}  "
            f"video={f['video']} audio={f['audio']} res={r['resolution']}  {timing} "
            f"warn={r.get('gateway_warn_lines', 0)}  "
            f"({r['checks'] - len(r['failures'])}/{r['checks']} checks, {r['seconds']} s){extra}")
