"""framecrc parsing, gap splitting and the other pure FFmpeg helpers."""

from driver import ffmpeg
from driver.ffmpeg import FrameCrc, parse_framecrc, parse_framecrc_text, split_at_largest_gap

# The head of a real run's video output (aiortc H264, 640x360 at 30 fps).
VIDEO = """#software: Lavf59.27.100
#tb 0: 1/30
#media_type 0: video
#codec_id 0: rawvideo
#dimensions 0: 640x360
#sar 0: 0/1
0,          0,          0,        1,   345600, 0x452045b8
0,          1,          1,        1,   345600, 0xb9ba366d
0,          2,          2,        1,   345600, 0x017d86cc
0,          3,          3,        1,    86400, 0x017d86cc
0,          4,          4,        1,    86400, 0x4ee6cd13
0,          5,          5,        1,   345600, 0x5600f139
"""


def test_framecrc_header_and_frames():
    v = parse_framecrc_text(VIDEO)
    assert v.dimensions == (640, 360)
    assert v.tb == 1 / 30
    assert v.frames == 6
    assert v.pts == (0, 1, 2, 3, 4, 5)
    assert v.frame_sizes == (345600, 345600, 345600, 86400, 86400, 345600)
    assert v.sizes == {345600, 86400}
    assert v.size_runs == [345600, 86400, 345600]
    assert len(v.crcs) == 5  # one repeated picture


def test_framecrc_audio_time_base():
    a = parse_framecrc_text("#tb 0: 1/48000\n0,  0,  0, 960, 3840, 0x52ec568a\n"
                            "0, 960, 960, 960, 3840, 0xe7b68fa9\n")
    assert a.tb == 1 / 48000
    assert a.pts == (0, 960)
    assert a.dimensions is None


def test_framecrc_skips_junk_and_torn_lines():
    # FFmpeg flushes as it goes: the driver reads files that are still being written.
    v = parse_framecrc_text("#tb 0: 1/0\n0, 0, 0, 1, 100, 0xaa\n0, 1, x, 1, 100, 0xbb\n0, 2, 2, 1")
    assert v.frames == 1
    assert v.tb is None


def test_missing_framecrc_is_empty(tmp_path):
    assert parse_framecrc(tmp_path / "nope.framecrc") == FrameCrc()
    assert FrameCrc().frames == 0
    assert FrameCrc().size_runs == []


def test_split_at_largest_gap():
    # 30 fps, then a 2 s pause (a reconnect), then 30 fps again.
    pts = [0, 1, 2, 3, 63, 64, 65]
    i, gap = split_at_largest_gap(pts, 1 / 30)
    assert i == 4
    assert abs(gap - 2.0) < 1e-9
    assert pts[:i] == [0, 1, 2, 3]


def test_split_without_two_frames_or_time_base():
    assert split_at_largest_gap([], 1 / 30) == (0, 0.0)
    assert split_at_largest_gap([7], 1 / 30) == (1, 0.0)
    assert split_at_largest_gap([0, 1, 5], None) == (3, 0.0)


def test_frame_bytes_is_yuv420p():
    assert ffmpeg.frame_bytes("640x360") == 345600
    assert ffmpeg.frame_bytes("320x180") == 86400


def test_input_resolution_from_stderr():
    err = ("Input #0, sdp, from 'consumer.sdp':\n"
           "  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(progressive), 640x360, 30 fps\n"
           "  Stream #0:1: Audio: opus, 48000 Hz, stereo, fltp\n")
    assert ffmpeg.input_resolution(err) == (640, 360)
    assert ffmpeg.input_resolution("no streams") is None


def test_ffmpeg_keeps_less_than_published():
    assert ffmpeg.duration(8.0) == 5.5
    assert ffmpeg.duration(2.0) == 1.0


def test_command_repeats_t_per_output_and_bounds_the_run(tmp_path):
    cmd = ffmpeg.command(tmp_path / "c.sdp", tmp_path / "v", tmp_path / "a", 5.5, 68, raw_timestamps=True)
    assert cmd[:6] == ["timeout", "-s", "INT", "-k", "10", "68"]
    assert cmd.count("-t") == 2
    assert "passthrough" in cmd
    assert "passthrough" not in ffmpeg.command(tmp_path / "c.sdp", tmp_path / "v", tmp_path / "a", 5.5, 68, False)
