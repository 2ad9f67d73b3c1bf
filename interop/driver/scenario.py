"""A row's scenario: what it does beyond the common phases, as hooks the row calls. The
base class is one plain publish; reconnect and simulcast subclass it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ffmpeg
from .ffmpeg import FrameCrc
from .spec import RowSpec

if TYPE_CHECKING:
    from .row import Row


class Scenario:
    """One session published for the row's seconds, FFmpeg decoding a bit less of it."""

    uses_tap = False  # a UDP relay between whipgate and FFmpeg records every RTP header
    raw_timestamps = False  # FFmpeg keeps decoded timestamps as they are

    def __init__(self, spec: RowSpec) -> None:
        self.spec = spec

    def gateway_args(self, run: Row) -> list[str]:
        """Extra whipgate arguments (started after anything they need)."""
        return []

    def after_register(self, run: Row, ready: dict, stub):
        """After RegisterIngest: the ready line and control stub the rest of the row uses."""
        return ready, stub

    def shutdown(self, run: Row) -> None:
        """Before whipgate's SIGTERM: the scenario's own processes and channels."""

    def cleanup(self, run: Row) -> None:
        """Whatever happened, at the row's end: the scenario's own threads and sockets."""

    def ffmpeg_seconds(self, seconds: float) -> float:
        """Seconds of each stream FFmpeg decodes before it ends by itself."""
        return ffmpeg.duration(seconds)

    def observe(self, run: Row, ingest) -> None:
        """Called with every GetIngest answer while the publisher runs."""

    def poll(self, run: Row, stub, snapshots: list) -> None:
        """Called about every 250 ms while the publisher runs."""

    def check_video(self, run: Row, v: FrameCrc, ff_text: str) -> None:
        """The decoded video's resolution against what the publisher sent."""
        check, res = run.check, run.resolution_text()
        if self.spec.size:
            want = f"{self.spec.size[0]}x{self.spec.size[1]}"
            check(f"decoded video is {want} (what the publisher sent)", res == want,
                  f"{res}, input stream says {ffmpeg.input_resolution(ff_text)}")
            check("every decoded video frame has the same size", len(v.sizes) <= 1,
                  f"sizes {sorted(v.sizes)}")
        else:
            self.check_browser_resolution(run, v)

    def check_browser_resolution(self, run: Row, v: FrameCrc) -> None:
        """A browser's encoder follows its bandwidth estimate: it starts small and steps the
        resolution up. The publisher samples what it sends (getStats every 250 ms, and the
        page's window.whipgate.width/height); every size FFmpeg decoded must be one of those,
        and FFmpeg's last must be one the page showed."""
        r = run.pub_result
        timeline = [t["res"] for t in r.get("resolution_timeline") or []]
        page = list(r.get("resolutions_seen") or [])
        sent = list(dict.fromkeys(timeline + page))
        by_size = {ffmpeg.frame_bytes(res): res for res in sent}
        decoded = [by_size.get(size, f"? ({size} bytes)") for size in v.size_runs]
        run.set_decoded(decoded)
        run.check("every decoded frame size is a resolution the browser sent",
                  bool(decoded) and all("?" not in d for d in decoded),
                  f"decoded {' -> '.join(decoded)}; sent {' -> '.join(timeline)}; "
                  f"page showed {', '.join(page)}; camera {r.get('capture')}")
        run.check("FFmpeg's last decoded resolution is one window.whipgate showed",
                  bool(decoded) and decoded[-1] in page, f"{decoded[-1:]} in {page}")
        if len(decoded) > 1:
            run.check.notes.append(f"resolution stepped {' -> '.join(decoded)} (bandwidth estimate ramp)")

    def check_corrupt(self, run: Row, ff_text: str) -> None:
        """FFmpeg's log: no video frame it had to conceal (nothing was lost on the way)."""
        corrupt = [x for x in ff_text.splitlines() if "corrupt decoded frame" in x or "concealing" in x]
        run.check("FFmpeg decoded no corrupt (concealed) video frame", not corrupt,
                  f"{len(corrupt)} lines, first: {corrupt[0].strip()}" if corrupt else "")

    def check_counts(self, run: Row, sessions: list[dict], session_ids: list[str], v: FrameCrc,
                     au: FrameCrc, keep: float, ff_text: str) -> None:
        """How much FFmpeg decoded: at most `keep` of the seconds published (at the rate sent)."""
        sent_v, sent_a = run.sent.get("video", 0), run.sent.get("audio", 0)
        exp_v = min(sent_v, int(sent_v * keep / run.seconds))
        exp_a = min(sent_a, int(sent_a * keep / run.seconds))
        run.check("FFmpeg decoded >= half the video frames expected", v.frames * 2 >= exp_v,
                  f"{v.frames} of {exp_v}")
        run.check("FFmpeg decoded >= half the audio frames expected", au.frames * 2 >= exp_a,
                  f"{au.frames} of {exp_a}")


def scenario_for(spec: RowSpec) -> Scenario:
    from .cluster import Cluster
    from .lossy_row import Lossy
    from .reconnect import Reconnect
    from .simulcast import Simulcast

    if spec.cluster:
        return Cluster(spec)
    if spec.loss is not None:
        return Lossy(spec)
    if spec.sessions > 1:
        return Reconnect(spec)
    if spec.simulcast:
        return Simulcast(spec)
    return Scenario(spec)
