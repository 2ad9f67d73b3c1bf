#!/usr/bin/env python3
"""WHIP publisher for whipgate's interop run: FFmpeg 9's own WHIP muxer (`-f whip`), the
build that the PyPI package imageio-ffmpeg ships (imageio_ffmpeg.get_ffmpeg_exe()).

FFmpeg encodes lavfi's testsrc2 (H264: libx264 constrained baseline, no B-frames, a keyframe
at the start and every second) and a sine tone (stereo Opus) in real time (-re), POSTs its
offer with `-authorization TOKEN` (Authorization: Bearer), connects, publishes for
--seconds (-t: FFmpeg ends by itself, writes its trailer and sends its DELETE), all bounded:
SIGINT when it overruns, SIGKILL 5 s later.

FFmpeg tells little about its HTTP exchange (and nothing of the DELETE's status), so its
requests go through a transparent TCP relay in this process (127.0.0.1, ephemeral port)
that records each request line, whether Authorization was sent, and the answer's status,
headers and body, exactly as they crossed the wire: the WHIP exchange below comes from the
wire, the connection facts from FFmpeg's log (-loglevel verbose, written to --log-out).

    ffmpeg_whip_publish.py --url http://127.0.0.1:8080/whip/cam1 --seconds 8 --token T

Prints the WHIP exchange and, last, one line "RESULT {json}" in the shape run_interop.py
reads (as aiortc_publish.py does). FFmpeg's own `Failed to ...` lines are listed in the
RESULT; one is known and not FFmpeg's server's doing (see KNOWN_DELETE_READ_FAILURE).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

# FFmpeg 9.0's dispose_session() opens the DELETE for writing, so libavformat/http.c sends
# the request without reading the answer, then reads the answer's status line as a chunk
# size (0: "Last chunk received"), closes, and the next read fails with EIO: whatever the
# server answers (200 with Content-Length: 0, with a body, chunked, 204), FFmpeg logs these
# two lines. The relay shows the DELETE and its status on the wire.
KNOWN_DELETE_READ_FAILURE = (
    re.compile(r"Failed to read response from DELETE url=\S+"),
    re.compile(r"Failed to dispose resource, ret=-5\b"),
)
MUXER_READY = re.compile(
    r"Muxer state=\d+.*elapsed=([\d.]+)ms\(init:([\d.]+),offer:([\d.]+),answer:([\d.]+),"
    r"udp:([\d.]+),ice:([\d.]+),dtls:([\d.]+),srtp:([\d.]+)\)")
STREAM_STATS = re.compile(r"Output stream #\d+:\d+ \((video|audio)\): (\d+) frames encoded")
MAX_CAPTURE = 256 * 1024


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version(exe: str) -> str | None:
    """"9.0.2" from FFmpeg's `ffmpeg version n9.0.2-17-g...` line."""
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"ffmpeg version n?(\d[\w.]*)", out)
    return m.group(1) if m else None


def parse_http(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """The first line, the headers (lower-case names) and the body of one HTTP message."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return lines[0], headers, body


class HttpRelay:
    """127.0.0.1:<port> -> `upstream` (host:port), one thread pair per connection; records
    each connection's first request and answer (FFmpeg sends Connection: close)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.exchanges: list[dict] = []
        self.active = 0  # connections being relayed
        self.lock = threading.Condition()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.active += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            self._relay(client)
        finally:
            with self.lock:
                self.active -= 1
                self.lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no connection is being relayed (every exchange recorded)."""
        with self.lock:
            return self.lock.wait_for(lambda: self.active == 0, timeout)

    def _relay(self, client: socket.socket) -> None:
        at = time.time()
        req, resp = bytearray(), bytearray()
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return

        def pump(src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
            try:
                while chunk := src.recv(65536):
                    if len(buf) < MAX_CAPTURE:
                        buf.extend(chunk)
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        up = threading.Thread(target=pump, args=(client, server, req), daemon=True)
        down = threading.Thread(target=pump, args=(server, client, resp), daemon=True)
        up.start()
        down.start()
        up.join(30)
        down.join(30)
        client.close()
        server.close()
        if req:
            self._record(at, bytes(req), bytes(resp))

    def _record(self, at: float, req: bytes, resp: bytes) -> None:
        line, headers, body = parse_http(req)
        method, _, rest = line.partition(" ")
        target = rest.rsplit(" ", 1)[0]
        status_line, rheaders, rbody = parse_http(resp) if resp else ("", {}, b"")
        m = re.match(r"HTTP/\d\.\d (\d{3})", status_line)
        with self.lock:
            self.exchanges.append({
                "at": at, "method": method, "target": target,
                "authorization": "authorization" in headers,
                "content_type": headers.get("content-type"),
                "request_body": body.decode(errors="replace"),
                "status": int(m.group(1)) if m else None, "status_line": status_line,
                "headers": rheaders, "body": rbody.decode(errors="replace"),
            })

    def of(self, method: str) -> list[dict]:
        with self.lock:
            return [x for x in self.exchanges if x["method"] == method]

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def command(exe: str, url: str, seconds: float, token: str | None, size: str) -> list[str]:
    auth = ["-authorization", token] if token else []
    return [
        exe, "-hide_banner", "-nostdin", "-loglevel", "verbose",
        "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "baseline",
        "-pix_fmt", "yuv420p", "-bf", "0", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
        "-b:v", "1500k",
        "-c:a", "libopus", "-ac", "2", "-ar", "48000", "-b:a", "96k",
        "-t", str(seconds), "-f", "whip", *auth, url,
    ]


def run_ffmpeg(cmd: list[str], log_path: Path, limit: float) -> tuple[int | None, bool]:
    """Runs FFmpeg to its end; SIGINT after `limit` seconds, SIGKILL 5 s later. Returns its
    exit code (None if it had to be killed) and whether it overran."""
    with open(log_path, "wb") as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            return p.wait(timeout=limit), False
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)  # a clean end: trailer, DELETE
            try:
                return p.wait(timeout=5), True
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
                return None, True
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)


def publish(args: argparse.Namespace) -> dict:
    exe = args.ffmpeg or ffmpeg_exe()
    import imageio_ffmpeg

    result: dict = {
        "client": "ffmpeg", "codec": "h264", "trickle": False, "ok": False, "errors": [],
        "version": ffmpeg_version(exe), "driver": f"imageio-ffmpeg {imageio_ffmpeg.__version__}",
    }
    errors: list[str] = result["errors"]
    parts = urlsplit(args.url)
    relay = HttpRelay(parts.netloc)
    via = urlunsplit(("http", f"127.0.0.1:{relay.port}", parts.path, parts.query, ""))

    def upstream(target: str) -> str:
        """A request target as the URL it reached on whipgate (the relay is transparent)."""
        return urljoin(args.url, target)

    log_path = Path(args.log_out)
    cmd = command(exe, via, args.seconds, args.token, args.size)
    shown = " ".join("<token>" if args.token and x == args.token else x for x in cmd)
    print(f"ffmpeg: {shown}", flush=True)
    t0 = time.monotonic()
    code, overran = run_ffmpeg(cmd, log_path, args.seconds + args.connect_timeout + 15)
    result["ffmpeg_exit"] = code
    result["ffmpeg_millis"] = round((time.monotonic() - t0) * 1000)
    if not relay.wait_idle(10):
        errors.append("an HTTP exchange of FFmpeg was still open 10 s after it exited")
    relay.close()
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    if overran:
        errors.append(f"FFmpeg ran past its limit and was stopped ({'SIGINT' if code is not None else 'SIGKILL'})")
    if code != 0:
        errors.append(f"FFmpeg exit {code}")

    result["fetches"] = [
        {"method": x["method"], "url": upstream(x["target"]), "status": x["status"], "redirected": False,
         "response_url": upstream(x["target"]), "authorization": x["authorization"],
         "at": round(x["at"] * 1000)}
        for x in relay.exchanges
    ]
    posts = relay.of("POST")
    if not posts:
        errors.append("no POST reached whipgate")
        return result
    p = posts[0]
    offer, answer = p["request_body"], p["body"]
    if args.offer_out:
        Path(args.offer_out).write_text(offer)
    if args.answer_out:
        Path(args.answer_out).write_text(answer)
    result["offer_candidates"] = [x for x in offer.splitlines() if x.startswith("a=candidate:")]
    result["offer_setup"] = next((x for x in offer.splitlines() if x.startswith("a=setup:")), None)
    result["post"] = {
        "status": p["status"], "content_type": p["headers"].get("content-type"),
        "location": p["headers"].get("location"), "etag": p["headers"].get("etag"),
        "link": [p["headers"]["link"]] if "link" in p["headers"] else [],
        "final_url": args.url, "response_url": args.url, "redirected": False, "redirects": [],
        "authorization": p["authorization"], "request_content_type": p["content_type"],
    }
    print(f"POST {args.url} -> {p['status']} (Authorization sent: {p['authorization']})", flush=True)
    if p["status"] != 201:
        errors.append(f"POST status {p['status']}, want 201: {answer[:300]!r}")
    if result["post"]["location"]:
        result["session_url"] = urljoin(args.url, result["post"]["location"])

    ready = MUXER_READY.search(text)
    result["connection_state"] = "connected" if ready else "not connected"
    if ready:
        ms = [float(x) for x in ready.groups()]
        names = ("elapsed", "init", "offer", "answer", "udp", "ice", "dtls", "srtp")
        result["ffmpeg_timings"] = dict(zip(names, ms))
        # From the answer in hand to SRTP ready: UDP connect, ICE, DTLS, SRTP.
        result["connect_millis"] = round(sum(ms[4:]))
    print(f"connected: {bool(ready)} {result.get('ffmpeg_timings')}", flush=True)
    result["frames_sent"] = {k: int(n) for k, n in STREAM_STATS.findall(text)}

    failed = [line.strip() for line in text.splitlines() if "Failed to" in line]
    known = [x for x in failed if any(k.search(x) for k in KNOWN_DELETE_READ_FAILURE)]
    result["failed_lines"] = failed
    result["failed_lines_known_ffmpeg_bug"] = known
    for line in failed:
        if line not in known:
            errors.append(f"FFmpeg: {line}")

    deletes = relay.of("DELETE")
    if deletes:
        d = deletes[-1]
        result["delete"] = {"status": d["status"], "body": d["body"][:300], "url": upstream(d["target"]),
                            "content_length": d["headers"].get("content-length"),
                            "status_line": d["status_line"], "authorization": d["authorization"]}
        result["deleted_at"] = d["at"]
        print(f"DELETE {upstream(d['target'])} -> {d['status_line']!r} "
              f"(Content-Length {d['headers'].get('content-length')})", flush=True)
        if d["status"] != 200:
            errors.append(f"DELETE status {d['status']}, want 200")
    else:
        errors.append("FFmpeg sent no DELETE")
    if known and (not deletes or deletes[-1]["status"] != 200):
        errors.append("FFmpeg's DELETE read failure without a 200 on the wire")
    result["ok"] = not errors
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip/cam1")
    p.add_argument("--seconds", type=float, default=8.0, help="publishing time (FFmpeg's -t)")
    p.add_argument("--token", help="bearer token (FFmpeg's -authorization)")
    p.add_argument("--size", default="640x360")
    p.add_argument("--ffmpeg", help="FFmpeg with the whip muxer (default: imageio-ffmpeg's)")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--log-out", required=True, help="FFmpeg's log goes here")
    p.add_argument("--offer-out", help="write the SDP offer (as sent) here")
    p.add_argument("--answer-out", help="write the SDP answer (as received) here")
    args = p.parse_args()
    try:
        result = publish(args)
    except Exception as e:  # the RESULT line is what the driver reads
        result = {"client": "ffmpeg", "ok": False, "errors": [f"{type(e).__name__}: {e}"]}
    for e in result["errors"]:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
