#!/usr/bin/env python3
"""Independent-peer interop test for whipgate: real WebRTC stacks publish over WHIP, FFmpeg
decodes what whipgate forwards.

Rows (select with --rows; `all` is the default):
  aiortc-h264, aiortc-vp8        aiortc (Python), interop/aiortc_publish.py
  aiortc-h264-reconnect          aiortc publishes, DELETEs, and a new aiortc peer connection
                                 publishes to the same ingest: ONE FFmpeg decodes across the
                                 reconnect (a UDP tap between whipgate and FFmpeg checks the
                                 forwarded SSRC, sequence numbers and timestamps)
  aiortc-h264-307                cluster: a private redis-server and two whipgate nodes; the
                                 POST goes to the full node a (--max-publishers 0, with
                                 --cluster-redirect-publish), aiortc follows its 307 to the
                                 node with room (b), FFmpeg decodes b's media
  aiortc-h264-trickle,           aiortc, the offer POSTed without candidates, which follow
  aiortc-vp8-trickle             in a PATCH (trickle-ice-sdpfrag, If-Match: the ETag)
  chromium-h264, chromium-vp8    Debian Chromium on whipgate's /publish page (playwright-core)
  chromium-h264-lossy            the same through a lossy UDP relay (5 % random uplink loss,
                                 seed 25; interop/driver/lossy_row.py): FFmpeg's decode errors
                                 must not exceed the media packets left unrepaired at the
                                 consumer, and the consumer must see no false sequence holes
                                 beyond 0.1 % (issue 25's goal)
  chromium-h264-cluster          cluster, token: Chromium's page talks to the full node a only;
                                 a carries the POST to b and answers 201 with b's answer (its
                                 candidates name b's UDP port; no 307 anywhere), media flows to
                                 b and FFmpeg decodes b's stream; the page's Restart ICE PATCHes
                                 new credentials (If-Match: *, token) to the session URL on a and
                                 reconnects while b's counters keep growing; a DELETE without the
                                 token on a gets 401 and the session lives on; Stop's DELETE
                                 through a ends b's session (SessionEnded on b, its live gauge 0)
  chromium-vp8-simulcast         the same page with ?simulcast (rids q, h, f); the driver
                                 switches the forwarded layer live with SelectSimulcastLayer
  firefox-vp8, firefox-h264      Debian Firefox ESR on the same page (puppeteer-core, BiDi);
                                 H264 is "n/a" when Firefox has no H264 encoder (no OpenH264)
  wrtc-vp8                       libwebrtc outside a browser (@roamhq/wrtc), trickle ICE
  gstreamer-h264, gstreamer-vp8  GStreamer webrtcbin from system python3 (gi)
  ffmpeg-whip-h264               FFmpeg 9's own WHIP muxer (PyPI imageio-ffmpeg), token: its HTTP
                                 goes through a recording relay (interop/ffmpeg_whip_publish.py);
                                 its DELETE must get 200, its log no `Failed to` line but its
                                 own DELETE-response read (an FFmpeg 9.0 bug, noted)
  ffmpeg-whip-h264-cluster       the same through the full node a ("proxy" cluster mode, as
                                 chromium-h264-cluster without the ICE restart)
  libdatachannel-h264,           OBS Studio's whip-output.cpp rebuilt on libdatachannel
  libdatachannel-h264-nocands    (node-datachannel, interop/libdatachannel_publish.mjs), token:
                                 the offer POSTed once gathering is complete, or at once without
                                 candidates (OBS 30.2+); PLI ignored, keyframes every 2 s,
                                 frames before the tracks are open dropped, DELETE must get 200
  libdatachannel-h264-cluster    the same (no candidates) through the full node a ("proxy"),
                                 plus a DELETE without the token refused 401 on a
  libdatachannel-h264-307        the same (with candidates) to the full node a in "redirect"
                                 mode: the 307 is followed with the bearer token re-sent
(`h264` and `vp8` alone still mean the aiortc rows.)

Each row (interop/driver/row.py): whipgate on ephemeral loopback ports, RegisterIngest with
FFmpeg's RTP ports as targets, FFmpeg on the consumer SDP, the publisher for --seconds and
its DELETE; then the WHIP statuses and headers, the SDP answer, GetIngest while live,
SessionEnded, the frames FFmpeg decoded, a clean SIGTERM shutdown, no process left behind; the
gateway's connect timings (GetIngest's Session.timings while live: POST -> connected,
connected -> first keyframe forwarded) and the WARN lines of every gateway log (a failed
check unless --allow-gateway-warn; whipgate's advice on a token-less registration excepted).

Everything stays on loopback: when this process sees any network interface besides lo, it
re-runs itself inside a private network namespace (interop/driver/netns.py), unless
--allow-host-network is given.

Writes into --out-dir (default: a new temp dir): results/<row>.json per row, logs/<row>/,
and publish-page.png from the chromium-h264 row. It never writes into the work tree:
`scripts/update-docs DIR` promotes a green run's results, README table and screenshot.
Prints one summary line per row; exits non-zero when any row fails ("n/a" rows, with their
reason, are not failures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Children are started with a preexec_fn (fork): keep gRPC's fork handlers and their notes out.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from driver import ffmpeg, netns  # noqa: E402
from driver.control import load_stubs  # noqa: E402
from driver.procs import log  # noqa: E402
from driver.publishers import CLIENTS  # noqa: E402
from driver.results import row_result, summary_line  # noqa: E402
from driver.row import Row  # noqa: E402
from driver.spec import ROWS, select_rows  # noqa: E402


def missing_tools(args: argparse.Namespace, rows: list[str]) -> list[str]:
    needs = {ROWS[r].client for r in rows}
    missing = [m for c in sorted(needs) for m in CLIENTS[c].missing()]
    if not os.access(args.whipgate, os.X_OK):
        missing.append(f"a whipgate binary at {args.whipgate} (cargo build)")
    for tool in ("ffmpeg", "timeout"):
        if not shutil.which(tool):
            missing.append(f"{tool} (apt-get install ffmpeg coreutils)")
    if any(ROWS[r].cluster for r in rows) and not shutil.which("redis-server"):
        missing.append("redis-server (apt-get install redis-server)")
    return list(dict.fromkeys(missing))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--whipgate", default=str(HERE.parent / "target" / "debug" / "whipgate"))
    p.add_argument("--rows", default="all",
                   help=f"comma-separated, or all: {', '.join(ROWS)} (h264, vp8: the aiortc rows)")
    p.add_argument("--seconds", type=float, default=8.0,
                   help="publishing time per row (rows with their own: the reconnect row 5 s "
                        "per session, the simulcast and chromium-h264-cluster rows 12 s, the "
                        "ffmpeg-whip-h264-cluster row 6 s)")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--out-dir", help="results/, logs/ and publish-page.png go here "
                                     "(default: a new temp dir, kept)")
    p.add_argument("--allow-gateway-warn", action="store_true",
                   help="only list WARN lines of the gateway logs (default: any but whipgate's "
                        "advice on a token-less registration fails the row)")
    p.add_argument("--allow-host-network", action="store_true",
                   help="run even when interfaces besides lo are visible (debugging only)")
    args = p.parse_args()
    try:
        rows = select_rows(args.rows)
    except ValueError as e:
        p.error(str(e))
    args.whipgate = str(Path(args.whipgate).resolve())
    missing = missing_tools(args, rows)
    if missing:
        print("interop: missing " + "; ".join(missing), file=sys.stderr)
        return 2

    netns.ensure_private(args.allow_host_network, log)

    out = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="whipgate-interop-"))
    results_dir, log_dir = out / "results", out / "logs"
    results_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    pb, pbg = load_stubs(Path(tempfile.mkdtemp(prefix="whipgate-stubs-")))
    ffver = ffmpeg.version()
    needs = sorted({ROWS[r].client for r in rows})
    versions = ", ".join(f"{CLIENTS[c].name} {CLIENTS[c].version()}" for c in needs)
    log(f"whipgate {args.whipgate}; FFmpeg {ffver}; {versions}; rows {', '.join(rows)}; out {out}")

    results = []
    t0 = time.monotonic()
    for name in rows:
        row = Row(ROWS[name], args, pb, pbg, log_dir / name, out / "publish-page.png").run()
        result = row_result(row, ffver)
        results.append(result)
        (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")

    print()
    for r in results:
        print(summary_line(r))
    passed = sum(r["result"] == "pass" for r in results)
    skipped = sum(r["result"] == "n/a" for r in results)
    failed = len(results) - passed - skipped
    print(f"results in {results_dir}, logs in {log_dir}, {time.monotonic() - t0:.0f} s in all")
    print(f"interop: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
