"""A lossy UDP path between a publisher and a WebRTC gateway, in user space (this kernel has no
netem): loss models, and the relay that applies them and records the clear RTP/RTCP headers.

The relay listens on one UDP socket (the address the WHIP proxy, whip_proxy.py, writes into
the SDP answer). Each publisher source address gets its own upstream socket, connected to the
gateway's real media port, so the gateway sees one peer per publisher and its replies go back
to the right publisher from the listen socket. Every datagram is classified by its first byte
(RFC 7983: STUN 0-3, DTLS 20-63, RTP/RTCP 128-191; RTCP when the second byte is 192-223,
RFC 5761) and handed to the loss model of its direction: one model per direction for all
datagrams of all publishers. Optionally delayed by a fixed one-way delay (a timer queue served
by the relay's own loop, never a sleep per packet).

Recorded, without decrypting anything (SRTP leaves the 12-byte RTP header in clear, SRTCP the
first 8 bytes of the first packet of a compound):
  - uplink (publisher -> gateway) RTP: per datagram (time, SSRC, sequence number, timestamp,
    payload type, P bit, delivered?);
  - downlink (gateway -> publisher) RTCP: the type of the first packet (PT and FMT: 205/1 a
    generic NACK, 206/1 a PLI, 206/4 a FIR, 205/15 transport-wide feedback, 200 SR, 201 RR);
  - datagram counts per direction and class, sent and dropped.

Loss models (p: the mean loss rate):
  - "random": each datagram is dropped with probability p, independently.
  - "bursty": a Gilbert-Elliott chain with a Good state (never drops) and a Bad state (always
    drops). With mean burst length L (packets; default 3), the chain leaves Bad with
    probability r = 1/L per packet (bursts are geometric with mean 1/r = L), and enters Bad
    from Good with probability q chosen so that the stationary share of Bad equals p:
        pi_Bad = q / (q + r) = p   =>   q = p * r / (1 - p) = p / (L * (1 - p)).
    At p = 5 %, L = 3: q = 0.01754, r = 0.3333.
Both draw from their own seeded random.Random, so a seed reproduces the drop pattern over the
datagram index (not the packets themselves: what a publisher sends when depends on timing).

The end: at the first DELETE (the WHIP proxy calls end_uplink()), the uplink closes: nothing
the publishers send afterwards is relayed or counted, and the DELETE goes on once what they
sent before has left the delay queue. So the last packets before a DELETE are not lost to the
teardown (whipgate-load DELETEs while still sending), and "sent" means "sent in the session".

"Handshake spared" (the default): a flow's datagrams are never dropped, and the models are not
consulted, until the first RTP or RTCP datagram of that flow in either direction, i.e. until
ICE and DTLS are done: the measurement is about repairing media, not about how fast a lossy
connect completes. With spare_handshake=False every datagram from the first STUN check on is
subject to the model.
"""

from __future__ import annotations

import heapq
import itertools
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

# RTCP packet types (RFC 3550, 4585): (PT, FMT) -> name; FMT only for the feedback types.
RTCP_NAMES = {200: "sr", 201: "rr", 202: "sdes", 203: "bye", 204: "app", (205, 1): "nack",
              (205, 15): "twcc", (206, 1): "pli", (206, 4): "fir", (206, 15): "remb"}


class LossModel:
    """Never drops."""

    name = "none"
    p = 0.0

    def drop(self) -> bool:
        return False

    def describe(self) -> str:
        return "no loss"


class RandomLoss(LossModel):
    """Each datagram dropped with probability p, independently."""

    name = "random"

    def __init__(self, p: float, seed: int) -> None:
        self.p, self.rng = p, random.Random(seed)

    def drop(self) -> bool:
        return self.rng.random() < self.p

    def describe(self) -> str:
        return f"random {self.p * 100:g} %"


class GilbertElliott(LossModel):
    """Bursty loss: Good (no drop) and Bad (drop) states; see the module docstring for q, r."""

    name = "bursty"

    def __init__(self, p: float, seed: int, burst: float = 3.0) -> None:
        if not 0 <= p < 1 or burst < 1:
            raise ValueError(f"bursty loss needs 0 <= p < 1 and a burst length >= 1 ({p}, {burst})")
        self.p, self.burst, self.rng = p, burst, random.Random(seed)
        self.r, self.q = transition_probabilities(p, burst)
        self.bad = False

    def drop(self) -> bool:
        if self.bad:
            self.bad = self.rng.random() >= self.r
        else:
            self.bad = self.rng.random() < self.q
        return self.bad

    def describe(self) -> str:
        return f"bursty {self.p * 100:g} % (Gilbert-Elliott, mean burst {self.burst:g}, q={self.q:.4f}, r={self.r:.4f})"


def transition_probabilities(p: float, burst: float) -> tuple[float, float]:
    """(r, q) of the Gilbert-Elliott chain: Bad -> Good r = 1/L, Good -> Bad q = p r / (1 - p)."""
    r = 1.0 / burst
    return r, p * r / (1.0 - p)


def make_model(kind: str, p: float, seed: int, burst: float = 3.0) -> LossModel:
    if p <= 0:
        return LossModel()
    if kind == "random":
        return RandomLoss(p, seed)
    if kind == "bursty":
        return GilbertElliott(p, seed, burst)
    raise ValueError(f"unknown loss model {kind!r} (random, bursty)")


def classify(data: bytes) -> str:
    """RFC 7983 demultiplexing by the first byte, RFC 5761 for RTP vs RTCP."""
    if not data:
        return "other"
    b = data[0]
    if b <= 3:
        return "stun"
    if 20 <= b <= 63:
        return "dtls"
    if 128 <= b <= 191 and len(data) >= 8:
        return "rtcp" if 192 <= data[1] <= 223 else "rtp"
    return "other"


def rtcp_kind(data: bytes) -> str:
    """The name of the first RTCP packet of a (S)RTCP datagram, e.g. "nack", "pli", "rr"."""
    pt, fmt = data[1], data[0] & 0x1F
    return RTCP_NAMES.get((pt, fmt)) or RTCP_NAMES.get(pt) or f"pt{pt}/{fmt}"


@dataclass
class UplinkRtp:
    """One RTP datagram from a publisher, as the relay saw it."""

    t: float  # time.time() at the relay (wall clock: the sink's kernel timestamps are too)
    ssrc: int
    seq: int
    ts: int
    pt: int
    padding: bool  # the P bit (in clear under SRTP)
    delivered: bool  # False: the loss model dropped it


@dataclass
class Flow:
    """One publisher source address and its upstream socket."""

    publisher: tuple
    upstream: socket.socket
    media_seen: bool = False  # an RTP/RTCP datagram went either way: the handshake is over


@dataclass
class Counts:
    sent: dict = field(default_factory=dict)  # class -> datagrams received from the sender
    dropped: dict = field(default_factory=dict)

    def add(self, what: str, dropped: bool) -> None:
        self.sent[what] = self.sent.get(what, 0) + 1
        if dropped:
            self.dropped[what] = self.dropped.get(what, 0) + 1


class LossyRelay:
    """The relay thread. `upstream`: the gateway's media address (may be set later with
    set_upstream(), before the first datagram). close() stops it and closes its sockets."""

    def __init__(self, up: LossModel, down: LossModel | None = None, delay_s: float = 0.0,
                 listen_ip: str = "127.0.0.1", upstream_ip: str = "127.0.0.1",
                 spare_handshake: bool = True, upstream: tuple | None = None) -> None:
        self.up, self.down = up, down or LossModel()
        self.delay_s, self.spare_handshake = delay_s, spare_handshake
        self.upstream_ip, self.upstream = upstream_ip, upstream
        self.lock = threading.Lock()
        self.uplink_rtp: list[UplinkRtp] = []
        self.downlink_rtcp: dict[str, int] = {}  # first packet type -> datagrams delivered
        self.downlink_rtcp_dropped: dict[str, int] = {}
        self.counts = {"up": Counts(), "down": Counts()}
        self.flows: dict[tuple, Flow] = {}
        self.by_fd: dict[int, Flow] = {}
        self.queue: list = []  # (due, n, socket, data, address or None, "up" / "down")
        self.tiebreak = itertools.count()
        self.sel = selectors.DefaultSelector()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._buffers(self.sock)
        self.sock.bind((listen_ip, 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.uplink_closed_at: float | None = None  # time.time() of the first DELETE (end_uplink)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lossy-relay", daemon=True)
        self.thread.start()

    @staticmethod
    def _buffers(sk: socket.socket) -> None:
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                sk.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                break
            except OSError:
                continue

    def set_upstream(self, addr: tuple) -> None:
        with self.lock:
            self.upstream = addr

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                timeout = 0.2
                if self.queue:
                    timeout = max(0.0, min(timeout, self.queue[0][0] - time.monotonic()))
                for key, _ in self.sel.select(timeout):
                    self._drain(key.fileobj)
                self._flush(time.monotonic())
        except BaseException as e:  # reported by close()
            self.error = e

    def _drain(self, sk: socket.socket) -> None:
        for _ in range(64):  # a batch per wake-up, then the timers
            try:
                data, src = sk.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if sk is self.sock:
                self._uplink(data, src)
            else:
                self._downlink(data, self.by_fd.get(sk.fileno()))

    def _flow(self, publisher: tuple) -> Flow | None:
        flow = self.flows.get(publisher)
        if flow is None:
            with self.lock:
                upstream = self.upstream
            if upstream is None:
                return None
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._buffers(up)
            up.bind((self.upstream_ip, 0))
            up.connect(upstream)
            up.setblocking(False)
            flow = Flow(publisher, up)
            self.flows[publisher] = flow
            self.by_fd[up.fileno()] = flow
            self.sel.register(up, selectors.EVENT_READ, None)
        return flow

    def _decide(self, flow: Flow, what: str, model: LossModel) -> bool:
        """True: drop. The handshake (before any RTP/RTCP on the flow) is spared by default."""
        if what in ("rtp", "rtcp"):
            flow.media_seen = True
        if self.spare_handshake and not flow.media_seen:
            return False
        return model.drop()

    def _uplink(self, data: bytes, src: tuple) -> None:
        if self.uplink_closed_at is not None:
            return
        flow = self._flow(src)
        if flow is None:
            return  # no gateway known yet: nothing to relay to
        what = classify(data)
        drop = self._decide(flow, what, self.up)
        now = time.monotonic()
        with self.lock:
            self.counts["up"].add(what, drop)
            if what == "rtp" and len(data) >= 12:
                seq, ts, ssrc = struct.unpack_from(">HII", data, 2)
                self.uplink_rtp.append(UplinkRtp(time.time(), ssrc, seq, ts, data[1] & 0x7F, bool(data[0] & 0x20), not drop))
        if not drop:
            self._send(now, flow.upstream, data, None, "up")

    def _downlink(self, data: bytes, flow: Flow | None) -> None:
        if flow is None:
            return
        what = classify(data)
        drop = self._decide(flow, what, self.down)
        now = time.monotonic()
        with self.lock:
            self.counts["down"].add(what, drop)
            if what == "rtcp":
                kind = rtcp_kind(data)
                target = self.downlink_rtcp_dropped if drop else self.downlink_rtcp
                target[kind] = target.get(kind, 0) + 1
        if not drop:
            self._send(now, self.sock, data, flow.publisher, "down")

    def _send(self, now: float, sk: socket.socket, data: bytes, addr: tuple | None, direction: str) -> None:
        if self.delay_s > 0:
            heapq.heappush(self.queue, (now + self.delay_s, next(self.tiebreak), sk, data, addr, direction))
        else:
            self._out(sk, data, addr)

    def _flush(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, sk, data, addr, _ = heapq.heappop(self.queue)
            self._out(sk, data, addr)

    def end_uplink(self, limit_s: float = 1.0) -> bool:
        """A publisher DELETEs: from now on nothing more is relayed or recorded uplink (what a
        publisher sends after ending its session is not media it published), and this returns
        once what it sent before has left the delay queue (polling, at most limit_s)."""
        with self.lock:
            if self.uplink_closed_at is None:
                self.uplink_closed_at = time.time()
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if not any(entry[-1] == "up" for entry in list(self.queue)):
                return True
            time.sleep(0.01)
        return False

    @staticmethod
    def _out(sk: socket.socket, data: bytes, addr: tuple | None) -> None:
        try:
            if addr is None:
                sk.send(data)
            else:
                sk.sendto(data, addr)
        except OSError:
            pass  # e.g. the gateway's port closed at the end (ICMP unreachable on a connected socket)

    # ------------------------------------------------------------------ results

    def snapshot(self) -> dict:
        """Everything recorded so far (copies)."""
        with self.lock:
            return {
                "uplink_rtp": list(self.uplink_rtp),
                "downlink_rtcp": dict(self.downlink_rtcp),
                "downlink_rtcp_dropped": dict(self.downlink_rtcp_dropped),
                "datagrams": {d: {"sent": dict(c.sent), "dropped": dict(c.dropped)} for d, c in self.counts.items()},
                "flows": len(self.flows),
            }

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sel.close()
        for flow in self.flows.values():
            flow.upstream.close()
        self.sock.close()
        if self.error is not None:
            raise RuntimeError(f"lossy relay failed: {self.error!r}") from self.error


class LossyPath:
    """The relay and the WHIP proxy (whip_proxy.py) in front of one gateway's HTTP address:
    publishers POST to http://{http}/whip/..., their media then crosses the relay.
    close() stops both (the relay's error, if its thread died, is raised there)."""

    def __init__(self, gateway_http: str, up: LossModel, down: LossModel | None = None, delay_s: float = 0.0,
                 spare_handshake: bool = True, static_dir=None, listen_ip: str = "127.0.0.1") -> None:
        from .whip_proxy import WhipProxy

        self.relay = LossyRelay(up, down, delay_s, listen_ip=listen_ip, spare_handshake=spare_handshake)
        try:
            self.proxy = WhipProxy(gateway_http, self.relay, static_dir, listen_ip)
        except BaseException:
            self.relay.close()
            raise
        self.http = self.proxy.address

    def close(self) -> None:
        try:
            self.proxy.close()
        finally:
            self.relay.close()
