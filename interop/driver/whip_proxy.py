"""A small WHIP-aware HTTP proxy that puts the lossy relay (lossy.py) into the media path of
any WHIP gateway, ICE-lite (whipgate) or full ICE (pion-whip-ref), the same way:

  - every request (POST, PATCH, DELETE, OPTIONS, GET) is forwarded to the real gateway;
  - the offer (POST) and trickle fragments (PATCH) lose their `a=candidate` and
    `a=end-of-candidates` lines, so the gateway never learns the publisher's own address: an
    ICE-lite gateway learns the relay's upstream socket from the checks, a full-ICE one learns
    it as a peer-reflexive candidate, and neither ever sends to the publisher directly;
  - the answer (and an ICE restart's fragment) gets its candidates replaced by one UDP host
    candidate on the relay's listen address; the gateway's own UDP host candidate becomes the
    relay's upstream (TCP candidates are dropped: the relay is UDP only);
  - a Location that names the gateway's own address is made relative, so DELETE and PATCH come
    back through the proxy; a relative one is left as it is;
  - a DELETE closes the relay's uplink (lossy.LossyRelay.end_uplink) and is held until what
    the publisher sent before it has left the relay's delay queue: those packets reach the
    gateway before it ends the session, as on a network where the HTTP request does not
    overtake them. Without it a publisher that DELETEs while still sending (whipgate-load)
    would lose its last frame to the teardown, not to the loss model.

Files under /_lossy/ are served from `static_dir` (the harness's publish page), so a page and
its WHIP endpoint share one origin for any gateway. Every exchange is recorded (method, path,
status, offer as sent by the publisher, answer as received from the gateway) for the
harness: a 4xx/5xx POST is a failure, and the SDPs say which payload types carry what.
"""

from __future__ import annotations

import http.client
import mimetypes
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

STATIC_PREFIX = "/_lossy/"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "trailer",
              "upgrade", "proxy-connection"}


# ---- SDP ---------------------------------------------------------------------------------------

@dataclass
class Section:
    """One m= section (or the session part of a fragment, kind "")."""

    kind: str
    codecs: dict[int, str] = field(default_factory=dict)  # PT -> encoding name, lower case
    apt: dict[int, int] = field(default_factory=dict)  # RTX PT -> the PT it repairs
    ssrcs: list[int] = field(default_factory=list)
    fid: list[tuple[int, int]] = field(default_factory=list)  # (media SSRC, RTX SSRC)
    red_blocks: int | None = None  # redundancy from the red fmtp "111/111" -> 1


def sections(sdp: str) -> list[Section]:
    out: list[Section] = []
    cur = Section("")
    for line in sdp.splitlines():
        if line.startswith("m="):
            cur = Section(line[2:].split(" ", 1)[0])
            out.append(cur)
            continue
        m = re.match(r"a=rtpmap:(\d+) ([^/\s]+)", line)
        if m:
            cur.codecs[int(m.group(1))] = m.group(2).lower()
            continue
        m = re.match(r"a=fmtp:(\d+) (.*)", line)
        if m:
            pt, params = int(m.group(1)), m.group(2)
            a = re.search(r"apt=(\d+)", params)
            if a:
                cur.apt[pt] = int(a.group(1))
            elif re.fullmatch(r"\d+(/\d+)+", params.strip()):
                cur.red_blocks = params.strip().count("/")
            continue
        m = re.match(r"a=ssrc-group:FID (\d+) (\d+)", line)
        if m:
            cur.fid.append((int(m.group(1)), int(m.group(2))))
            continue
        m = re.match(r"a=ssrc:(\d+) ", line)
        if m and int(m.group(1)) not in cur.ssrcs:
            cur.ssrcs.append(int(m.group(1)))
    return out


def role_of(codec: str) -> str:
    if codec == "rtx":
        return "rtx"
    if codec == "red":
        return "red"
    if codec in ("ulpfec", "flexfec-03", "flexfec"):
        return "fec"
    if codec in ("telephone-event", "cn"):
        return "other"
    return "media"


def pt_roles(answer: str) -> dict[int, tuple[str, str, str]]:
    """PT -> (kind, role, codec) for what the answer accepted; role: media, rtx, red, fec, other."""
    roles = {}
    for s in sections(answer):
        for pt, codec in s.codecs.items():
            roles[pt] = (s.kind, role_of(codec), codec)
    return roles


def strip_candidates(sdp: str) -> str:
    keep = [x for x in re.split(r"\r?\n", sdp) if not x.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(keep)


def udp_host_candidate(sdp: str) -> tuple[str, int] | None:
    """The first UDP candidate of `sdp` (the gateway's media address)."""
    for line in sdp.splitlines():
        m = re.match(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\w+)", line, re.I)
        if m:
            return m.group(1), int(m.group(2))
    return None


def point_candidates_at(sdp: str, addr: tuple[str, int]) -> str:
    """Each section's candidates replaced by one UDP host candidate on `addr`."""
    out, placed = [], False
    eol = "\r\n" if "\r\n" in sdp else "\n"
    for line in sdp.split(eol):
        if line.startswith("m="):
            placed = False
        if line.startswith("a=candidate:"):
            if not placed:
                out.append(f"a=candidate:1 1 udp 2130706431 {addr[0]} {addr[1]} typ host")
                placed = True
            continue
        out.append(line)
    return eol.join(out)


# ---- the proxy -----------------------------------------------------------------------------------

@dataclass
class Exchange:
    method: str
    path: str
    status: int = 0
    error: str = ""
    offer: str = ""  # as the publisher sent it (POST) or the fragment (PATCH)
    answer: str = ""  # as the gateway answered


class WhipProxy:
    """HTTP on listen_ip:0 in front of `upstream` ("host:port"), feeding `relay` the gateway's
    media address. `address`: "ip:port". close() stops it."""

    def __init__(self, upstream: str, relay, static_dir: Path | None = None, listen_ip: str = "127.0.0.1") -> None:
        self.upstream, self.relay, self.static_dir = upstream, relay, static_dir
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):  # quiet: the harness records what matters
                pass

            def do_GET(self):
                if self.path.startswith(STATIC_PREFIX) and proxy.static_dir is not None:
                    return proxy.serve_static(self)
                proxy.forward(self)

            do_POST = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_PUT = lambda self: proxy.forward(self)

        self.server = ThreadingHTTPServer((listen_ip, 0), Handler)
        self.server.daemon_threads = True
        self.address = f"{listen_ip}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="whip-proxy", daemon=True)
        self.thread.start()

    def serve_static(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path[len(STATIC_PREFIX):].split("?", 1)[0]
        path = (self.static_dir / name).resolve()
        if self.static_dir.resolve() not in path.parents or not path.is_file():
            return self.reply(h, 404, {"Content-Type": "text/plain"}, b"not found")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.reply(h, 200, {"Content-Type": ctype, "Cache-Control": "no-store"}, path.read_bytes())

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, headers: dict | list, body: bytes) -> None:
        h.send_response(status)
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        ex = Exchange(h.command, h.path)
        if h.command == "DELETE":
            self.relay.end_uplink(self.relay.delay_s + 0.5)
        if ctype in ("application/sdp", "application/trickle-ice-sdpfrag") and body:
            ex.offer = body.decode(errors="replace")
            body = strip_candidates(ex.offer).encode()
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request(h.command, h.path, body=body if body or h.command in ("POST", "PATCH", "PUT") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            status = resp.status
        except OSError as e:
            ex.error = f"{type(e).__name__}: {e}"
            with self.lock:
                self.exchanges.append(ex)
            return self.reply(h, 502, {"Content-Type": "text/plain"}, f"whip proxy: {ex.error}".encode())
        finally:
            conn.close()
        ex.status = status
        rtype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if rtype in ("application/sdp", "application/trickle-ice-sdpfrag") and data:
            ex.answer = data.decode(errors="replace")
            gateway = udp_host_candidate(ex.answer)
            if gateway is not None:
                self.relay.set_upstream(gateway)
            data = point_candidates_at(ex.answer, self.relay.address).encode()
        out_headers = [(k, self.local_location(v) if k.lower() == "location" else v) for k, v in out_headers]
        with self.lock:
            self.exchanges.append(ex)
        self.reply(h, status, out_headers, data)

    def local_location(self, value: str) -> str:
        """A Location naming the gateway itself, made relative (it then resolves against the proxy)."""
        u = urlsplit(value)
        if u.netloc and u.netloc == self.upstream:
            return u.path + (f"?{u.query}" if u.query else "")
        return value

    def posts(self) -> list[Exchange]:
        with self.lock:
            return [e for e in self.exchanges if e.method == "POST" and not e.path.startswith(STATIC_PREFIX)]

    def roles(self) -> dict[int, tuple[str, str, str]]:
        """PT -> (kind, role, codec), merged over every answer (one publisher type per run)."""
        out: dict = {}
        for e in self.posts():
            if e.answer:
                out.update(pt_roles(e.answer))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
