#!/usr/bin/env python3
"""Independent-peer interop test for whipgate: real WebRTC stacks publish over
WHIP, FFmpeg decodes what whipgate forwards.

Rows (select with --rows; `all` is the default):
  aiortc-h264, aiortc-vp8        aiortc (Python), interop/aiortc_publish.py
  aiortc-h264-reconnect          aiortc publishes, DELETEs, and a new aiortc peer connection
                                 publishes to the same ingest: ONE FFmpeg decodes across the
                                 reconnect (a UDP tap between whipgate and FFmpeg checks the
                                 forwarded SSRC, sequence numbers and timestamps)
  aiortc-h264-trickle,           aiortc, the offer POSTed without candidates, which follow
  aiortc-vp8-trickle             in a PATCH (trickle-ice-sdpfrag, If-Match: the ETag)
  chromium-h264, chromium-vp8    Debian Chromium on whipgate's /publish page (playwright-core)
  chromium-vp8-simulcast         the same page with ?simulcast (rids q, h, f); the driver
                                 switches the forwarded layer live with SelectSimulcastLayer
  firefox-vp8, firefox-h264      Debian Firefox ESR on the same page (puppeteer-core, BiDi);
                                 H264 is "n/a" when Firefox has no H264 encoder (no OpenH264)
  wrtc-vp8                       libwebrtc outside a browser (@roamhq/wrtc), trickle ICE
  gstreamer-h264, gstreamer-vp8  GStreamer webrtcbin from system python3 (gi)
(`h264` and `vp8` alone still mean the aiortc rows.)

For each row:
  1. start whipgate on ephemeral loopback ports and read its ready line;
  2. over gRPC: watch events, RegisterIngest with FFmpeg's RTP ports as targets;
  3. start FFmpeg on the ingest's consumer SDP (before any media flows);
  4. publish for --seconds, then DELETE the session (a browser: its Stop button);
  5. assert: WHIP statuses and headers, the SDP answer (ICE-lite, whipgate's
     UDP port, recvonly, the codec asked for), the live session in GetIngest,
     a SessionEnded event after DELETE, frames FFmpeg decoded (video and
     audio > 0, video at the resolution the publisher sent), a clean SIGTERM
     shutdown, no publisher process left behind.

Everything must stay on loopback: when this process sees any network
interface besides lo, it re-runs itself inside a private network namespace
(`unshare --net`, root), unless --allow-host-network is given.

Writes interop/results/<row>.json per row (interop/render_table.py turns them
into the README's table) and prints one summary line per row; exits non-zero
when any row fails ("n/a" rows, with their reason, are not failures).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit

# Children are started with a preexec_fn (fork): keep gRPC's fork handlers and their notes out.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NODE_DIR = HERE / "node_modules"

# One row per publisher and codec. `size`: the video resolution the publisher sends when it
# is fixed; None: what the publisher reports it sent (a browser's camera and encoder decide).
# Rows with a token register the ingest with it: the publisher must send Authorization.
# `scenario`: what the row does beyond one plain publish (shown in the table); `seconds`: its
# own publishing time (per session) instead of --seconds.
TOKEN = "interop-secret-token"
ROWS = {
    "aiortc-h264": {"client": "aiortc", "codec": "h264", "token": None, "size": (640, 360)},
    "aiortc-vp8": {"client": "aiortc", "codec": "vp8", "token": TOKEN, "size": (640, 360)},
    "aiortc-h264-reconnect": {"client": "aiortc", "codec": "h264", "token": None,
                              "size": (640, 360), "sessions": 2, "seconds": 5.0,
                              "scenario": "reconnect, one FFmpeg"},
    "aiortc-h264-trickle": {"client": "aiortc", "codec": "h264", "token": None,
                            "size": (640, 360), "trickle": True},
    "aiortc-vp8-trickle": {"client": "aiortc", "codec": "vp8", "token": TOKEN,
                           "size": (640, 360), "trickle": True},
    "chromium-h264": {"client": "chromium", "codec": "h264", "token": None, "size": None,
                      "screenshot": True},
    "chromium-vp8": {"client": "chromium", "codec": "vp8", "token": TOKEN, "size": None},
    "chromium-vp8-simulcast": {"client": "chromium", "codec": "vp8", "token": None, "size": None,
                               "simulcast": ["q", "h", "f"], "select": "q", "seconds": 12.0,
                               "scenario": "simulcast"},
    "firefox-vp8": {"client": "firefox", "codec": "vp8", "token": None, "size": None},
    "firefox-h264": {"client": "firefox", "codec": "h264", "token": None, "size": None,
                     "na_ok": True},
    "wrtc-vp8": {"client": "wrtc", "codec": "vp8", "token": TOKEN, "size": (640, 360)},
    "gstreamer-h264": {"client": "gstreamer", "codec": "h264", "token": None, "size": (640, 360)},
    "gstreamer-vp8": {"client": "gstreamer", "codec": "vp8", "token": TOKEN, "size": (640, 360)},
}
ALIASES = {"h264": "aiortc-h264", "vp8": "aiortc-vp8"}
for _spec in ROWS.values():
    _spec["encoding"] = _spec["codec"].upper()
    _spec["codecs"] = f"{_spec['encoding']}+Opus"
SCREENSHOT = REPO / "docs" / "publish-page.png"
AIORTC_PUBLISHER = HERE / "aiortc_publish.py"
BROWSER_PUBLISHER = HERE / "browser_publish.mjs"
WRTC_PUBLISHER = HERE / "wrtc_publish.mjs"
GST_PUBLISHER = HERE / "gst_publish.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's gi bindings are Debian's, not the venv's
UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def log(msg: str) -> None:
    print(f"[interop {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- network namespace


def non_loopback_interfaces() -> list[str]:
    # /proc/net/dev follows this process's network namespace (/sys/class/net may not).
    try:
        with open("/proc/net/dev") as f:
            names = [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]
    except OSError:
        return []
    return sorted(n for n in names if n and n != "lo")


def ensure_private_netns(args: argparse.Namespace) -> None:
    others = non_loopback_interfaces()
    if not others or args.allow_host_network:
        return
    if os.environ.get("WHIPGATE_INTEROP_IN_NETNS"):
        sys.exit(f"still see interfaces {others} inside the namespace; refusing to run")
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        sys.exit(
            f"interfaces {others} besides lo are visible; run this inside a private network "
            "namespace (as root: unshare --net -- sh -c 'ip link set lo up && exec ...'), "
            "or pass --allow-host-network"
        )
    log(f"interfaces {others} besides lo: re-running inside a private network namespace")
    env = dict(os.environ, WHIPGATE_INTEROP_IN_NETNS="1")
    cmd = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, *sys.argv]
    os.execvpe("unshare", cmd, env)


# ---------------------------------------------------------------- gRPC stubs


def load_stubs(tmp: Path):
    """Generates whipgate.v1 Python stubs from proto/ into tmp and imports them."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    proto_dir = REPO / "proto"
    out = tmp / "stubs"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
         f"--python_out={out}", f"--grpc_python_out={out}",
         str(proto_dir / "whipgate" / "v1" / "control.proto")],
        check=True, timeout=60,
    )
    sys.path.insert(0, str(out))
    pb = importlib.import_module("whipgate.v1.control_pb2")
    pbg = importlib.import_module("whipgate.v1.control_pb2_grpc")
    return pb, pbg


# ---------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the driver dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Procs:
    """Child processes, each in its own process group, killed by id in cleanup()
    (and by the kernel if the driver itself is killed)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen]] = []
        self.markers: list[str] = []

    def start(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent, **kw)
        self.items.append((name, p))
        return p

    @staticmethod
    def signal_group(p: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(p.pid, sig)  # the group we created for it: its pid is the pgid
        except ProcessLookupError:
            pass

    def watch_dir(self, marker: str) -> None:
        """Processes whose command line names `marker` (a browser's fresh profile dir) are
        killed in cleanup(), with their process groups: browsers are started detached by
        their automation libraries, so they are not in their driver's group."""
        self.markers.append(marker)

    def leftovers(self) -> list[int]:
        """Pids of running processes whose command line contains a watched marker."""
        found = []
        if not self.markers:
            return found
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(m in cmd for m in self.markers):
                found.append(int(d))
        return found

    def kill_leftovers(self) -> list[int]:
        pids = self.leftovers()
        own = os.getpgrp()
        for pid in pids:
            try:
                pgid = os.getpgid(pid)
                if pgid != own:
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def cleanup(self) -> None:
        pids = self.kill_leftovers()
        if pids:
            log(f"killed leftover browser processes {pids}")
        for name, p in self.items:
            if p.poll() is None:
                log(f"killing {name} (pid {p.pid})")
                self.signal_group(p, signal.SIGKILL)
            else:
                # Its children (ffmpeg under timeout) may outlive it.
                self.signal_group(p, signal.SIGKILL)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) did not die after SIGKILL")


def wait_exit(p: subprocess.Popen, timeout: float) -> int | None:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def read_ready_line(p: subprocess.Popen, timeout: float) -> dict:
    """Reads whipgate's one JSON ready line from its stdout, with a deadline."""
    box: dict = {}

    def reader() -> None:
        try:
            box["line"] = p.stdout.readline()
        except Exception as e:  # pragma: no cover
            box["error"] = e

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise RuntimeError(f"whipgate printed no ready line within {timeout}s")
    line = box.get("line", b"").decode(errors="replace").strip()
    if not line:
        raise RuntimeError(f"whipgate closed stdout without a ready line (exit {p.poll()})")
    ready = json.loads(line)
    for key in ("http", "grpc", "udp"):
        if key not in ready:
            raise RuntimeError(f"ready line lacks {key!r}: {line}")
    # Drain the rest of stdout so whipgate never blocks on a full pipe.
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    return ready


def post_without_token(url: str) -> tuple[int, str]:
    """POSTs a (never used) offer with no Authorization: (status, WWW-Authenticate)."""
    import urllib.error
    import urllib.request

    body = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/sdp"})
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("WWW-Authenticate", "")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no file)"
    return "\n".join(text[-lines:])


# ---------------------------------------------------------------- ports


def free_even_ports(n: int) -> list[int]:
    """n even UDP ports on 127.0.0.1 whose port+1 is free too (RTP, RTCP)."""
    held: list[socket.socket] = []
    found: list[int] = []
    try:
        for _ in range(500):
            if len(found) == n:
                break
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind(("127.0.0.1", 0))
            held.append(a)
            port = a.getsockname()[1]
            if port % 2 or port >= 65534:
                continue
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                b.close()
                continue
            held.append(b)
            found.append(port)
    finally:
        for s in held:
            s.close()
    if len(found) < n:
        raise RuntimeError("could not find free even UDP ports")
    return found


def udp_bound_ports() -> set[int]:
    ports = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    local = line.split()[1]
                    ports.add(int(local.rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


# ---------------------------------------------------------------- events


class EventWatcher:
    """Consumes WatchEvents for one ingest in a thread."""

    def __init__(self, stub, pb, ingest_id: str) -> None:
        self.pb = pb
        self.events: list = []
        self.error: Exception | None = None
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.call = stub.WatchEvents(pb.WatchEventsRequest(ingest_ids=[ingest_id]), timeout=600)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import grpc

        try:
            self.call.initial_metadata()
            self.subscribed.set()
            for ev in self.call:
                with self.cond:
                    self.events.append(ev)
                    self.cond.notify_all()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e
        finally:
            with self.cond:
                self.cond.notify_all()

    def wait_for(self, pred, timeout: float):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    return None
                self.cond.wait(left)

    def kinds(self) -> list[str]:
        with self.cond:
            return [ev.WhichOneof("payload") or "?" for ev in self.events]

    def snapshot(self) -> list:
        with self.cond:
            return list(self.events)

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)


# ---------------------------------------------------------------- FFmpeg


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30).stdout
    m = re.match(r"ffmpeg version (\S+)", out)
    return m.group(1) if m else "unknown"


def ffmpeg_duration(seconds: float) -> float:
    """Seconds of media FFmpeg keeps: less than is published, so that it ends by itself."""
    return max(1.0, round(seconds - 2.5, 1))


def parse_framecrc(path: Path) -> dict:
    """Counts the frame lines of a framecrc file and reads its header. A frame line is
    `stream, dts, pts, duration, size, crc`; `pts` lists every frame's, `tb` is their
    time base in seconds per tick, `frame_sizes` every frame's size in bytes, in order."""
    info: dict = {"frames": 0, "sizes": set(), "crcs": set(), "dimensions": None, "size_runs": [],
                  "pts": [], "tb": None, "frame_sizes": []}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.match(r"#dimensions \d+: (\d+)x(\d+)", line)
            if m:
                info["dimensions"] = (int(m.group(1)), int(m.group(2)))
            m = re.match(r"#tb \d+: (\d+)/(\d+)", line)
            if m:
                info["tb"] = int(m.group(1)) / int(m.group(2))
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 6:
            info["frames"] += 1
            info["sizes"].add(int(parts[4]))
            info["frame_sizes"].append(int(parts[4]))
            info["pts"].append(int(parts[2]))
            if not info["size_runs"] or info["size_runs"][-1] != int(parts[4]):
                info["size_runs"].append(int(parts[4]))  # frame sizes, in order, runs collapsed
            info["crcs"].add(parts[5])
    return info


def split_at_largest_gap(pts: list[int], tb: float) -> tuple[int, float]:
    """Index of the first frame after the largest step between consecutive timestamps, and
    that step in seconds ((len, 0.0) for fewer than two frames)."""
    if len(pts) < 2 or not tb:
        return len(pts), 0.0
    i = max(range(1, len(pts)), key=lambda k: pts[k] - pts[k - 1])
    return i, (pts[i] - pts[i - 1]) * tb


# ---------------------------------------------------------------- UDP tap


class RtpTap:
    """A transparent UDP relay between whipgate and FFmpeg: per kind an RTP port and its RTCP
    port (+1), whipgate's datagrams go on to FFmpeg's ports unchanged, FFmpeg's (receiver
    reports) back to whipgate. Every RTP header from whipgate is recorded: (wall time, SSRC,
    sequence number, timestamp, marker), and the SSRCs of its RTCP sender reports. A thread in
    this process; close() stops it and closes its sockets."""

    def __init__(self, ports: dict[str, tuple[int, int]]) -> None:  # kind -> (listen, FFmpeg)
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.rtp: dict[str, list[tuple[float, int, int, int, bool]]] = {k: [] for k in ports}
        self.sr_ssrcs: dict[str, set[int]] = {k: set() for k in ports}
        self.whipgate: dict[int, tuple] = {}  # socket fd -> whipgate's address, for replies
        self.lock = threading.Lock()
        try:
            for kind, (listen, target) in ports.items():
                for off in (0, 1):
                    sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self.socks.append(sk)
                    sk.bind(("127.0.0.1", listen + off))
                    sk.setblocking(False)
                    self.sel.register(sk, selectors.EVENT_READ, (kind, off == 1, ("127.0.0.1", target + off)))
        except OSError:
            self.close()
            raise
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.1):
                sk, (kind, rtcp, target) = key.fileobj, key.data
                try:
                    data, src = sk.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                now = time.time()
                try:
                    if src == target:  # FFmpeg's receiver report: back to whipgate
                        back = self.whipgate.get(sk.fileno())
                        if back:
                            sk.sendto(data, back)
                        continue
                    self.whipgate[sk.fileno()] = src
                    sk.sendto(data, target)
                except OSError:
                    continue
                if len(data) < 12 or data[0] >> 6 != 2:
                    continue
                with self.lock:
                    if rtcp:
                        if data[1] == 200:  # sender report
                            self.sr_ssrcs[kind].add(struct.unpack_from(">I", data, 4)[0])
                    else:
                        seq, ts, ssrc = struct.unpack_from(">HII", data, 2)
                        self.rtp[kind].append((now, ssrc, seq, ts, bool(data[1] & 0x80)))

    def packets(self, kind: str) -> list[tuple[float, int, int, int, bool]]:
        with self.lock:
            return list(self.rtp[kind])

    def close(self) -> None:
        if getattr(self, "stop", None) is not None:
            self.stop.set()
            self.thread.join(2)
        self.sel.close()
        for sk in self.socks:
            sk.close()


def ffmpeg_input_resolution(stderr_text: str) -> tuple[int, int] | None:
    for line in stderr_text.splitlines():
        if "Input #0" in line:
            continue
        m = re.search(r"Stream #0:\d+.*Video: .*?, (\d{2,5})x(\d{2,5})", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


# ---------------------------------------------------------------- one row


class Row:
    def __init__(self, name: str, args: argparse.Namespace, pb, pbg, workdir: Path, ffver: str):
        self.name, self.args, self.pb, self.pbg = name, args, pb, pbg
        self.spec = ROWS[name]
        self.workdir = workdir
        self.ffver = ffver
        self.checks: list[tuple[str, bool, str]] = []
        self.frames = {"video": 0, "audio": 0}
        self.sent = {}
        self.resolution = None
        self.expected_size: tuple[int, int] | None = self.spec["size"]
        self.version = None
        self.driver = None
        self.trickle = False
        self.na: str | None = None
        self.notes: list[str] = []
        self.pub_result: dict = {}
        self.decoded_resolutions: list[str] = []
        self.seconds = float(self.spec.get("seconds") or args.seconds)  # per session
        self.sessions = int(self.spec.get("sessions", 1))
        self.tap: RtpTap | None = None
        self.ff_exited_at: float | None = None  # monotonic time FFmpeg was first seen gone
        self.connected_at: dict[str, float] = {}  # session id -> first CONNECTED snapshot
        self.sim: dict = {}  # simulcast: the layer switch done while publishing
        self.details: dict = {}  # what the reconnect and simulcast rows measured

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, bool(ok), detail))
        log(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}")
        return bool(ok)

    def run(self) -> dict:
        import grpc

        pb = self.pb
        a = self.args
        procs = Procs()
        channel = None
        watcher = None
        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        gw_err = wd / "whipgate.stderr"
        ff_err = wd / "ffmpeg.stderr"
        pub_out, pub_err = wd / "publisher.stdout", wd / "publisher.stderr"
        ingest_id = f"interop-{self.name}-{os.getpid()}"
        log(f"row {self.name}: {self.spec['client']} {self.spec['codecs']} (logs in {wd})")
        self.started = time.monotonic()
        try:
            # 1. whipgate
            env = dict(os.environ)
            env.setdefault("RUST_LOG", "info")
            env.setdefault("NO_COLOR", "1")  # plain logs in files
            with open(gw_err, "wb") as err:
                gw = procs.start(
                    "whipgate",
                    [a.whipgate, "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                     "--udp-listen", "127.0.0.1:0"],
                    stdout=subprocess.PIPE, stderr=err, env=env,
                )
            ready = read_ready_line(gw, a.ready_timeout)
            log(f"  whipgate ready: {ready}")
            udp_port = int(ready["udp"].rsplit(":", 1)[1])

            # 2. gRPC: watch, register
            channel = grpc.insecure_channel(ready["grpc"])
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = self.pbg.IngestControlStub(channel)
            watcher = EventWatcher(stub, pb, ingest_id)
            if not watcher.subscribed.wait(5):
                log("  WatchEvents sent no headers within 5 s; going on (events may be missed)")
            if self.sessions > 1:
                # whipgate -> tap -> FFmpeg: the tap sees every RTP header FFmpeg gets.
                vport, aport, tvport, taport = free_even_ports(4)
                self.tap = RtpTap({"video": (tvport, vport), "audio": (taport, aport)})
                reg_v, reg_a = tvport, taport
            else:
                vport, aport = free_even_ports(2)
                reg_v, reg_a = vport, aport
            codec_enum = {"h264": pb.VIDEO_CODEC_H264, "vp8": pb.VIDEO_CODEC_VP8}[self.spec["codec"]]
            reg = stub.RegisterIngest(
                pb.RegisterIngestRequest(
                    ingest_id=ingest_id,
                    video_target=f"127.0.0.1:{reg_v}",
                    audio_target=f"127.0.0.1:{reg_a}",
                    video_codecs=[codec_enum],
                    bearer_token=self.spec["token"] or "",
                ),
                timeout=10,
            )
            sdp = reg.ingest.consumer_sdp
            self.check("RegisterIngest created", reg.created, f"video {reg_v}, audio {reg_a}")
            self.check("consumer SDP names the video port", f"m=video {reg_v} " in sdp,
                       _first(sdp, "m=video"))
            self.check("consumer SDP names the audio port", f"m=audio {reg_a} " in sdp,
                       _first(sdp, "m=audio"))
            if self.tap:
                (wd / "consumer.whipgate.sdp").write_text(sdp)
                sdp = sdp.replace(f"m=video {reg_v} ", f"m=video {vport} ").replace(
                    f"m=audio {reg_a} ", f"m=audio {aport} ")
                log(f"  tap: whipgate -> 127.0.0.1:{reg_v}/{reg_a} -> FFmpeg 127.0.0.1:{vport}/{aport}")
            (wd / "consumer.sdp").write_text(sdp)
            self.check(f"consumer SDP has {self.spec['encoding']}",
                       re.search(rf"a=rtpmap:\d+ {self.spec['encoding']}/90000", sdp, re.I) is not None)
            self.check("consumer SDP has opus",
                       re.search(r"a=rtpmap:\d+ opus/48000", sdp, re.I) is not None)
            ev = watcher.wait_for(lambda e: e.WhichOneof("payload") == "ingest_registered", 5)
            self.check("IngestRegistered event", ev is not None, f"events so far {watcher.kinds()}")

            # 3. FFmpeg, before any media flows
            # FFmpeg stops by itself after `dur` seconds of each stream (-t binds to one
            # output: repeat it), before the publisher's DELETE; timeout(1) bounds the rest.
            if self.sessions > 1:
                # ONE FFmpeg for every session: it must decode across the reconnects and end
                # by itself inside the last session (the reconnect gaps add to the media time).
                dur = round(self.sessions * self.seconds - 1.5, 1)
            else:
                dur = ffmpeg_duration(self.seconds)
            limit = self.sessions * self.seconds + 60
            # The reconnect row reads decoded timestamps as they are (in the input's time base,
            # no frame dropped or duplicated for a constant rate).
            raw_ts = ["-fps_mode", "passthrough", "-enc_time_base", "-1"] if self.sessions > 1 else []
            vcrc, acrc = wd / "video.framecrc", wd / "audio.framecrc"
            ff_cmd = [
                "timeout", "-s", "INT", "-k", "10", str(int(limit)),
                "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "info",
                "-protocol_whitelist", "file,udp,rtp",
                "-i", str(wd / "consumer.sdp"),
                # -autoscale 0: a resolution change reaches the output as it is (browsers
                # ramp their resolution with the bandwidth estimate), not scaled to the first.
                "-map", "0:v:0", "-t", str(dur), "-autoscale", "0", *raw_ts, "-flush_packets", "1",
                "-f", "framecrc", str(vcrc),
                "-map", "0:a:0", "-t", str(dur), "-flush_packets", "1", "-f", "framecrc", str(acrc),
            ]
            with open(ff_err, "wb") as err:
                ff = procs.start("ffmpeg", ff_cmd, stdout=subprocess.DEVNULL, stderr=err)
            want = {vport, vport + 1, aport, aport + 1}
            deadline = time.monotonic() + 15
            while not want <= udp_bound_ports():
                if ff.poll() is not None:
                    raise RuntimeError(f"ffmpeg exited early ({ff.returncode}):\n{tail(ff_err)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ffmpeg did not bind {sorted(want)} within 15 s:\n{tail(ff_err)}")
                time.sleep(0.05)
            log("  ffmpeg listening")

            # 4. publish (first, without the token it needs: refused)
            url = f"http://{ready['http']}/whip/{ingest_id}"
            if self.spec["token"]:
                status, www = post_without_token(url)
                self.check("POST without the bearer token: 401", status == 401, f"{status}")
                self.check("401 carries WWW-Authenticate: Bearer (RFC 6750)",
                           www.lower().startswith("bearer"), repr(www))
            self.t_publish = time.time() - 1
            pub_cmd = self.publisher_cmd(ready["http"], ingest_id, procs)
            log(f"  publisher: {' '.join(pub_cmd)}")
            with open(pub_out, "wb") as out, open(pub_err, "wb") as err:
                pub = procs.start("publisher", pub_cmd, stdout=out, stderr=err,
                                  env=self.publisher_env())
            snapshots = []
            deadline = time.monotonic() + self.sessions * self.seconds + 75
            while pub.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("publisher did not finish in time")
                try:
                    ing = stub.GetIngest(pb.GetIngestRequest(ingest_id=ingest_id), timeout=2).ingest
                    self.sim["ingest_layer"] = ing.simulcast_layer
                    if ing.HasField("session"):
                        snapshots.append(ing.session)
                        if ing.session.state == pb.SESSION_STATE_CONNECTED:
                            self.connected_at.setdefault(ing.session.session_id, time.monotonic())
                except grpc.RpcError as e:
                    log(f"  GetIngest failed: {e.code()} {e.details()}")
                if self.ff_exited_at is None and ff.poll() is not None:
                    self.ff_exited_at = time.monotonic()
                if self.spec.get("simulcast"):
                    self.switch_layer(stub, snapshots, vcrc, pub_out, ingest_id)
                time.sleep(0.25)
            result = None
            for line in pub_out.read_text(errors="replace").splitlines():
                if line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT "):])
            if result is None:
                raise RuntimeError(f"publisher printed no RESULT (exit {pub.returncode}):\n"
                                   f"{tail(pub_out)}\n{tail(pub_err)}")
            self.pub_result = result
            self.driver = result.get("driver")
            self.trickle = bool(result.get("trickle"))
            if result.get("version"):
                self.version = result["version"]
            self.sent = result.get("frames_sent", {})
            if procs.markers:
                left = procs.leftovers()
                self.check("no browser process left after the publisher exited", not left,
                           f"pids {left}")
            if result.get("na") and self.spec.get("na_ok"):
                # Not a failure: this publisher cannot do this codec here (said why).
                self.na = result["na"]
                log(f"  n/a: {self.na}")
                self.check("publisher said why the row is n/a", True, self.na)
                Procs.signal_group(ff, signal.SIGKILL)
                wait_exit(ff, 5)
                Procs.signal_group(gw, signal.SIGTERM)
                self.check("whipgate exits on SIGTERM within 10 s", wait_exit(gw, 10) is not None)
                return self.summary(gw_err, ff_err, pub_out, pub_err)
            if self.spec.get("screenshot"):
                self.check("screenshot of the publish page while connected",
                           SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 1000
                           and SCREENSHOT.stat().st_mtime >= self.t_publish, str(SCREENSHOT))
            sessions = result.get("sessions") or [result]
            session_ids = []
            for i, r in enumerate(sessions, 1):
                several = len(sessions) > 1
                self.check_whip(r, ingest_id, udp_port, wd / (f"answer-{i}.sdp" if several else "answer.sdp"),
                                f"session {i}: " if several else "")
                session_ids.append((r.get("post", {}).get("location") or "").rstrip("/").rsplit("/", 1)[-1])
            if self.spec["client"] in ("chromium", "firefox"):
                self.check_page(result)
            self.check("publisher exit 0", pub.returncode == 0,
                       "; ".join(result.get("errors", [])) or f"exit {pub.returncode}")
            if len(sessions) != self.sessions:
                self.check(f"publisher ran {self.sessions} sessions", False, f"{len(sessions)}")
            if len(session_ids) > 1:
                self.check("each session has its own id", len(set(session_ids)) == len(session_ids),
                           f"{session_ids}")

            # GetIngest while live
            connected = [s for s in snapshots if s.state == pb.SESSION_STATE_CONNECTED]
            self.check("GetIngest showed the live session", bool(snapshots),
                       f"{len(snapshots)} snapshots")
            self.check("GetIngest session_id = Location's id",
                       bool(snapshots) and all(s.session_id in session_ids for s in snapshots),
                       f"{sorted({s.session_id for s in snapshots})} vs {session_ids}")
            states = []
            for snap in snapshots:
                name = pb.SessionState.Name(snap.state).removeprefix("SESSION_STATE_")
                if not states or states[-1] != name:
                    states.append(name)
            self.check("GetIngest state CONNECTED", bool(connected), " -> ".join(states))
            if len(session_ids) > 1:
                seen = [sid for sid in session_ids if sid in self.connected_at]
                self.check("GetIngest showed every session CONNECTED, in order",
                           seen == session_ids
                           and sorted(self.connected_at[x] for x in seen) == [self.connected_at[x] for x in seen],
                           f"{len(seen)} of {len(session_ids)}")
            if connected:
                c = connected[-1].counters
                self.check("GetIngest counters video_packets > 0", c.video_packets > 0,
                           f"video {c.video_packets}, audio {c.audio_packets}, "
                           f"forwarded {c.packets_forwarded}, plis {c.plis_sent}")
                self.check("GetIngest counters audio_packets > 0", c.audio_packets > 0)

            # 5. session end
            is_end = lambda e: e.WhichOneof("payload") == "session_ended"  # noqa: E731
            watcher.wait_for(lambda e: is_end(e) and e.session_id == session_ids[-1], 10)
            ended = [e for e in watcher.snapshot() if is_end(e)]
            self.check("SessionEnded event after DELETE" + (" (each session)" if len(session_ids) > 1 else ""),
                       sorted(e.session_id for e in ended) == sorted(session_ids),
                       f"ended {[e.session_id for e in ended]}, events {watcher.kinds()}"
                       + (f", watch error {watcher.error}" if watcher.error else ""))
            if ended:
                self.check("SessionEnded session_id = Location's id",
                           all(e.session_id in session_ids for e in ended),
                           f"{[e.session_id for e in ended]!r}")
                self.check("SessionEnded reason PUBLISHER_DELETE",
                           all(e.session_ended.reason == pb.END_REASON_PUBLISHER_DELETE for e in ended),
                           ", ".join(pb.EndReason.Name(e.session_ended.reason) for e in ended))
            gone = False
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                ing = stub.GetIngest(pb.GetIngestRequest(ingest_id=ingest_id), timeout=2).ingest
                if not ing.HasField("session"):
                    gone = True
                    break
                time.sleep(0.1)
            self.check("GetIngest has no session after DELETE", gone)

            # 6. FFmpeg ends by itself after -t of media; then read its outputs
            code = wait_exit(ff, 20)
            self.check(f"FFmpeg decoded {dur} s of each stream and exited by itself", code == 0,
                       f"exit {code}" if code is not None else "still running 20 s after DELETE")
            if code is None:
                self.stop_ffmpeg(ff)
            v, au = parse_framecrc(vcrc), parse_framecrc(acrc)
            self.frames = {"video": v["frames"], "audio": au["frames"]}
            ff_text = ff_err.read_text(errors="replace")
            self.resolution = v["dimensions"] or ffmpeg_input_resolution(ff_text)
            res = f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else None
            sent_v, sent_a = self.sent.get("video", 0), self.sent.get("audio", 0)
            self.check("FFmpeg decoded video frames > 0", v["frames"] > 0,
                       f"{v['frames']} decoded, {sent_v} sent")
            self.check("FFmpeg decoded audio frames > 0", au["frames"] > 0,
                       f"{au['frames']} decoded, {sent_a} sent")
            if self.spec["size"]:
                want = f"{self.expected_size[0]}x{self.expected_size[1]}"
                self.check(f"decoded video is {want} (what the publisher sent)", res == want,
                           f"{res}, input stream says {ffmpeg_input_resolution(ff_text)}")
                self.check("every decoded video frame has the same size",
                           len(v["sizes"]) <= 1, f"sizes {sorted(v['sizes'])}")
            elif self.spec.get("simulcast"):
                self.check_simulcast(v, watcher, snapshots)
            else:
                self.check_browser_resolution(v)
            corrupt = [l for l in ff_text.splitlines()
                       if "corrupt decoded frame" in l or "concealing" in l]
            self.check("FFmpeg decoded no corrupt (concealed) video frame", not corrupt,
                       f"{len(corrupt)} lines, first: {corrupt[0].strip()}" if corrupt else "")
            self.check("decoded video frames differ (the picture moves)", len(v["crcs"]) > 1,
                       f"{len(v['crcs'])} distinct of {v['frames']}")
            if len(sessions) > 1:
                self.check_reconnect(sessions, session_ids, v, au, dur, ff_text, watcher)
            else:
                # At most `dur` of the seconds published were decoded (at the rate sent).
                exp_v = min(sent_v, int(sent_v * dur / self.seconds))
                exp_a = min(sent_a, int(sent_a * dur / self.seconds))
                self.check("FFmpeg decoded >= half the video frames expected",
                           v["frames"] * 2 >= exp_v, f"{v['frames']} of {exp_v}")
                self.check("FFmpeg decoded >= half the audio frames expected",
                           au["frames"] * 2 >= exp_a, f"{au['frames']} of {exp_a}")

            # 7. graceful shutdown
            channel.close()
            channel = None
            watcher.close()
            watcher = None
            Procs.signal_group(gw, signal.SIGTERM)
            code = wait_exit(gw, 10)
            self.check("whipgate exits on SIGTERM within 10 s", code is not None, f"exit {code}")
        except Exception as e:
            self.check("row ran to the end", False, f"{type(e).__name__}: {e}")
            traceback.print_exc()
        finally:
            if watcher is not None:
                watcher.close()
            if channel is not None:
                channel.close()
            procs.cleanup()
            if self.tap is not None:
                self.tap.close()
            for profile in procs.markers:  # browser profiles: tens of MB each, nothing to read
                shutil.rmtree(profile, ignore_errors=True)
        return self.summary(gw_err, ff_err, pub_out, pub_err)

    def publisher_cmd(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        spec, wd = self.spec, self.workdir
        client, codec, token = spec["client"], spec["codec"], spec["token"]
        url = f"http://{http}/whip/{ingest_id}"
        common = ["--seconds", str(self.seconds), "--answer-out", str(wd / "answer.sdp"),
                  "--offer-out", str(wd / "offer.sdp")]
        if client == "aiortc":
            extra = ["--trickle"] if spec.get("trickle") else []
            if self.sessions > 1:
                extra += ["--sessions", str(self.sessions)]
            return ["timeout", "-s", "TERM", "-k", "10", str(int(self.sessions * self.seconds + 60)),
                    sys.executable, str(AIORTC_PUBLISHER), "--url", url, "--codec", codec,
                    *common, *extra, *(["--token", token] if token else [])]
        if client in ("chromium", "firefox"):
            profile = Path(tempfile.mkdtemp(prefix=f"{client}-profile-", dir=wd))
            procs.watch_dir(str(profile))
            # The page takes the token from the fragment only (never sent to the server).
            page = f"http://{http}/publish/{ingest_id}?codec={codec}" + \
                ("&simulcast" if spec.get("simulcast") else "") + "&autostart" + \
                (f"#token={token}" if token else "")
            shot = ["--screenshot", str(SCREENSHOT)] if spec.get("screenshot") else []
            if shot:
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            return ["timeout", "-s", "TERM", "-k", "10", str(int(self.seconds + 70)),
                    "node", str(BROWSER_PUBLISHER), "--browser", client, "--url", page,
                    "--codec", codec, "--profile-dir", str(profile), *shot, *common]
        if client == "wrtc":
            return ["timeout", "-s", "TERM", "-k", "10", str(int(self.seconds + 60)),
                    "node", str(WRTC_PUBLISHER), "--url", url, *common,
                    *(["--token", token] if token else [])]
        if client == "gstreamer":
            return ["timeout", "-s", "TERM", "-k", "10", str(int(self.seconds + 60)),
                    SYSTEM_PYTHON, str(GST_PUBLISHER), "--url", url, "--codec", codec, *common,
                    *(["--token", token] if token else [])]
        raise ValueError(f"unknown client {client}")

    def publisher_env(self) -> dict:
        env = dict(os.environ)
        if self.spec["client"] in ("chromium", "firefox", "wrtc"):
            env["NODE_PATH"] = str(NODE_DIR)
            # Nothing is ever downloaded: the browsers are Debian's.
            env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
            env["PUPPETEER_SKIP_DOWNLOAD"] = "1"
        if self.spec["client"] == "firefox":
            env.setdefault("MOZ_HEADLESS", "1")
        if self.spec["client"] == "gstreamer":
            env.setdefault("GST_DEBUG", "2")
            env.pop("PYTHONPATH", None)
            env.pop("VIRTUAL_ENV", None)
        return env

    def check_browser_resolution(self, v: dict) -> None:
        """A browser's encoder follows its bandwidth estimate: it starts small and steps
        the resolution up. The publisher samples what it sends (getStats every 250 ms, and
        the page's window.whipgate.width/height); every size FFmpeg decoded must be one of
        those, and FFmpeg's last must be one the page showed."""
        r = self.pub_result
        timeline = [t["res"] for t in r.get("resolution_timeline") or []]
        page = list(r.get("resolutions_seen") or [])
        sent = list(dict.fromkeys(timeline + page))
        by_size = {}
        for res in sent:
            w, h = (int(x) for x in res.split("x"))
            by_size[w * h * 3 // 2] = res  # yuv420p frame bytes
        decoded = [by_size.get(size, f"? ({size} bytes)") for size in v["size_runs"]]
        self.decoded_resolutions = decoded
        if decoded:
            self.resolution = tuple(int(x) for x in decoded[-1].split("x")) if "?" not in decoded[-1] else None
        self.check("every decoded frame size is a resolution the browser sent",
                   bool(decoded) and all("?" not in d for d in decoded),
                   f"decoded {' -> '.join(decoded)}; sent {' -> '.join(timeline)}; "
                   f"page showed {', '.join(page)}; camera {r.get('capture')}")
        self.check("FFmpeg's last decoded resolution is one window.whipgate showed",
                   bool(decoded) and decoded[-1] in page, f"{decoded[-1:]} in {page}")
        if len(decoded) > 1:
            self.notes.append(f"resolution stepped {' -> '.join(decoded)} (bandwidth estimate ramp)")

    # ------------------------------------------------------------ simulcast

    @staticmethod
    def layer_samples(pub_out: Path) -> list[tuple[int, dict]]:
        """What the browser said each layer sent so far, one sample about every 250 ms: its
        "LAYERS {ms, layers: {rid: {res, bytes}}}" lines, as (ms, layers)."""
        out = []
        try:
            text = pub_out.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            if line.startswith("LAYERS "):
                try:
                    d = json.loads(line[len("LAYERS "):])
                    out.append((int(d["ms"]), d["layers"]))
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    @classmethod
    def layer_sizes(cls, pub_out: Path) -> dict[str, set[str]]:
        sizes: dict[str, set[str]] = {}
        for _, layers in cls.layer_samples(pub_out):
            for rid, l in layers.items():
                sizes.setdefault(rid, set()).add(l["res"])
        return sizes

    @staticmethod
    def layer_rates(samples: list[tuple[int, dict]], window_ms: int = 2000) -> dict[str, int]:
        """Each layer's bitrate (bit/s) over the last `window_ms` of the samples."""
        if len(samples) < 2:
            return {}
        last_ms, last = samples[-1]
        first_ms, first = next(((ms, l) for ms, l in samples if ms >= last_ms - window_ms), samples[0])
        if last_ms <= first_ms:
            return {}
        return {rid: int((l["bytes"] - (first.get(rid) or {}).get("bytes", 0)) * 8000 / (last_ms - first_ms))
                for rid, l in last.items()}

    @staticmethod
    def is_highest(rid: str, rates: dict[str, int]) -> bool:
        """Whether `rid` is the highest-bitrate layer, as whipgate ranks them: another layer
        takes over only with 1.2 times its bitrate (src/media/simulcast.rs, SWITCH_MARGIN)."""
        return bool(rates) and rid in rates and rates[rid] * 1.2 >= max(rates.values())

    def switch_layer(self, stub, snapshots: list, vcrc: Path, pub_out: Path, ingest_id: str) -> None:
        """Simulcast, called every poll while the browser publishes. Waits for whipgate's
        default choice to settle: forwarded_layer is the layer the browser sent the most bits
        on over the last 2 s, has been for 1 s, and FFmpeg decoded 30 frames (at most 8 s).
        Then SelectSimulcastLayer(spec["select"]), and notes when GetIngest's forwarded_layer
        and FFmpeg's decoded frame size follow."""
        import grpc

        sim, pb, rid = self.sim, self.pb, self.spec["select"]
        now = time.monotonic()
        snap = snapshots[-1] if snapshots else None
        fwd = snap.forwarded_layer if snap is not None and snap.state == pb.SESSION_STATE_CONNECTED else ""
        if fwd:
            hist = sim.setdefault("forwarded", [])
            if not hist or hist[-1][1] != fwd:
                hist.append((round(now - self.started, 2), fwd))
                sim["forwarded_since"] = now
            sim.setdefault("first_forwarded_at", now)
        phase = sim.setdefault("phase", "default")
        if phase == "default":
            if not fwd:
                return
            v = parse_framecrc(vcrc)
            rates = self.layer_rates(self.layer_samples(pub_out))
            highest = max(rates, key=rates.get) if rates else None
            waited = now - sim["first_forwarded_at"]
            settled = (self.is_highest(fwd, rates) and now - sim["forwarded_since"] >= 1.0
                       and waited >= 3.0 and v["frames"] >= 30)
            if not settled and waited < 8.0:
                return
            sim.update(phase="switching", default_layer=fwd, select_at=now, frames_before=v["frames"],
                       size_before=v["frame_sizes"][-1] if v["frame_sizes"] else None,
                       select_after=round(now - self.started, 2), highest=highest, rates=rates)
            try:
                resp = stub.SelectSimulcastLayer(
                    pb.SelectSimulcastLayerRequest(ingest_id=ingest_id, rid=rid), timeout=5)
                sim["session_live"] = resp.session_live
            except grpc.RpcError as e:
                sim["select_error"] = f"{e.code()} {e.details()}"
            log(f"  SelectSimulcastLayer({rid!r}) with {fwd!r} forwarded, {v['frames']} frames decoded: "
                f"{sim.get('select_error') or 'session_live=' + str(sim.get('session_live'))}")
        elif phase == "switching":
            if fwd == rid:
                sim.setdefault("forwarded_at", now)
            want = {_frame_bytes(res) for res in self.layer_sizes(pub_out).get(rid, ())}
            after = parse_framecrc(vcrc)["frame_sizes"][sim["frames_before"]:]
            if any(size in want for size in after):
                sim.setdefault("decoded_at", now)
            if "forwarded_at" in sim and "decoded_at" in sim:
                sim["phase"] = "done"
                log(f"  layer {rid!r}: forwarded after {sim['forwarded_at'] - sim['select_at']:.2f} s, "
                    f"decoded after {sim['decoded_at'] - sim['select_at']:.2f} s")
            elif now - sim["select_at"] > 8.0:
                sim["phase"] = "timeout"

    def check_simulcast(self, v: dict, watcher: "EventWatcher", snapshots: list) -> None:
        """What Chromium sent on each layer, what whipgate answered and forwarded, and the live
        switch to spec["select"]."""
        pb, sim, rid = self.pb, self.sim, self.spec["select"]
        layers = self.spec["simulcast"]
        r = self.pub_result
        stats = r.get("layer_stats") or {}
        sizes: dict[str, list[str]] = {x: [] for x in layers}
        for entry in r.get("layer_timeline") or []:
            for x, res in (entry.get("layers") or {}).items():
                if res not in sizes.setdefault(x, []):
                    sizes[x].append(res)
        sent = [x for x in layers if (stats.get(x) or {}).get("framesSent") and sizes.get(x)]
        what = "; ".join(f"{x}: {' -> '.join(sizes.get(x) or ['nothing'])}, "
                         f"{(stats.get(x) or {}).get('framesSent', 0)} frames, "
                         f"{(stats.get(x) or {}).get('bytesSent', 0)} bytes, "
                         f"limited by {(stats.get(x) or {}).get('qualityLimitationReason')}" for x in layers)
        self.details["simulcast"] = {
            "layers_sent": {x: sizes.get(x) for x in sent}, "layer_stats": stats,
            "forwarded": sim.get("forwarded"), "default_layer": sim.get("default_layer"),
            "rates_at_select": sim.get("rates"),
            "selected": rid, "select_after_s": sim.get("select_after"),
            "forwarded_after_s": round(sim["forwarded_at"] - sim["select_at"], 2) if "forwarded_at" in sim else None,
            "decoded_after_s": round(sim["decoded_at"] - sim["select_at"], 2) if "decoded_at" in sim else None,
        }
        wd = self.workdir
        offer = (wd / "offer.sdp").read_text() if (wd / "offer.sdp").is_file() else ""
        answer = (wd / "answer.sdp").read_text() if (wd / "answer.sdp").is_file() else ""
        want = ";".join(layers)
        self.check(f"offer: a=simulcast:send {want}", f"a=simulcast:send {want}" in offer.splitlines(),
                   _first(offer, "a=simulcast:"))
        self.check(f"answer: a=simulcast:recv {want}", f"a=simulcast:recv {want}" in answer.splitlines(),
                   _first(answer, "a=simulcast:"))
        self.check("answer: a=rid:<rid> recv for every layer",
                   all(f"a=rid:{x} recv" in answer.splitlines() for x in layers),
                   ", ".join(l for l in answer.splitlines() if l.startswith("a=rid:")))
        if sent == layers:
            self.check(f"Chromium sent all {len(layers)} layers", True, what)
        else:
            # The browser decides (bandwidth estimate, CPU): assert on what it did send.
            self.notes.append(f"Chromium sent only {sent} of {layers}: {what}")
            self.check("Chromium sent at least one layer", bool(sent), what)
        page = (r.get("page") or {}).get("layers") or {}
        # The page lists every configured layer; one the browser never sent shows 0x0.
        shown = [x for x, l in page.items() if l.get("width")]
        self.check("page: window.whipgate.layers shows every layer sent, at its size",
                   sorted(shown) == sorted(sent)
                   and all(f"{page[x]['width']}x{page[x]['height']}" in sizes[x] for x in sent),
                   f"{ {x: (l.get('width'), l.get('height')) for x, l in page.items()} }")
        conn = [s for s in snapshots if s.state == pb.SESSION_STATE_CONNECTED and s.simulcast_layers]
        got = sorted({tuple(s.simulcast_layers) for s in conn})
        self.check(f"GetIngest session.simulcast_layers == {layers}",
                   bool(conn) and got == [tuple(layers)], f"{[list(g) for g in got]}")
        fwd = [s.forwarded_layer for s in snapshots if s.state == pb.SESSION_STATE_CONNECTED]
        self.check("GetIngest session.forwarded_layer set while media flows", any(fwd),
                   " -> ".join(f"{x[1]} ({x[0]} s)" for x in sim.get("forwarded") or []))
        started = [e.track_started for e in watcher.snapshot() if e.WhichOneof("payload") == "track_started"
                   and e.track_started.kind == pb.MEDIA_KIND_VIDEO]
        self.check("TrackStarted (video) for every layer sent, with its rid",
                   set(sent) <= {t.rid for t in started}, f"{sorted(t.rid for t in started)}")

        union = [res for x in layers for res in sizes.get(x) or []]
        by_size = {_frame_bytes(res): res for res in union}
        decoded = [by_size.get(size, f"? ({size} bytes)") for size in v["size_runs"]]
        self.decoded_resolutions = decoded
        if decoded and "?" not in decoded[-1]:
            self.resolution = tuple(int(x) for x in decoded[-1].split("x"))
        self.check("every decoded frame size is one Chromium sent on some layer",
                   bool(decoded) and all("?" not in d for d in decoded),
                   f"decoded {' -> '.join(decoded)}; layers {what}")

        default, highest = sim.get("default_layer"), sim.get("highest")
        self.check("whipgate forwarded the highest-bitrate layer by default (the browser's last 2 s, "
                   "within whipgate's 1.2x switch margin)", default and self.is_highest(default, sim.get("rates") or {}),
                   f"forwarded {default!r}, highest {highest!r}; bit/s {sim.get('rates')}")
        self.check("FFmpeg decoded that layer's size before the switch",
                   default in sizes and sim.get("size_before") in {_frame_bytes(x) for x in sizes[default]},
                   f"{by_size.get(sim.get('size_before'), sim.get('size_before'))} vs {sizes.get(default)}")
        self.check(f"SelectSimulcastLayer({rid!r}) answered session_live", sim.get("session_live") is True,
                   sim.get("select_error") or f"{sim.get('session_live')}")
        self.check(f"GetIngest ingest.simulcast_layer == {rid!r} after it (kept for later sessions)",
                   sim.get("ingest_layer") == rid, repr(sim.get("ingest_layer")))
        if default == rid:
            self.notes.append(f"the default layer was already {rid!r}: no resolution change to see")
        limit = 5.0
        t = self.details["simulcast"]
        self.check(f"GetIngest forwarded_layer == {rid!r} within {limit:.0f} s of the select",
                   t["forwarded_after_s"] is not None and t["forwarded_after_s"] <= limit,
                   f"after {t['forwarded_after_s']} s" if t["forwarded_after_s"] is not None else
                   f"never; forwarded {sim.get('forwarded')}")
        want = {_frame_bytes(x) for x in sizes.get(rid) or []}
        self.check(f"FFmpeg's decoded size changed to layer {rid!r} ({', '.join(sizes.get(rid) or [])}) "
                   f"within {limit:.0f} s", t["decoded_after_s"] is not None and t["decoded_after_s"] <= limit,
                   f"after {t['decoded_after_s']} s" if t["decoded_after_s"] is not None else "never")
        after = v["frame_sizes"][sim.get("frames_before", len(v["frame_sizes"])):]
        first = next((i for i, size in enumerate(after) if size in want), None)
        tail_ = after[first:] if first is not None else []
        self.check(f"after the switch FFmpeg decoded only layer {rid!r}, no frame of another",
                   bool(tail_) and all(size in want for size in tail_),
                   f"{len(tail_)} frames of {rid!r}, {first} of the old layer before them")

    # ------------------------------------------------------------ reconnect

    def check_reconnect(self, sessions: list[dict], session_ids: list[str], v: dict, au: dict,
                        dur: float, ff_text: str, watcher: "EventWatcher") -> None:
        """One FFmpeg across the publisher's reconnect: it kept running, decoded both halves,
        its timestamps kept increasing; the tap saw one SSRC per kind whose sequence numbers
        and timestamps continue over the gap; each session had its own publisher SSRCs."""
        pb = self.pb
        t2 = self.connected_at.get(session_ids[-1])
        exited = None if self.ff_exited_at is None else round(self.ff_exited_at - self.started, 1)
        self.check("FFmpeg was still running when the new session connected (one FFmpeg, both sessions)",
                   t2 is not None and (self.ff_exited_at is None or self.ff_exited_at > t2),
                   f"new session CONNECTED at {round(t2 - self.started, 1) if t2 else None} s, "
                   f"FFmpeg gone at {exited} s")
        rep: dict = {"sessions": session_ids}
        # Decoded timestamps: strictly increasing, with one gap (the reconnect) between halves.
        for kind, info, rate_key in (("video", v, "video"), ("audio", au, "audio")):
            pts, tb = info["pts"], info["tb"] or 0
            steps = [b - a for a, b in zip(pts, pts[1:])]
            back = [i + 1 for i, d in enumerate(steps) if d <= 0]
            split, gap = split_at_largest_gap(pts, tb)
            halves = (split, len(pts) - split)
            sent1 = (sessions[0].get("frames_sent") or {}).get(rate_key, 0)
            rate2 = (sessions[-1].get("frames_sent") or {}).get(rate_key, 0) / self.seconds
            start2 = pts[split] * tb if split < len(pts) else dur
            exp2 = int(rate2 * max(0.0, dur - start2))
            rep[kind] = {"decoded": len(pts), "first_half": halves[0], "second_half": halves[1],
                         "gap_s": round(gap, 3), "second_half_starts_s": round(start2, 3),
                         "expected_first": sent1, "expected_second": exp2,
                         "non_increasing": len(back)}
            if kind == "video":
                self.check("decoded video timestamps strictly increasing", bool(pts) and not back,
                           f"{len(back)} of {len(steps)} steps not increasing"
                           + (f", first at frame {back[0]}: {pts[back[0] - 1]} -> {pts[back[0]]}" if back else ""))
            else:
                self.check("decoded audio timestamps never go backwards",
                           bool(pts) and all(d >= 0 for d in steps),
                           f"{len(back)} of {len(steps)} steps not increasing")
            typical = sorted(steps)[len(steps) // 2] * tb if steps else 0
            self.check(f"decoded {kind} has one reconnect gap ({gap:.2f} s, typical step {typical * 1000:.0f} ms)",
                       gap >= 0.2 and gap >= 4 * typical, f"frames {halves[0]} + {halves[1]}")
            self.check(f"FFmpeg decoded {kind} from the first session (>= half the frames sent)",
                       halves[0] > 0 and halves[0] * 2 >= sent1, f"{halves[0]} of {sent1}")
            self.check(f"FFmpeg decoded {kind} from the second session (>= half the frames expected "
                       f"from {start2:.2f} s to {dur} s)", halves[1] > 0 and halves[1] * 2 >= exp2,
                       f"{halves[1]} of {exp2}")
        if v["pts"]:
            self.notes.append(f"decoded {rep['video']['first_half']} + {rep['video']['second_half']} video and "
                              f"{rep['audio']['first_half']} + {rep['audio']['second_half']} audio frames "
                              f"before + after the reconnect ({rep['video']['gap_s']} s gap in the video timestamps)")
        mono = [l.strip() for l in ff_text.splitlines() if "Non-monotonous DTS in output stream 0:" in l]
        self.check("FFmpeg saw no non-monotonous video timestamps", not mono,
                   f"{len(mono)} lines, first: {mono[0]}" if mono else "")

        # Publisher SSRCs (aiortc's own, and whipgate's TrackStarted): new ones each session.
        started: dict[str, dict[str, int]] = {}
        for e in watcher.snapshot():
            if e.WhichOneof("payload") == "track_started":
                kind = "video" if e.track_started.kind == pb.MEDIA_KIND_VIDEO else "audio"
                started.setdefault(e.session_id, {})[kind] = e.track_started.ssrc
        own = [s.get("ssrcs") or {} for s in sessions]
        rep["publisher_ssrcs"] = own
        for kind in ("video", "audio"):
            ss = [started.get(sid, {}).get(kind) for sid in session_ids]
            self.check(f"TrackStarted {kind} per session = the publisher's SSRC, a new one after the reconnect",
                       all(ss) and len(set(ss)) == len(ss) and ss == [o.get(kind) for o in own],
                       f"{[hex(x) if x else x for x in ss]}, aiortc {[hex(o[kind]) if o.get(kind) else None for o in own]}")

        # The tap: what FFmpeg received, header by header.
        tap = self.tap
        rep["tap"] = {}
        deleted = sessions[0].get("deleted_at") or 0
        for kind, clock in (("video", 90000), ("audio", 48000)):
            pk = tap.packets(kind) if tap else []
            ssrcs = sorted({p[1] for p in pk})
            self.check(f"tap: one {kind} SSRC forwarded across the reconnect", len(ssrcs) == 1,
                       f"{[hex(x) for x in ssrcs]} in {len(pk)} packets; publishers "
                       f"{[hex(o[kind]) if o.get(kind) else None for o in own]}")
            if len(pk) < 2:
                continue
            i = max(range(1, len(pk)), key=lambda k: pk[k][0] - pk[k - 1][0])
            before, after = pk[i - 1], pk[i]
            gap = after[0] - before[0]
            dseq = (after[2] - before[2]) & 0xFFFF
            dts = ((after[3] - before[3]) & 0xFFFFFFFF) / clock
            jumps = [k for k in range(1, len(pk)) if (pk[k][2] - pk[k - 1][2]) & 0xFFFF != 1]
            rep["tap"][kind] = {"ssrc": hex(ssrcs[0]) if ssrcs else None, "packets": len(pk),
                                "gap_s": round(gap, 3), "seq": [before[2], after[2]],
                                "ts_advance_s": round(dts, 3), "seq_steps_not_plus_one": len(jumps),
                                "sr_ssrcs": [hex(x) for x in sorted(tap.sr_ssrcs[kind])]}
            self.check(f"tap: the {kind} reconnect gap ({gap:.2f} s) follows the first DELETE",
                       before[0] <= deleted + 0.5 and after[0] >= deleted,
                       f"last packet {before[0] - deleted:+.3f} s, next {after[0] - deleted:+.3f} s from the DELETE")
            self.check(f"tap: {kind} sequence numbers continue across the reconnect (+1)", dseq == 1,
                       f"{before[2]} -> {after[2]}")
            self.check(f"tap: {kind} RTP timestamps advance by the gap (+{dts:.3f} s over {gap:.3f} s)",
                       abs(dts - gap) <= 0.1)
            self.check(f"tap: RTCP sender reports ({kind}) carry the forwarded SSRC only",
                       tap.sr_ssrcs[kind] <= set(ssrcs), f"{rep['tap'][kind]['sr_ssrcs']}")
            if jumps:
                self.notes.append(f"tap: {len(jumps)} {kind} sequence steps other than +1 in {len(pk)} packets")
        self.details["reconnect"] = rep

    def check_page(self, r: dict) -> None:
        """What the publish page itself shows on window.whipgate, against the wire."""
        page, after = r.get("page") or {}, r.get("page_after_stop") or {}
        post = r.get("post") or {}
        self.check("page: httpStatus 201, ETag as sent", page.get("httpStatus") == 201
                   and page.get("etag") == post.get("etag"), f"{page.get('httpStatus')} {page.get('etag')!r}")
        self.check(f"page: videoCodec {self.spec['encoding']}, audioCodec opus",
                   (page.get("videoCodec") or "").upper() == self.spec["encoding"]
                   and (page.get("audioCodec") or "").lower() == "opus",
                   f"{page.get('videoCodec')!r} {page.get('audioCodec')!r}")
        self.check("page: bitrate shown > 0", (page.get("bitrateBps") or 0) > 0, f"{page.get('bitrateBps')}")
        d = r.get("delete") or {}
        self.check("page: Stop sent DELETE to the session URL, deleteStatus 204",
                   d.get("url") == r.get("session_url") and after.get("deleteStatus") == 204
                   and after.get("state") == "stopped",
                   f"{d.get('url')} -> {after.get('deleteStatus')}, state {after.get('state')}")

    def check_whip(self, r: dict, ingest_id: str, udp_port: int, answer_path: Path,
              prefix: str = "") -> None:
        """The WHIP exchange of one session; `prefix` names the session in the check names."""
        check = lambda name, ok, detail="": self.check(prefix + name, ok, detail)  # noqa: E731
        post = r.get("post") or {}
        check("POST 201", post.get("status") == 201, f"{post.get('status')}")
        ctype = (post.get("content_type") or "").split(";")[0].strip().lower()
        check("answer Content-Type application/sdp", ctype == "application/sdp",
              f"{post.get('content_type')!r}")
        loc = post.get("location") or ""
        check("Location is /whip/<id>/<uuid>, relative",
              re.fullmatch(rf"/whip/{re.escape(ingest_id)}/{UUID_RE}", loc) is not None, repr(loc))
        etag = post.get("etag") or ""
        check("ETag present", bool(etag), repr(etag))
        resolved = r.get("session_url") or ""
        check("Location resolves against the POST URL",
              urlsplit(resolved).path == loc and urlsplit(resolved).netloc == urlsplit(post.get("final_url", "")).netloc,
              resolved)
        check("ICE + DTLS connected", r.get("connection_state") == "connected",
              f"{r.get('connection_state')} after {r.get('connect_millis')} ms")
        if r.get("trickle"):
            patches = r.get("patches") or []
            check("trickle: every PATCH (candidates, end-of-candidates) answered 204",
                  bool(patches) and all(x.get("status") == 204 for x in patches),
                  ", ".join(f"{x.get('what')}: {x.get('status')}" for x in patches))
            check("trickle: the offer POSTed had no candidates",
                  not r.get("offer_candidates"), f"{len(r.get('offer_candidates') or [])}")
            if "trickled_candidates" in r:
                check("trickle: the PATCHes carried the publisher's candidates",
                      r["trickled_candidates"] > 0, f"{r['trickled_candidates']}")
            for x in r.get("refused_patches") or []:
                if x.get("want"):
                    check(f"trickle: PATCH with {x['what']} refused {x['want']}",
                          x.get("status") == x["want"], f"{x.get('status')} {x.get('body', '')!r}")
                else:
                    self.notes.append(f"PATCH with {x['what']} answered {x.get('status')} "
                                      "(the session URL does not check the bearer token)")
        d = r.get("delete") or {}
        check("DELETE 204", d.get("status") == 204, f"{d.get('status')} {d.get('body', '')!r}")

        try:
            answer = answer_path.read_text()
        except OSError:
            answer = ""
        lines = answer.splitlines()
        check("answer is ICE-lite", "a=ice-lite" in lines)
        cands = [l for l in lines if l.startswith("a=candidate:")]
        host = [c for c in cands if re.search(rf" udp \d+ 127\.0\.0\.1 {udp_port} typ host", c, re.I)]
        check("answer has a host candidate on whipgate's UDP port", bool(host),
              f"{len(cands)} candidates: {cands[:3]}")
        check("answer sets up DTLS passive (or actpass → passive)",
              any(l in ("a=setup:passive", "a=setup:active") for l in lines),
              _first(answer, "a=setup:"))
        sections = _media_sections(answer)
        kinds = [k for k, _ in sections]
        check("answer has one video and one audio section",
              sorted(kinds) == ["audio", "video"], f"{kinds}")
        for kind, body in sections:
            check(f"answer {kind} is recvonly", "a=recvonly" in body,
                  next((l for l in body if l in ("a=sendrecv", "a=sendonly", "a=inactive")), ""))
        video = next((b for k, b in sections if k == "video"), [])
        enc = self.spec["encoding"]
        vcodecs = [l.split(" ", 1)[1].split("/")[0] for l in video if l.startswith("a=rtpmap:")]
        main = [c for c in vcodecs if c.lower() not in ("rtx", "red", "ulpfec")]
        check(f"answer video codec is {enc} only", bool(main) and all(c.upper() == enc for c in main),
              f"{vcodecs}")

    def stop_ffmpeg(self, ff: subprocess.Popen) -> None:
        """SIGINT makes FFmpeg write its trailers; timeout(1) forwards it. A second signal
        would abort its blocking RTP read, and its output with it: kill instead."""
        os.kill(ff.pid, signal.SIGINT)
        if wait_exit(ff, 15) is None:
            log("  ffmpeg still running 15 s after SIGINT; killing it")
            Procs.signal_group(ff, signal.SIGKILL)
            wait_exit(ff, 5)
        log(f"  ffmpeg exit {ff.returncode}")

    def summary(self, gw_err: Path, ff_err: Path, pub_out: Path, pub_err: Path) -> dict:
        failed = [c for c in self.checks if not c[1]]
        result = "fail" if failed or not self.checks else ("n/a" if self.na else "pass")
        row = {
            "row": self.name,
            "client": CLIENT_NAMES[self.spec["client"]],
            "version": client_version(self.spec["client"]) or self.version or "unknown",
            "driver": self.driver,
            "codecs": self.spec["codecs"],
            "scenario": self.spec.get("scenario"),
            "trickle": self.trickle,
            "result": result,
            "reason": self.na,
            "frames": dict(self.frames),
            "frames_sent": self.sent,
            "resolution": f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else None,
            "resolutions_decoded": self.decoded_resolutions or None,
            "capture": self.pub_result.get("capture"),
            "consumer": f"FFmpeg {self.ffver}",
            "seconds": round(time.monotonic() - self.started, 1),
            "checks": len(self.checks),
            "failures": [f"{n}: {d}" if d else n for n, _, d in failed],
            "notes": self.notes,
        }
        if self.details:
            row["details"] = self.details
        if failed:
            print(f"\n---- {self.name}: {len(failed)} failed check(s)", flush=True)
            for n, _, d in failed:
                print(f"  FAIL {n}" + (f": {d}" if d else ""))
            for title, path, n in (("whipgate stderr", gw_err, 60), ("ffmpeg stderr", ff_err, 30),
                                   ("publisher stdout", pub_out, 20), ("publisher stderr", pub_err, 30)):
                print(f"---- {title} (last {n} lines of {path})\n{tail(path, n)}", flush=True)
        return row


def _first(text: str, prefix: str) -> str:
    return next((l for l in text.splitlines() if l.startswith(prefix)), "")


def _frame_bytes(res: str) -> int:
    """Bytes of one yuv420p frame of "WxH" (what framecrc's size column says)."""
    w, h = (int(x) for x in res.split("x"))
    return w * h * 3 // 2


def _media_sections(sdp: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append((line[2:].split(" ", 1)[0], [line]))
        elif out:
            out[-1][1].append(line)
    return out


def _aiortc_version() -> str:
    try:
        import aiortc

        return aiortc.__version__
    except Exception:
        return "unknown"


CLIENT_NAMES = {
    "aiortc": "aiortc", "chromium": "Chromium", "firefox": "Firefox ESR",
    "wrtc": "@roamhq/wrtc (libwebrtc)", "gstreamer": "GStreamer webrtcbin",
}
_versions: dict[str, str | None] = {}


def _command_version(cmd: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(pattern, out)
    return m.group(1) if m else None


def _npm_version(package: str) -> str | None:
    try:
        return json.loads((NODE_DIR / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def client_version(client: str) -> str | None:
    """The publisher's version, as the tool itself tells it (never typed by hand)."""
    if client not in _versions:
        v = None
        if client == "aiortc":
            v = _aiortc_version()
        elif client == "chromium":
            v = _command_version(["chromium", "--version"], r"Chromium (\S+)")
        elif client == "firefox":
            v = _command_version(["firefox-esr", "--version"], r"Firefox (\S+)")
        elif client == "wrtc":
            v = _npm_version("@roamhq/wrtc")
        elif client == "gstreamer":
            v = _command_version([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
                                  "from gi.repository import Gst; print(Gst.version_string())"],
                                 r"GStreamer (\S+)")
        _versions[client] = v
    return _versions[client]


# ---------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--whipgate", default=str(REPO / "target" / "debug" / "whipgate"))
    p.add_argument("--rows", default="all",
                   help=f"comma-separated, or all: {', '.join(ROWS)} (h264, vp8: the aiortc rows)")
    p.add_argument("--seconds", type=float, default=8.0,
                   help="publishing time per row (rows with their own: the reconnect row 5 s "
                        "per session, the simulcast row 12 s)")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--results-dir", default=str(HERE / "results"),
                   help="one <row>.json per row goes here")
    p.add_argument("--log-dir", help="where logs go (default: a new temp dir, kept)")
    p.add_argument("--allow-host-network", action="store_true",
                   help="run even when interfaces besides lo are visible (debugging only)")
    args = p.parse_args()

    rows = []
    for r in (x.strip() for x in args.rows.split(",")):
        if not r:
            continue
        if r == "all":
            rows.extend(ROWS)
            continue
        r = ALIASES.get(r, r)
        if r not in ROWS:
            p.error(f"unknown row {r!r}; known: all, {', '.join(ROWS)}")
        rows.append(r)
    rows = list(dict.fromkeys(rows))
    needs = {ROWS[r]["client"] for r in rows}
    missing = []
    if needs & {"chromium", "firefox", "wrtc"}:
        if not shutil.which("node"):
            missing.append("node (apt-get install nodejs npm)")
        for pkg, client in (("playwright-core", "chromium"), ("puppeteer-core", "firefox"),
                            ("@roamhq/wrtc", "wrtc")):
            if client in needs and not (NODE_DIR / pkg).is_dir():
                missing.append(f"{pkg} (cd interop && npm ci)")
    for exe, client in (("/usr/bin/chromium", "chromium"), ("/usr/bin/firefox-esr", "firefox")):
        if client in needs and not os.access(exe, os.X_OK):
            missing.append(f"{exe} (apt-get install {Path(exe).name})")
    if "gstreamer" in needs and client_version("gstreamer") is None:
        missing.append("GStreamer for system python3 (see scripts/test)")
    if missing:
        print("interop: missing " + "; ".join(missing), file=sys.stderr)
        return 2
    args.whipgate = str(Path(args.whipgate).resolve())
    if not os.access(args.whipgate, os.X_OK):
        print(f"interop: no whipgate binary at {args.whipgate} (run cargo build first)", file=sys.stderr)
        return 2
    for tool in ("ffmpeg", "timeout"):
        if not shutil.which(tool):
            print(f"interop: {tool} not found (apt-get install ffmpeg coreutils)", file=sys.stderr)
            return 2

    ensure_private_netns(args)

    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="whipgate-interop-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    pb, pbg = load_stubs(Path(tempfile.mkdtemp(prefix="whipgate-stubs-")))
    ffver = ffmpeg_version()
    versions = ", ".join(f"{CLIENT_NAMES[c]} {client_version(c)}" for c in sorted(needs))
    log(f"whipgate {args.whipgate}; FFmpeg {ffver}; {versions}; rows {', '.join(rows)}; logs {log_dir}")

    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.monotonic()
    for r in rows:
        row = Row(r, args, pb, pbg, log_dir / r, ffver).run()
        results.append(row)
        (out_dir / f"{r}.json").write_text(json.dumps(row, indent=2) + "\n")

    print()
    for row in results:
        f = row["frames"]
        extra = f"  ({row['reason']})" if row["reason"] else ""
        print(f"{row['row']:<22} {row['client']} {row['version']}  {row['codecs']:<10} "
              f"trickle={'yes' if row['trickle'] else 'no':<3} {row['result'].upper():<4}  "
              f"video={f['video']} audio={f['audio']} res={row['resolution']}  "
              f"({row['checks'] - len(row['failures'])}/{row['checks']} checks, "
              f"{row['seconds']} s){extra}")
    passed = sum(r["result"] == "pass" for r in results)
    skipped = sum(r["result"] == "n/a" for r in results)
    failed = len(results) - passed - skipped
    print(f"results in {out_dir}, logs in {log_dir}, {time.monotonic() - t0:.0f} s in all")
    print(f"interop: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
