#!/usr/bin/env python3
"""Independent-peer interop test for whipgate: real WebRTC stacks publish over
WHIP, FFmpeg decodes what whipgate forwards.

Rows (select with --rows; `all` is the default):
  aiortc-h264, aiortc-vp8        aiortc (Python), interop/aiortc_publish.py
  chromium-h264, chromium-vp8    Debian Chromium on whipgate's /publish page (playwright-core)
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
import shutil
import signal
import socket
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
TOKEN = "interop-secret-token"
ROWS = {
    "aiortc-h264": {"client": "aiortc", "codec": "h264", "token": None, "size": (640, 360)},
    "aiortc-vp8": {"client": "aiortc", "codec": "vp8", "token": TOKEN, "size": (640, 360)},
    "chromium-h264": {"client": "chromium", "codec": "h264", "token": None, "size": None,
                      "screenshot": True},
    "chromium-vp8": {"client": "chromium", "codec": "vp8", "token": TOKEN, "size": None},
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
    """Counts the frame lines of a framecrc file and reads its header."""
    info: dict = {"frames": 0, "sizes": set(), "crcs": set(), "dimensions": None, "size_runs": []}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.match(r"#dimensions \d+: (\d+)x(\d+)", line)
            if m:
                info["dimensions"] = (int(m.group(1)), int(m.group(2)))
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 6:
            info["frames"] += 1
            info["sizes"].add(int(parts[4]))
            if not info["size_runs"] or info["size_runs"][-1] != int(parts[4]):
                info["size_runs"].append(int(parts[4]))  # frame sizes, in order, runs collapsed
            info["crcs"].add(parts[5])
    return info


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
            vport, aport = free_even_ports(2)
            codec_enum = {"h264": pb.VIDEO_CODEC_H264, "vp8": pb.VIDEO_CODEC_VP8}[self.spec["codec"]]
            reg = stub.RegisterIngest(
                pb.RegisterIngestRequest(
                    ingest_id=ingest_id,
                    video_target=f"127.0.0.1:{vport}",
                    audio_target=f"127.0.0.1:{aport}",
                    video_codecs=[codec_enum],
                    bearer_token=self.spec["token"] or "",
                ),
                timeout=10,
            )
            sdp = reg.ingest.consumer_sdp
            (wd / "consumer.sdp").write_text(sdp)
            self.check("RegisterIngest created", reg.created, f"video {vport}, audio {aport}")
            self.check("consumer SDP names the video port", f"m=video {vport} " in sdp,
                       _first(sdp, "m=video"))
            self.check("consumer SDP names the audio port", f"m=audio {aport} " in sdp,
                       _first(sdp, "m=audio"))
            self.check(f"consumer SDP has {self.spec['encoding']}",
                       re.search(rf"a=rtpmap:\d+ {self.spec['encoding']}/90000", sdp, re.I) is not None)
            self.check("consumer SDP has opus",
                       re.search(r"a=rtpmap:\d+ opus/48000", sdp, re.I) is not None)
            ev = watcher.wait_for(lambda e: e.WhichOneof("payload") == "ingest_registered", 5)
            self.check("IngestRegistered event", ev is not None, f"events so far {watcher.kinds()}")

            # 3. FFmpeg, before any media flows
            # FFmpeg stops by itself after `dur` seconds of each stream (-t binds to one
            # output: repeat it), before the publisher's DELETE; timeout(1) bounds the rest.
            dur = ffmpeg_duration(a.seconds)
            limit = a.seconds + 60
            vcrc, acrc = wd / "video.framecrc", wd / "audio.framecrc"
            ff_cmd = [
                "timeout", "-s", "INT", "-k", "10", str(int(limit)),
                "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "info",
                "-protocol_whitelist", "file,udp,rtp",
                "-i", str(wd / "consumer.sdp"),
                # -autoscale 0: a resolution change reaches the output as it is (browsers
                # ramp their resolution with the bandwidth estimate), not scaled to the first.
                "-map", "0:v:0", "-t", str(dur), "-autoscale", "0", "-flush_packets", "1",
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
            deadline = time.monotonic() + a.seconds + 75
            while pub.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("publisher did not finish in time")
                try:
                    ing = stub.GetIngest(pb.GetIngestRequest(ingest_id=ingest_id), timeout=2).ingest
                    if ing.HasField("session"):
                        snapshots.append(ing.session)
                except grpc.RpcError as e:
                    log(f"  GetIngest failed: {e.code()} {e.details()}")
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
            self.check_whip(result, ingest_id, udp_port)
            if self.spec["client"] in ("chromium", "firefox"):
                self.check_page(result)
            self.check("publisher exit 0", pub.returncode == 0,
                       "; ".join(result.get("errors", [])) or f"exit {pub.returncode}")
            session_id = (result.get("post", {}).get("location") or "").rstrip("/").rsplit("/", 1)[-1]

            # GetIngest while live
            connected = [s for s in snapshots if s.state == pb.SESSION_STATE_CONNECTED]
            self.check("GetIngest showed the live session", bool(snapshots),
                       f"{len(snapshots)} snapshots")
            self.check("GetIngest session_id = Location's id",
                       bool(snapshots) and all(s.session_id == session_id for s in snapshots),
                       f"{sorted({s.session_id for s in snapshots})} vs {session_id}")
            states = []
            for snap in snapshots:
                name = pb.SessionState.Name(snap.state).removeprefix("SESSION_STATE_")
                if not states or states[-1] != name:
                    states.append(name)
            self.check("GetIngest state CONNECTED", bool(connected), " -> ".join(states))
            if connected:
                c = connected[-1].counters
                self.check("GetIngest counters video_packets > 0", c.video_packets > 0,
                           f"video {c.video_packets}, audio {c.audio_packets}, "
                           f"forwarded {c.packets_forwarded}, plis {c.plis_sent}")
                self.check("GetIngest counters audio_packets > 0", c.audio_packets > 0)

            # 5. session end
            ev = watcher.wait_for(lambda e: e.WhichOneof("payload") == "session_ended", 10)
            self.check("SessionEnded event after DELETE", ev is not None,
                       f"events {watcher.kinds()}" + (f", watch error {watcher.error}" if watcher.error else ""))
            if ev is not None:
                reason = pb.EndReason.Name(ev.session_ended.reason)
                self.check("SessionEnded session_id = Location's id", ev.session_id == session_id,
                           f"{ev.session_id!r}")
                self.check("SessionEnded reason PUBLISHER_DELETE",
                           ev.session_ended.reason == pb.END_REASON_PUBLISHER_DELETE, reason)
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
            else:
                self.check_browser_resolution(v)
            corrupt = [l for l in ff_text.splitlines()
                       if "corrupt decoded frame" in l or "concealing" in l]
            self.check("FFmpeg decoded no corrupt (concealed) video frame", not corrupt,
                       f"{len(corrupt)} lines, first: {corrupt[0].strip()}" if corrupt else "")
            self.check("decoded video frames differ (the picture moves)", len(v["crcs"]) > 1,
                       f"{len(v['crcs'])} distinct of {v['frames']}")
            # At most `dur` of the --seconds published were decoded (at the rate sent).
            exp_v = min(sent_v, int(sent_v * dur / a.seconds))
            exp_a = min(sent_a, int(sent_a * dur / a.seconds))
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
            for profile in procs.markers:  # browser profiles: tens of MB each, nothing to read
                shutil.rmtree(profile, ignore_errors=True)
        return self.summary(gw_err, ff_err, pub_out, pub_err)

    def publisher_cmd(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        a, spec, wd = self.args, self.spec, self.workdir
        client, codec, token = spec["client"], spec["codec"], spec["token"]
        url = f"http://{http}/whip/{ingest_id}"
        common = ["--seconds", str(a.seconds), "--answer-out", str(wd / "answer.sdp"),
                  "--offer-out", str(wd / "offer.sdp")]
        if client == "aiortc":
            return [sys.executable, str(AIORTC_PUBLISHER), "--url", url, "--codec", codec,
                    *common, *(["--token", token] if token else [])]
        if client in ("chromium", "firefox"):
            profile = Path(tempfile.mkdtemp(prefix=f"{client}-profile-", dir=wd))
            procs.watch_dir(str(profile))
            page = f"http://{http}/publish/{ingest_id}?codec={codec}" + \
                (f"&token={token}" if token else "") + "&autostart"
            shot = ["--screenshot", str(SCREENSHOT)] if spec.get("screenshot") else []
            if shot:
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            return ["timeout", "-s", "TERM", "-k", "10", str(int(a.seconds + 70)),
                    "node", str(BROWSER_PUBLISHER), "--browser", client, "--url", page,
                    "--codec", codec, "--profile-dir", str(profile), *shot, *common]
        if client == "wrtc":
            return ["timeout", "-s", "TERM", "-k", "10", str(int(a.seconds + 60)),
                    "node", str(WRTC_PUBLISHER), "--url", url, *common,
                    *(["--token", token] if token else [])]
        if client == "gstreamer":
            return ["timeout", "-s", "TERM", "-k", "10", str(int(a.seconds + 60)),
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

    def check_whip(self, r: dict, ingest_id: str, udp_port: int) -> None:
        post = r.get("post") or {}
        self.check("POST 201", post.get("status") == 201, f"{post.get('status')}")
        ctype = (post.get("content_type") or "").split(";")[0].strip().lower()
        self.check("answer Content-Type application/sdp", ctype == "application/sdp",
                   f"{post.get('content_type')!r}")
        loc = post.get("location") or ""
        self.check("Location is /whip/<id>/<uuid>, relative",
                   re.fullmatch(rf"/whip/{re.escape(ingest_id)}/{UUID_RE}", loc) is not None, repr(loc))
        etag = post.get("etag") or ""
        self.check("ETag present", bool(etag), repr(etag))
        resolved = r.get("session_url") or ""
        self.check("Location resolves against the POST URL",
                   urlsplit(resolved).path == loc and urlsplit(resolved).netloc == urlsplit(post.get("final_url", "")).netloc,
                   resolved)
        self.check("ICE + DTLS connected", r.get("connection_state") == "connected",
                   f"{r.get('connection_state')} after {r.get('connect_millis')} ms")
        if r.get("trickle"):
            patches = r.get("patches") or []
            self.check("trickle: every PATCH (candidates, end-of-candidates) answered 204",
                       bool(patches) and all(x.get("status") == 204 for x in patches),
                       ", ".join(f"{x.get('what')}: {x.get('status')}" for x in patches))
            self.check("trickle: the offer POSTed had no candidates",
                       not r.get("offer_candidates"), f"{len(r.get('offer_candidates') or [])}")
        d = r.get("delete") or {}
        self.check("DELETE 204", d.get("status") == 204, f"{d.get('status')} {d.get('body', '')!r}")

        try:
            answer = (self.workdir / "answer.sdp").read_text()
        except OSError:
            answer = ""
        lines = answer.splitlines()
        self.check("answer is ICE-lite", "a=ice-lite" in lines)
        cands = [l for l in lines if l.startswith("a=candidate:")]
        host = [c for c in cands if re.search(rf" udp \d+ 127\.0\.0\.1 {udp_port} typ host", c, re.I)]
        self.check("answer has a host candidate on whipgate's UDP port", bool(host),
                   f"{len(cands)} candidates: {cands[:3]}")
        self.check("answer sets up DTLS passive (or actpass → passive)",
                   any(l in ("a=setup:passive", "a=setup:active") for l in lines),
                   _first(answer, "a=setup:"))
        sections = _media_sections(answer)
        kinds = [k for k, _ in sections]
        self.check("answer has one video and one audio section",
                   sorted(kinds) == ["audio", "video"], f"{kinds}")
        for kind, body in sections:
            self.check(f"answer {kind} is recvonly", "a=recvonly" in body,
                       next((l for l in body if l in ("a=sendrecv", "a=sendonly", "a=inactive")), ""))
        video = next((b for k, b in sections if k == "video"), [])
        enc = self.spec["encoding"]
        vcodecs = [l.split(" ", 1)[1].split("/")[0] for l in video if l.startswith("a=rtpmap:")]
        main = [c for c in vcodecs if c.lower() not in ("rtx", "red", "ulpfec")]
        self.check(f"answer video codec is {enc} only", bool(main) and all(c.upper() == enc for c in main),
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
    p.add_argument("--seconds", type=float, default=8.0, help="publishing time per row")
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
        print(f"{row['row']:<15} {row['client']} {row['version']}  {row['codecs']:<10} "
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
