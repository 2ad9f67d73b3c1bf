"""FFmpeg, the consumer: its command line, waiting for its sockets, reading its framecrc
output, and the pure helpers on decoded timestamps and frame sizes."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .procs import Procs, log, tail


def version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30).stdout
    m = re.match(r"ffmpeg version (\S+)", out)
    return m.group(1) if m else "unknown"


def duration(seconds: float) -> float:
    """Seconds of media FFmpeg keeps: less than is published, so that it ends by itself."""
    return max(1.0, round(seconds - 2.5, 1))


def command(sdp: Path, vcrc: Path, acrc: Path, keep: float, limit: float,
            raw_timestamps: bool) -> list[str]:
    """FFmpeg decoding `sdp` into one framecrc file per stream. It stops by itself after `keep`
    seconds of each stream (-t binds to one output: repeated), timeout(1) bounds the rest at
    `limit`. `raw_timestamps`: decoded timestamps as they are (the input's time base, no frame
    dropped or duplicated for a constant rate)."""
    raw = ["-fps_mode", "passthrough", "-enc_time_base", "-1"] if raw_timestamps else []
    return [
        "timeout", "-s", "INT", "-k", "10", str(int(limit)),
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "info",
        "-protocol_whitelist", "file,udp,rtp",
        "-i", str(sdp),
        # -autoscale 0: a resolution change reaches the output as it is (browsers ramp their
        # resolution with the bandwidth estimate), not scaled to the first.
        "-map", "0:v:0", "-t", str(keep), "-autoscale", "0", *raw, "-flush_packets", "1",
        "-f", "framecrc", str(vcrc),
        "-map", "0:a:0", "-t", str(keep), "-flush_packets", "1", "-f", "framecrc", str(acrc),
    ]


def wait_listening(ff: subprocess.Popen, ports: set[int], stderr: Path, timeout: float = 15) -> None:
    """Returns once FFmpeg has bound every UDP port in `ports`; raises if it exits or is late."""
    deadline = time.monotonic() + timeout
    while not ports <= udp_bound_ports():
        if ff.poll() is not None:
            raise RuntimeError(f"ffmpeg exited early ({ff.returncode}):\n{tail(stderr)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ffmpeg did not bind {sorted(ports)} within {timeout} s:\n{tail(stderr)}")
        time.sleep(0.05)


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


def stop(ff: subprocess.Popen) -> None:
    """SIGINT makes FFmpeg write its trailers; timeout(1) forwards it. A second signal would
    abort its blocking RTP read, and its output with it: kill instead."""
    if Procs.stop(ff, signal.SIGINT, 15, group=False) is None:
        log("  ffmpeg still running 15 s after SIGINT; killed it")
    log(f"  ffmpeg exit {ff.returncode}")


@dataclass(frozen=True)
class FrameCrc:
    """One framecrc file: its header and every frame line (`stream, dts, pts, duration,
    size, crc`) in order. `tb`: the time base in seconds per tick."""

    dimensions: tuple[int, int] | None = None
    tb: float | None = None
    pts: tuple[int, ...] = ()
    frame_sizes: tuple[int, ...] = ()
    crcs: frozenset[str] = frozenset()

    @property
    def frames(self) -> int:
        return len(self.frame_sizes)

    @property
    def sizes(self) -> set[int]:
        return set(self.frame_sizes)

    @property
    def size_runs(self) -> list[int]:
        """Frame sizes in order, runs collapsed."""
        runs: list[int] = []
        for size in self.frame_sizes:
            if not runs or runs[-1] != size:
                runs.append(size)
        return runs


def parse_framecrc_text(text: str) -> FrameCrc:
    dimensions, tb = None, None
    pts: list[int] = []
    sizes: list[int] = []
    crcs: set[str] = set()
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.match(r"#dimensions \d+: (\d+)x(\d+)", line)
            if m:
                dimensions = (int(m.group(1)), int(m.group(2)))
            m = re.match(r"#tb \d+: (\d+)/(\d+)", line)
            if m and int(m.group(2)):
                tb = int(m.group(1)) / int(m.group(2))
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 6:
            try:
                p, size = int(parts[2]), int(parts[4])
            except ValueError:
                continue
            pts.append(p)
            sizes.append(size)
            crcs.add(parts[5])
    return FrameCrc(dimensions, tb, tuple(pts), tuple(sizes), frozenset(crcs))


def parse_framecrc(path: Path) -> FrameCrc:
    """The framecrc file at `path` (empty when it does not exist yet)."""
    try:
        return parse_framecrc_text(path.read_text(errors="replace"))
    except OSError:
        return FrameCrc()


def split_at_largest_gap(pts: list[int] | tuple[int, ...], tb: float | None) -> tuple[int, float]:
    """Index of the first frame after the largest step between consecutive timestamps, and
    that step in seconds ((len, 0.0) for fewer than two frames)."""
    if len(pts) < 2 or not tb:
        return len(pts), 0.0
    i = max(range(1, len(pts)), key=lambda k: pts[k] - pts[k - 1])
    return i, (pts[i] - pts[i - 1]) * tb


def input_resolution(stderr_text: str) -> tuple[int, int] | None:
    """The video size FFmpeg's input stream line names."""
    for line in stderr_text.splitlines():
        if "Input #0" in line:
            continue
        m = re.search(r"Stream #0:\d+.*Video: .*?, (\d{2,5})x(\d{2,5})", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def frame_bytes(res: str) -> int:
    """Bytes of one yuv420p frame of "WxH" (what framecrc's size column says)."""
    w, h = (int(x) for x in res.split("x"))
    return w * h * 3 // 2
