#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/seeds/<target>/: small, valid examples of what
each target parses. Offers come from tests/it/fixtures and from the offers real publishers
sent in an interop run (pass its logs directory to refresh them); the binary seeds (STUN, RTP,
RTCP, continuity programs, sdpfrags) are built here.

    fuzz/make_seeds.py [INTEROP_LOGS_DIR]
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import sys
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
SEEDS = FUZZ / "seeds"
UFRAG, PWD = "fuzzufrag", "fuzzpasswordfuzzpassword"  # src/fuzzing.rs FUZZ_UFRAG, FUZZ_PWD


def write(target: str, name: str, data: bytes) -> None:
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# ---------------------------------------------------------------- SDP offers


def offers(logs: Path | None) -> None:
    """Byte 0 picks the ingest's video codecs (bit i: H264, VP8, VP9, AV1, H265)."""
    for p in sorted((REPO / "tests" / "it" / "fixtures").glob("*.sdp")):
        write("sdp_offer", p.stem, bytes([0x02]) + p.read_bytes())
    if logs:
        for p in sorted(logs.glob("*/offer*.sdp")):
            name = f"{p.parent.name}-{p.stem}"
            selector = 0x01 if "h264" in p.parent.name else 0x02
            write("sdp_offer", name, bytes([selector]) + p.read_bytes())


# ---------------------------------------------------------------- STUN


def stun_attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack(">HH", kind, len(value)) + value + b"\0" * pad


def binding(username: str, integrity: bool = True, fingerprint: bool = True,
            typ: int = 0x0001, extra: bytes = b"") -> bytes:
    """A STUN binding request as browsers send it (RFC 8445 section 7.1.2), with
    MESSAGE-INTEGRITY keyed by PWD and FINGERPRINT (RFC 5389 sections 15.4, 15.5)."""
    txid = bytes(range(12))
    attrs = stun_attr(0x0006, username.encode())  # USERNAME
    attrs += stun_attr(0x0024, struct.pack(">I", 1853824767))  # PRIORITY
    attrs += stun_attr(0x802A, struct.pack(">Q", 0x1122334455667788))  # ICE-CONTROLLING
    attrs += stun_attr(0x0025, b"")  # USE-CANDIDATE
    attrs += extra

    def header(length: int) -> bytes:
        return struct.pack(">HHI", typ, length, 0x2112A442) + txid

    if integrity:
        length = len(attrs) + 24
        mac = hmac.new(PWD.encode(), header(length) + attrs, hashlib.sha1).digest()
        attrs += stun_attr(0x0008, mac)
    if fingerprint:
        length = len(attrs) + 8
        crc = (zlib.crc32(header(length) + attrs) ^ 0x5354554E) & 0xFFFFFFFF
        attrs += stun_attr(0x8028, struct.pack(">I", crc))
    return header(len(attrs)) + attrs


def stun() -> None:
    write("stun_route", "binding-request", binding(f"{UFRAG}:remote1"))
    write("stun_route", "binding-request-no-integrity", binding(f"{UFRAG}:remote1", False, False))
    write("stun_route", "binding-request-other-ufrag", binding("otherufrag:remote1"))
    write("stun_route", "binding-request-no-colon", binding(UFRAG))
    write("stun_route", "binding-success-response", binding(f"{UFRAG}:remote1", typ=0x0101))
    write("stun_route", "binding-indication", binding(f"{UFRAG}:remote1", False, True, typ=0x0011))
    # Not STUN: the start of a DTLS ClientHello and an RTP packet, which the mux routes by address.
    write("stun_route", "dtls-client-hello", bytes([22, 0xFE, 0xFD]) + bytes(10) + b"\x00\x2f\x01")
    write("stun_route", "rtp", rtp(96, 1, 3000, 0xABCDEF01, b"\x65\x88\x84"))


# ---------------------------------------------------------------- RTP / RTCP


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False,
        padding: int = 0, ext: bytes = b"") -> bytes:
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if ext else 0)
    head = struct.pack(">BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    if ext:
        head += struct.pack(">HH", 0xBEDE, len(ext) // 4) + ext
    pad = (bytes(padding - 1) + bytes([padding])) if padding else b""
    return head + payload + pad


def sender_report(ssrc: int, rtp_time: int) -> bytes:
    body = struct.pack(">IIIIII", ssrc, 0xE7A3C4B1, 0x10000000, rtp_time, 100, 12000)
    sr = struct.pack(">BBH", 0x80, 200, len(body) // 4) + body
    cname = b"fuzz"
    chunk = struct.pack(">IBB", ssrc, 1, len(cname)) + cname
    chunk += bytes(4 - len(chunk) % 4)
    sdes = struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


def record(op: int, data: bytes) -> bytes:
    return struct.pack(">BH", op, len(data)) + data


def forward() -> None:
    v, a = 0x11111111, 0x22222222
    sps, pps, idr = b"\x67\x42\xe0\x1f\x8c\x8d", b"\x68\xce\x3c\x80", b"\x65\x88\x84\x00\x33"
    stap = b"\x78" + b"".join(struct.pack(">H", len(n)) + n for n in (sps, pps, idr))
    fu_start, fu_end = b"\x7c\x85" + bytes(40), b"\x7c\x45" + bytes(20)
    mid = b"\x10\x30"  # one-byte header extension: id 1 (mid), "0"
    h264 = [rtp(96, 100, 9000, v, stap, ext=mid + b"\x00\x00"), rtp(96, 101, 9000, v, fu_start),
            rtp(96, 102, 9000, v, fu_end, marker=True), rtp(96, 103, 12000, v, b"\x41\x9a\x00")]
    opus = [rtp(111, 7, 960 * i, a, b"\xfc" + bytes(40)) for i in range(3)]
    write("rtp_forward", "h264-and-opus",
          b"".join(record(0, p) for p in h264) + b"".join(record(4, p) for p in opus))
    padding_only = rtp(96, 104, 12000, v, b"", padding=32)
    write("rtp_forward", "padding-skipped-then-media",
          record(0, h264[0]) + record(1, padding_only) + record(0, rtp(96, 105, 15000, v, b"\x41\x9a")))
    write("rtp_forward", "sender-reports", record(0, h264[0]) + record(2, sender_report(v, 9000))
          + record(4, opus[0]) + record(6, sender_report(a, 0)))
    vp8_key = b"\x90\x80\x81\x23\x10\x02\x00\x9d\x01\x2a"  # X, 15-bit picture id, P=0
    write("rtp_forward", "reconnect",
          record(0, rtp(96, 65535, 1, v, vp8_key)) + record(3, b"")
          + record(0, rtp(96, 5, 777, 0x33333333, vp8_key)) + record(0, rtp(96, 6, 3777, 0x33333333, b"\x10\x01")))


def continuity() -> None:
    def step(op: int, ssrc_sel: int = 0, seq: int = 0, ts: int = 0) -> bytes:
        return struct.pack(">BBHI", op, ssrc_sel, seq, ts)

    write("continuity", "one-input", b"".join(step(0, 0, 100 + i, 3000 * i) for i in range(8)))
    write("continuity", "padding-skipped",
          step(0, 0, 10, 0) + step(1, 0, 11, 0) + step(1, 0, 12, 0) + step(0, 0, 13, 3000) + step(0, 0, 14, 6000))
    write("continuity", "reconnect-after-a-pause",
          step(0, 0, 500, 9000) + step(0, 0, 501, 12000) + step(3, 0, 1000) + step(2)
          + step(0, 1, 7, 100) + step(0, 1, 8, 3100) + step(4, 1, 0, 3100))
    write("continuity", "wrap-and-reorder",
          step(0, 0, 65534, 0) + step(0, 0, 65535, 1) + step(0, 0, 1, 3) + step(0, 0, 0, 2))
    write("continuity", "audio-clock", b"".join(step(0, 4, i, 960 * i) for i in range(4)))


# ---------------------------------------------------------------- sdpfrag (RFC 8840)


def sdpfrags() -> None:
    cand = "a=candidate:1 1 UDP 2122252543 127.0.0.1 40519 typ host\r\n"
    write("sdpfrag", "ice-restart",
          ("a=ice-ufrag:newufrag1\r\na=ice-pwd:newpasswordnewpassword12\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
           f"a=mid:0\r\n{cand}a=end-of-candidates\r\n").encode())
    write("sdpfrag", "trickle-candidates",
          ("a=ice-ufrag:3f94862e\r\na=ice-pwd:fff82bad2a542af9b1becbd0c86ef10d\r\n"
           f"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{cand}").encode())
    write("sdpfrag", "end-of-candidates", b"a=ice-ufrag:3f94862e\r\na=ice-pwd:x\r\na=end-of-candidates\r\n")
    write("sdpfrag", "media-level-credentials",
          b"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=ice-ufrag:mediaufrag\r\na=ice-pwd:mediapasswordmediapass\r\n")


def read_api() -> None:
    """events_query: a Last-Event-ID line, then the query string GET /events takes."""
    for name, data in {
        "resume": "41\nfrom_seq=3&epoch=7",
        "filter": "\ningest_ids=cam,cam2&kinds=session_stats,ingest_registered",
        "token": "\ntoken=1893456000.00112233445566778899aabbccddeeff."
                 + "ab" * 32 + "&ingest_ids=cam",
        "escaped": "\nkinds=%73ession_stats&from_seq=%31",
    }.items():
        write("events_query", name, data.encode())


def routed_calls() -> None:
    """routed_call: the JSON bodies nodes send each other, and answers."""
    for name, data in {
        "teardown": '{"op":"teardown","ingest":"cam","detail":"operator"}',
        "layer": '{"op":"select_layer","ingest":"cam","rid":"h"}',
        "limits": '{"op":"set_limits","ingest":"cam","max_bitrate_bps":2000000,'
                  '"max_session_secs":null}',
        "whip-publish": '{"op":"whip_publish","ingest":"cam","offer":"v=0\\r\\n",'
                        '"peer":"192.0.2.1:40000"}',
        "whip-patch": '{"op":"whip_patch","ingest":"cam",'
                      '"session":"67e55044-10b1-426f-9247-bb680e5fe0c8","if_match":"*",'
                      '"fragment":"a=ice-ufrag:x\\r\\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\\r\\n"}',
        "whip-delete": '{"op":"whip_delete","ingest":"cam",'
                       '"session":"67e55044-10b1-426f-9247-bb680e5fe0c8"}',
        "answer-http": '{"outcome":"http","status":201,"headers":[["etag","\\"x\\""]],'
                       '"body":"v=0"}',
    }.items():
        write("routed_call", name, data.encode())


def store_records() -> None:
    """store_record: registrations (current, and an older one with a clear token) and an
    output-stream checkpoint, as the stores hold them."""
    salted = "sha256:" + "00" * 16 + ":" + "ab" * 32
    for name, data in {
        "ingest": '{"id":"cam","video_target":"127.0.0.1:5004","audio_target":null,'
                  f'"bearer_token_hash":"{salted}","labels":{{"room":"a"}},'
                  '"video_codecs":["H264"],"audio_codecs":["opus"],"limits":{},'
                  '"redirect_url":null,"simulcast_layer":"h","replace_publisher":false,'
                  '"created_at_ms":1700000000000,"limits_override":null,"layer_override":null}',
        "ingest-clear-token": '{"id":"old","bearer_token":"s3cret","video_codecs":["VP8"],'
                              '"audio_codecs":["OPUS"],"created_at_ms":1}',
        "stream": '{"ingest_id":"cam","at_ms":1700000000000,'
                  '"video":{"ssrc":1234,"last":{"seq":65535,"ts":4294967295,'
                  '"at_unix_ms":1700000000000},"packets_per_sec":250.0},'
                  '"audio":{"ssrc":99,"last":null,"packets_per_sec":50.0}}',
    }.items():
        write("store_record", name, data.encode())


def main() -> int:
    logs = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    offers(logs)
    stun()
    forward()
    continuity()
    sdpfrags()
    read_api()
    routed_calls()
    store_records()
    for d in sorted(SEEDS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
