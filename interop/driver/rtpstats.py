"""The consumer side of a loss measurement: a UDP sink on a gateway's RTP targets, and the pure
functions that compare what it received with what the lossy relay (lossy.py) saw the
publisher send.

The sink binds each target's RTP port and its RTCP port (+1) and records per RTP packet:
(arrival time, SSRC, sequence number, timestamp, payload type, padding-only?). Arrival times
are the kernel's receive timestamps (SO_TIMESTAMPNS) where available, so the Python thread's
scheduling does not show in repair times.

What is computed, per kind (video, audio), summed over SSRCs:
  - sent: the unique sequence numbers of the publisher's media packets at the relay (payload
    type of the kind's codec, or of RED for audio; no P bit: Chromium's media packets never
    carry it, its padding-only bandwidth probes do), and of those, `dropped` (the relay's
    model dropped the first copy) and `never_delivered` (no copy got through; exact for
    retransmissions on the media SSRC, an upper bound when the publisher repairs with RTX,
    whose original sequence number is encrypted);
  - received: unique (SSRC, sequence number) of packets at the consumer that are not padding
    only; lost = sent - received, as % of sent;
  - sequence gaps (RFC 3550 A.3): extended highest - lowest + 1 - unique received, over every
    packet the consumer got (padding included), as % of expected. Gaps beyond the media lost
    are false holes: numbers the gateway forwarded no media for (e.g. a lost padding probe);
  - duplicates: packets - unique, at the consumer;
  - repair time: for each packet that arrives after a higher sequence number did, its arrival
    minus the arrival of the first packet after the hole (how long the hole stayed open at
    the consumer); p50 / p99 / max;
  - resent lag: for a media packet the relay dropped and whose retransmission on the same
    SSRC got through, how far behind the newest delivered sequence number it arrived (a
    receiver's SRTP replay window rejects what is too far behind);
  - audio recoverability (RED): a sequence number the relay dropped (no copy delivered) is
    recoverable when the publisher sent RED and one of the next `red_distance` audio packets
    was delivered. Recovered = recoverable ones the consumer has, matched by sequence number
    (the gateway's constant sequence offset is found by pairing packets by time: match_offset).
"""

from __future__ import annotations

import bisect
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value


@dataclass(frozen=True)
class SinkPacket:
    t: float  # arrival, seconds (kernel receive time, CLOCK_REALTIME)
    ssrc: int
    seq: int
    ts: int
    pt: int
    padding_only: bool


class RtpSink:
    """A thread receiving on each kind's RTP port (and RTCP port + 1). close() stops it."""

    def __init__(self, ports: dict[str, int], ip: str = "127.0.0.1") -> None:
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.packets: dict[str, list[SinkPacket]] = {k: [] for k in ports}
        self.rtcp: dict[str, int] = {k: 0 for k in ports}
        self.other = 0
        self.lock = threading.Lock()
        self.kernel_time = True
        try:
            for kind, port in ports.items():
                for rtcp in (False, True):
                    sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self.socks.append(sk)
                    for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                        try:
                            sk.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                            break
                        except OSError:
                            continue
                    try:
                        sk.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    except OSError:
                        self.kernel_time = False
                    sk.bind((ip, port + int(rtcp)))
                    sk.setblocking(False)
                    self.sel.register(sk, selectors.EVENT_READ, (kind, rtcp))
        except OSError:
            self.close()
            raise
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rtp-sink", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(16)
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.1):
                sk, (kind, rtcp) = key.fileobj, key.data
                while True:
                    try:
                        data, anc, _, _ = sk.recvmsg(65536, space)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        return
                    t = None
                    for level, typ, raw in anc:
                        if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(raw) >= 16:
                            sec, nsec = struct.unpack_from("qq", raw)
                            t = sec + nsec / 1e9
                    if t is None:
                        t = time.time()
                    self._record(kind, rtcp, data, t)

    def _record(self, kind: str, rtcp: bool, data: bytes, t: float) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            with self.lock:
                self.other += 1
            return
        if rtcp or 192 <= data[1] <= 223:
            with self.lock:
                self.rtcp[kind] += 1
            return
        seq, ts, ssrc = struct.unpack_from(">HII", data, 2)
        with self.lock:
            self.packets[kind].append(SinkPacket(t, ssrc, seq, ts, data[1] & 0x7F, padding_only(data)))

    def snapshot(self) -> dict[str, list[SinkPacket]]:
        with self.lock:
            return {k: list(v) for k, v in self.packets.items()}

    def close(self) -> None:
        if getattr(self, "stop", None) is not None:
            self.stop.set()
            self.thread.join(2)
        self.sel.close()
        for sk in self.socks:
            sk.close()


def padding_only(data: bytes) -> bool:
    """An RTP packet whose payload is all padding (P bit set, padding length = payload)."""
    if not data[0] & 0x20:
        return False
    cc = data[0] & 0x0F
    offset = 12 + 4 * cc
    if data[0] & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * struct.unpack_from(">H", data, offset + 2)[0]
    return offset + data[-1] >= len(data)


# ---- pure helpers --------------------------------------------------------------------------------

def unwrap(seqs) -> list[int]:
    """16-bit sequence numbers in arrival order -> extended numbers (each the candidate closest
    to the highest so far)."""
    out: list[int] = []
    top = None
    for s in seqs:
        if top is None:
            ext = s
        else:
            ext = (top & ~0xFFFF) | s
            if ext - top > 0x8000:
                ext -= 0x10000
            elif top - ext > 0x8000:
                ext += 0x10000
        out.append(ext)
        top = ext if top is None else max(top, ext)
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q / 100.0 * (len(v) - 1)))))]


def consumer_view(packets: list[SinkPacket]) -> dict:
    """Per-SSRC sequence accounting of the packets a consumer got (see the module docstring)."""
    by_ssrc: dict[int, list[SinkPacket]] = {}
    for p in packets:
        by_ssrc.setdefault(p.ssrc, []).append(p)
    total = {"packets": 0, "unique": 0, "unique_media": 0, "padding_only": 0, "expected": 0,
             "gaps": 0, "duplicates": 0, "late": 0, "ssrcs": len(by_ssrc)}
    repair: list[float] = []
    for pkts in by_ssrc.values():
        pkts.sort(key=lambda p: p.t)
        ext = unwrap([p.seq for p in pkts])
        uniq = set(ext)
        media = {e for e, p in zip(ext, pkts) if not p.padding_only}
        total["packets"] += len(pkts)
        total["unique"] += len(uniq)
        total["unique_media"] += len(media)
        total["padding_only"] += sum(p.padding_only for p in pkts)
        total["expected"] += max(uniq) - min(uniq) + 1
        total["gaps"] += max(uniq) - min(uniq) + 1 - len(uniq)
        total["duplicates"] += len(pkts) - len(uniq)
        # Repair time: prefix maxima are non-decreasing; the hole before e opened at the first
        # arrival whose number exceeded e.
        top, tops = None, []
        seen: set[int] = set()
        for e, p in zip(ext, pkts):
            if top is not None and e < top and e not in seen:
                i = bisect.bisect_right(tops, e)
                repair.append(p.t - pkts[i].t)
                total["late"] += 1
            seen.add(e)
            top = e if top is None else max(top, e)
            tops.append(top)
    total["repair_ms"] = [round(x * 1000, 3) for x in repair]
    return total


def sent_view(records: list, roles: dict, kind: str) -> dict:
    """What the publisher sent of `kind` at the relay: unique media sequence numbers per SSRC,
    dropped first copies, never delivered; RED use; padding and RTX datagrams."""
    media: dict[int, dict[int, bool]] = {}  # ssrc -> seq -> delivered (any copy)
    first_dropped: dict[int, set[int]] = {}
    out = {"datagrams": 0, "media_datagrams": 0, "padding": 0, "rtx": 0, "red": 0, "fec": 0, "unknown_pt": 0}
    for r in records:
        kr = roles.get(r.pt)
        if kr is None:
            if kind == "video":
                out["unknown_pt"] += 1
            continue
        k, role, _ = kr
        if k != kind:
            continue
        out["datagrams"] += 1
        if r.padding:
            out["padding"] += 1
            continue
        if role in ("rtx", "fec"):
            out[role] += 1
            continue
        if role == "red":
            out["red"] += 1
        elif role != "media":
            continue
        out["media_datagrams"] += 1
        seqs = media.setdefault(r.ssrc, {})
        if r.seq not in seqs:
            seqs[r.seq] = False
            if not r.delivered:
                first_dropped.setdefault(r.ssrc, set()).add(r.seq)
        seqs[r.seq] = seqs[r.seq] or r.delivered
    out["sent"] = sum(len(s) for s in media.values())
    out["dropped"] = sum(len(s) for s in first_dropped.values())
    out["never_delivered"] = sum(1 for s in media.values() for ok in s.values() if not ok)
    out["ssrcs"] = len(media)
    out["_media"] = media
    return out


def repair_lags(records: list, roles: dict, kind: str) -> list[int]:
    """For each media packet whose first copy the relay dropped and a later copy got through on
    the same SSRC (a retransmission without RTX): how many sequence numbers behind the
    newest delivered one (padding included) it arrived at the gateway. A receiver's SRTP
    replay window (64 packets by default in webrtc-rs, libsrtp's 128) rejects older ones."""
    tops: dict[int, int] = {}
    dropped: dict[int, set[int]] = {}
    seen: dict[int, set[int]] = {}
    lags = []
    for r in records:
        kr = roles.get(r.pt)
        if kr is None or kr[0] != kind or kr[1] not in ("media", "red"):
            continue
        top = tops.get(r.ssrc)
        e = unwrap([top, r.seq])[1] if top is not None else r.seq
        ssrc_seen, ssrc_dropped = seen.setdefault(r.ssrc, set()), dropped.setdefault(r.ssrc, set())
        if not r.padding and e not in ssrc_seen and not r.delivered:
            ssrc_dropped.add(e)
        if r.delivered:
            if not r.padding and e in ssrc_dropped:
                ssrc_dropped.discard(e)
                lags.append(max(0, (top if top is not None else e) - e))
            tops[r.ssrc] = e if top is None else max(top, e)
        ssrc_seen.add(e)
    return lags


def recoverable(media: dict[int, dict[int, bool]], distance: int) -> dict[int, set[int]]:
    """Per SSRC: sequence numbers never delivered with one of the next `distance` delivered."""
    out: dict[int, set[int]] = {}
    for ssrc, seqs in media.items():
        for s, ok in seqs.items():
            if not ok and any(seqs.get((s + k) & 0xFFFF) for k in range(1, distance + 1)):
                out.setdefault(ssrc, set()).add(s)
    return out


def match_offset(sent: list, packets: list[SinkPacket], delay_s: float) -> dict[int, tuple[int, int]]:
    """Consumer SSRC -> (publisher SSRC, sequence offset). A gateway maps a publisher's
    sequence numbers onto its output by a constant per input (whipgate keeps it for audio,
    pion forwards them unchanged), but (seq, ts) pairs alone cannot fix it: audio numbers and
    timestamps are both linear, so every shift fits. Time does: each consumer packet is paired
    with the delivered publisher packet that left the relay closest to its arrival minus the
    relay's one-way delay, and the most common offset of those pairs wins. `sent`: the
    relay's delivered records of the kind (t, ssrc, seq)."""
    sent = sorted(sent, key=lambda r: r.t)
    times = [r.t + delay_s for r in sent]
    votes: dict[int, Counter] = {}
    for p in packets:
        i = bisect.bisect_left(times, p.t)
        near = [j for j in (i - 1, i) if 0 <= j < len(sent)]
        if not near:
            continue
        j = min(near, key=lambda k: abs(times[k] - p.t))
        if abs(times[j] - p.t) > 0.008:  # audio packets are 20 ms apart: only a clear pairing counts
            continue
        votes.setdefault(p.ssrc, Counter())[(sent[j].ssrc, (p.seq - sent[j].seq) & 0xFFFF)] += 1
    out = {}
    for cssrc, c in votes.items():
        (pssrc, dseq), n = c.most_common(1)[0]
        if n >= 10 and n >= 0.5 * sum(c.values()):
            out[cssrc] = (pssrc, dseq)
    return out


def audio_recovery(sent: dict, delivered: list, packets: list[SinkPacket], red_sent: bool, distance: int,
                   delay_s: float) -> dict:
    """Recoverable audio losses (RED) and how many of them the consumer has."""
    rec = recoverable(sent["_media"], distance) if red_sent else {}
    n_rec = sum(len(s) for s in rec.values())
    mapping = match_offset(delivered, packets, delay_s)
    have: dict[int, set[int]] = {}
    for p in packets:
        m = mapping.get(p.ssrc)
        if m:
            have.setdefault(m[0], set()).add((p.seq - m[1]) & 0xFFFF)
    recovered = sum(len(s & have.get(ssrc, set())) for ssrc, s in rec.items())
    never = {ssrc: {s for s, ok in seqs.items() if not ok} for ssrc, seqs in sent["_media"].items()}
    repaired = sum(len(s & have.get(ssrc, set())) for ssrc, s in never.items())
    return {"recoverable": n_rec, "recovered": recovered if mapping else None,
            "never_delivered_at_consumer": repaired if mapping else None, "matched": bool(mapping)}


def compare(records: list, roles: dict, sink: dict[str, list[SinkPacket]], red_distance: int = 1,
            delay_s: float = 0.0) -> dict:
    """The whole comparison for one run: per kind, sent (relay) vs received (consumer)."""
    out = {}
    for kind in ("video", "audio"):
        sent = sent_view(records, roles, kind)
        lags = repair_lags(records, roles, kind)
        con = consumer_view(sink.get(kind, []))
        lost = sent["sent"] - con["unique_media"]
        res = {
            "sent": sent["sent"], "dropped_uplink": sent["dropped"], "never_delivered": sent["never_delivered"],
            "padding_datagrams": sent["padding"], "rtx_datagrams": sent["rtx"], "red_datagrams": sent["red"],
            "fec_datagrams": sent["fec"], "publisher_ssrcs": sent["ssrcs"],
            "resent_lag_max": max(lags, default=None), "resent_over_64_behind": sum(x > 64 for x in lags),
            "received_unique_media": con["unique_media"], "lost": lost,
            "lost_pct": pct(lost, sent["sent"]),
            "expected": con["expected"], "gaps": con["gaps"], "gaps_pct": pct(con["gaps"], con["expected"]),
            "duplicates": con["duplicates"], "consumer_packets": con["packets"],
            "consumer_padding_only": con["padding_only"], "consumer_ssrcs": con["ssrcs"], "late": con["late"],
            "repair_p50_ms": percentile(con["repair_ms"], 50), "repair_p99_ms": percentile(con["repair_ms"], 99),
            "repair_max_ms": max(con["repair_ms"]) if con["repair_ms"] else None,
        }
        if kind == "audio":
            red = sent["red"] > 0
            res["red_sent"] = red
            delivered = [r for r in records if r.delivered and not r.padding
                         and roles.get(r.pt, ("", ""))[:2] in (("audio", "media"), ("audio", "red"))]
            res.update(audio_recovery(sent, delivered, sink.get(kind, []), red, red_distance, delay_s))
        out[kind] = res
    return out


def pct(a: float, b: float) -> float | None:
    return round(100.0 * a / b, 3) if b else None
