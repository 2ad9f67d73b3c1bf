"""The FFmpeg WHIP and libdatachannel (OBS) rows: their specs and command lines, what the
FFmpeg wrapper reads from the wire and from FFmpeg's log, the gateway timings, the table."""

from driver.control import session_timings
from driver.publishers import CLIENTS, FfmpegWhip, Libdatachannel
from driver.scenario import scenario_for
from driver.spec import ROWS
from ffmpeg_whip_publish import KNOWN_DELETE_READ_FAILURE, MUXER_READY, STREAM_STATS, parse_http
from render_table import render


class NoProcs:
    def watch_dir(self, _):
        pass


def test_rows_and_their_scenarios():
    kinds = {n: type(scenario_for(ROWS[n])).__name__ for n in ROWS if n.startswith(("ffmpeg-", "libdatachannel-"))}
    assert kinds == {
        "ffmpeg-whip-h264": "Scenario", "ffmpeg-whip-h264-cluster": "Cluster",
        "libdatachannel-h264": "Scenario", "libdatachannel-h264-nocands": "Scenario",
        "libdatachannel-h264-cluster": "Cluster", "libdatachannel-h264-307": "Cluster",
    }
    assert all(ROWS[n].token for n in kinds)
    assert ROWS["ffmpeg-whip-h264-cluster"].cluster == ROWS["libdatachannel-h264-cluster"].cluster == "proxy"
    assert ROWS["libdatachannel-h264-307"].cluster == "redirect"
    assert not ROWS["libdatachannel-h264-nocands"].offer_candidates and ROWS["libdatachannel-h264"].offer_candidates
    assert CLIENTS["ffmpeg"] is FfmpegWhip and CLIENTS["libdatachannel"] is Libdatachannel


def test_libdatachannel_command(tmp_path):
    spec = ROWS["libdatachannel-h264-cluster"]
    cmd = Libdatachannel(spec, 8.0, tmp_path, tmp_path / "x.png").command("127.0.0.1:1", "cam", NoProcs())
    assert cmd[:2] == ["timeout", "-s"] and cmd[cmd.index("--offer-candidates") + 1] == "no"
    assert "--delete-without-token" in cmd and cmd[cmd.index("--token") + 1] == spec.token
    assert cmd[cmd.index("--url") + 1] == "http://127.0.0.1:1/whip/cam"
    plain = Libdatachannel(ROWS["libdatachannel-h264"], 8.0, tmp_path, tmp_path / "x.png").command(
        "127.0.0.1:1", "cam", NoProcs())
    assert plain[plain.index("--offer-candidates") + 1] == "yes" and "--delete-without-token" not in plain


def test_ffmpeg_command(tmp_path):
    cmd = FfmpegWhip(ROWS["ffmpeg-whip-h264"], 8.0, tmp_path, tmp_path / "x.png").command("127.0.0.1:1", "cam", NoProcs())
    assert cmd[cmd.index("--size") + 1] == "640x360" and cmd[cmd.index("--seconds") + 1] == "8.0"
    assert cmd[cmd.index("--log-out") + 1] == str(tmp_path / "ffmpeg-whip.log")


def test_parse_http_takes_the_body_by_content_length():
    line, headers, body = parse_http(b"HTTP/1.1 201 Created\r\nLocation: /whip/a/b\r\nContent-Length: 3\r\n\r\nv=0xx")
    assert line == "HTTP/1.1 201 Created" and headers["location"] == "/whip/a/b" and body == b"v=0"
    assert parse_http(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")[2] == b""


def test_ffmpeg_log_lines():
    ready = ("[WHIP muxer @ 0x55] Muxer state=10, buffer_size=4096, max_packet_size=1184, elapsed=1117.53ms"
             "(init:25.95,offer:3.01,answer:22.8,udp:0.24,ice:206.63,dtls:858.53,srtp:0.15)")
    m = MUXER_READY.search(ready)
    assert m and float(m.group(6)) == 206.63 and float(m.group(7)) == 858.53
    log = ("[out#0/whip @ 0x5] Output stream #0:0 (video): 120 frames encoded; 120 packets muxed\n"
           "[out#0/whip @ 0x5] Output stream #0:1 (audio): 200 frames encoded (192000 samples)\n")
    assert dict(STREAM_STATS.findall(log)) == {"video": "120", "audio": "200"}
    known = ["[WHIP muxer @ 0x5] Failed to read response from DELETE url=http://127.0.0.1:1/whip/a/b",
             "[WHIP muxer @ 0x5] Failed to dispose resource, ret=-5"]
    assert all(any(k.search(x) for k in KNOWN_DELETE_READ_FAILURE) for x in known)
    assert not any(k.search("[WHIP muxer @ 0x5] Failed to DELETE url=http://x") for k in KNOWN_DELETE_READ_FAILURE)


def test_session_timings_absent_zero_and_present():
    class Old:
        def HasField(self, name):
            raise ValueError(name)

    class New:
        def __init__(self, connect, keyframe):
            self.timings = type("T", (), {"connect_millis": connect, "first_keyframe_millis": keyframe})

        def HasField(self, name):
            return name == "timings"

    assert session_timings(Old()) is None
    assert session_timings(New(0, 0)) is None
    assert session_timings(New(12, 0)) == {"connect_ms": 12, "first_keyframe_ms": None}
    assert session_timings(New(12, 30)) == {"connect_ms": 12, "first_keyframe_ms": 30}


def test_table_shows_timings_or_a_dash():
    base = {"client": "FFmpeg WHIP muxer", "version": "9.0.2", "codecs": "H264+Opus", "result": "pass",
            "frames": {"video": 1, "audio": 2}, "resolution": "640x360"}
    table = render([dict(base, timings={"connect_ms": 12, "first_keyframe_ms": 30}, gateway_warn_lines=0),
                    dict(base, scenario="x")])
    rows = [x for x in table.splitlines() if x.startswith("| FFmpeg")]
    assert rows[0].endswith("| 12 ms | 30 ms | 0 |") and rows[1].endswith("| — | — | — |")
