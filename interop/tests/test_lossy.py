"""The loss harness's pure parts: loss models, datagram classes, SDP rewriting, the consumer
accounting; and the relay itself on loopback."""

import socket
import struct
import time

import pytest

from driver.lossy import (GilbertElliott, LossyRelay, RandomLoss, UplinkRtp, classify, make_model, rtcp_kind,
                          transition_probabilities)
from driver.rtpstats import (SinkPacket, compare, consumer_view, match_offset, padding_only, recoverable, sent_view,
                             unwrap)
from driver.whip_proxy import point_candidates_at, pt_roles, sections, strip_candidates, udp_host_candidate

OFFER = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63", "c=IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0",
    "a=candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
    "a=rtpmap:111 opus/48000/2", "a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111",
    "a=end-of-candidates",
    "m=video 9 UDP/TLS/RTP/SAVPF 102 103", "c=IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0",
    "a=rtpmap:102 H264/90000", "a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102",
    "a=ssrc-group:FID 1111 2222", "a=ssrc:1111 cname:x", "a=ssrc:2222 cname:x", "",
])


def test_random_loss_rate_and_seed():
    m = RandomLoss(0.05, 7)
    drops = [m.drop() for _ in range(100_000)]
    assert abs(sum(drops) / len(drops) - 0.05) < 0.003
    again = RandomLoss(0.05, 7)
    assert drops[:500] == [again.drop() for _ in range(500)]


def test_gilbert_elliott_mean_loss_and_burst_length():
    r, q = transition_probabilities(0.05, 3.0)
    assert r == pytest.approx(1 / 3) and q == pytest.approx(0.05 / (3 * 0.95))
    m = GilbertElliott(0.10, 1, burst=3.0)
    drops = [m.drop() for _ in range(300_000)]
    assert abs(sum(drops) / len(drops) - 0.10) < 0.005
    bursts, run = [], 0
    for d in drops:
        if d:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert abs(sum(bursts) / len(bursts) - 3.0) < 0.1
    assert make_model("bursty", 0, 1).drop() is False


def test_classify_and_rtcp_kind():
    assert classify(b"\x00\x01" + b"\x00" * 18) == "stun"
    assert classify(b"\x16\xfe\xfd" + b"\x00" * 10) == "dtls"
    assert classify(bytes([0x80, 102]) + b"\x00" * 10) == "rtp"
    assert classify(bytes([0x80, 0x80 | 102]) + b"\x00" * 10) == "rtp"  # marker bit
    assert classify(bytes([0x81, 205]) + b"\x00" * 10) == "rtcp"
    assert rtcp_kind(bytes([0x81, 205, 0, 3])) == "nack"
    assert rtcp_kind(bytes([0x81, 206, 0, 2])) == "pli"
    assert rtcp_kind(bytes([0x8F, 205, 0, 5])) == "twcc"
    assert rtcp_kind(bytes([0x81, 201, 0, 7])) == "rr"


def test_sdp_candidates_stripped_and_pointed_at_the_relay():
    stripped = strip_candidates(OFFER)
    assert "a=candidate" not in stripped and "end-of-candidates" not in stripped
    assert stripped.endswith("\r\n") and "a=rtpmap:102 H264/90000" in stripped
    assert udp_host_candidate(OFFER) == ("127.0.0.1", 50000)
    pointed = point_candidates_at(OFFER, ("127.0.0.2", 4242))
    cands = [x for x in pointed.split("\r\n") if x.startswith("a=candidate")]
    assert cands == ["a=candidate:1 1 udp 2130706431 127.0.0.2 4242 typ host"] * 2  # one per section
    assert "tcp" not in pointed


def test_sections_and_roles():
    audio, video = sections(OFFER)
    assert audio.red_blocks == 1 and video.apt == {103: 102} and video.fid == [(1111, 2222)]
    roles = pt_roles(OFFER)
    assert roles[63] == ("audio", "red", "red") and roles[103] == ("video", "rtx", "rtx")
    assert roles[102] == ("video", "media", "h264")


def rtp(seq, padding=False, pad_only=False):
    first = 0xA0 if padding else 0x80
    pkt = bytes([first, 96]) + struct.pack(">HII", seq, 0, 1) + (b"\x00" * 3 + b"\x04" if pad_only else b"abc")
    return pkt


def test_padding_only():
    assert padding_only(rtp(1, True, True))
    assert not padding_only(rtp(1))


def test_unwrap():
    assert unwrap([65534, 65535, 0, 1, 65535]) == [65534, 65535, 65536, 65537, 65535]


def pk(t, seq, ssrc=1, ts=0, pad=False):
    return SinkPacket(t, ssrc, seq, ts, 96, pad)


def test_consumer_view_gaps_duplicates_repair():
    # 10..19 with 13 missing until 0.080 s after 14 arrived, 16 never, 18 twice.
    pkts = [pk(0.01 * i, s) for i, s in enumerate([10, 11, 12, 14, 15, 17, 18, 18, 19])]
    pkts.append(pk(0.03 + 0.080, 13))
    v = consumer_view(pkts)
    assert (v["expected"], v["unique"], v["gaps"], v["duplicates"], v["late"]) == (10, 9, 1, 1, 1)
    assert v["repair_ms"] == [pytest.approx(80.0)]


def test_sent_view_and_compare():
    roles = {96: ("video", "media", "h264"), 97: ("video", "rtx", "rtx"), 111: ("audio", "media", "opus")}
    recs = [UplinkRtp(0, 1, s, 0, 96, False, s != 3) for s in range(1, 6)]
    recs += [UplinkRtp(0, 1, 3, 0, 96, False, True)]  # a retransmission on the media SSRC
    recs += [UplinkRtp(0, 1, 6, 0, 96, True, False)]  # padding: not media
    recs += [UplinkRtp(0, 2, 9, 0, 97, False, True)]  # RTX
    s = sent_view(recs, roles, "video")
    assert (s["sent"], s["dropped"], s["never_delivered"], s["padding"], s["rtx"]) == (5, 1, 0, 1, 1)
    sink = {"video": [pk(0.1 * i, 100 + i, ssrc=7) for i in range(4)], "audio": []}
    m = compare(recs, roles, sink)
    assert m["video"]["lost"] == 1 and m["video"]["lost_pct"] == 20.0


def test_recoverable_with_red_distance():
    media = {5: {1: True, 2: False, 3: True, 4: False, 5: False, 6: False, 7: True}}
    assert recoverable(media, 1) == {5: {2, 6}}
    assert recoverable(media, 2) == {5: {2, 5, 6}}


def test_match_offset_by_time_not_by_linear_timestamps():
    sent = [UplinkRtp(100 + 0.02 * i, 9, 500 + i, 960 * i, 111, False, True) for i in range(60)]
    packets = [SinkPacket(100.001 + 0.02 * i, 4, 7000 + i, 33 + 960 * i, 111, False) for i in range(60)]
    assert match_offset(sent, packets, 0.0) == {4: (9, 6500)}


def test_relay_forwards_and_records_on_loopback():
    gw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gw.bind(("127.0.0.1", 0))
    gw.settimeout(2)
    relay = LossyRelay(make_model("none", 0, 1), delay_s=0.02, upstream=gw.getsockname())
    pub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pub.settimeout(2)
    try:
        t0 = time.monotonic()
        pub.sendto(rtp(42), relay.address)
        data, up = gw.recvfrom(2048)
        assert data == rtp(42) and time.monotonic() - t0 >= 0.019  # the one-way delay
        gw.sendto(bytes([0x81, 205, 0, 3]) + b"\x00" * 12, up)  # a NACK back to the publisher
        back, src = pub.recvfrom(2048)
        assert src == relay.address and back[1] == 205
        snap = relay.snapshot()
        assert [(r.seq, r.delivered) for r in snap["uplink_rtp"]] == [(42, True)]
        assert snap["downlink_rtcp"] == {"nack": 1}
        relay.end_uplink()
        pub.sendto(rtp(43), relay.address)
        with pytest.raises(socket.timeout):
            gw.settimeout(0.2)
            gw.recvfrom(2048)
    finally:
        relay.close()
        gw.close()
        pub.close()


def test_decode_errors_count_frames_not_lines():
    from driver.lossy_row import decode_errors

    log = "\n".join([
        "[sdp @ 0x1] max delay reached. need to consume packet", "[sdp @ 0x1] RTP: missed 3 packets",
        "[h264 @ 0x2] error while decoding MB 15 2",
        "[h264 @ 0x2] concealing 1954 DC, 1954 AC, 1954 MV errors in P frame",
        "x.sdp: corrupt decoded frame in stream 0", "[sdp @ 0x1] RTP: dropping old packet received too late",
        "[h264 @ 0x2] Missing reference picture, default is 0", "[sdp @ 0x1] RTP: missed 1 packets",
    ])
    e = decode_errors(log)
    assert (e["frames"], e["rtp_missed"], e["rtp_dropped_late"]) == (2, 4, 1)


def test_repair_lags_count_padding_in_the_sequence_space():
    from driver.rtpstats import repair_lags

    roles = {96: ("video", "media", "h264")}
    recs = [UplinkRtp(0, 1, 10, 0, 96, False, False)]  # dropped
    recs += [UplinkRtp(0, 1, s, 0, 96, True, True) for s in range(11, 80)]  # padding probes
    recs += [UplinkRtp(0, 1, 10, 0, 96, False, True)]  # the retransmission, 69 behind
    assert repair_lags(recs, roles, "video") == [69]
