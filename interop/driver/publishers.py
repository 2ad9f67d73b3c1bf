"""The publishers: one small class per independent WebRTC stack, with its command line,
environment, version (as the tool itself tells it, never typed by hand) and prerequisites."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .procs import Procs
from .spec import RowSpec

HERE = Path(__file__).resolve().parents[1]  # interop/
NODE_DIR = HERE / "node_modules"
SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's gi bindings are Debian's, not the venv's


def _timeout(seconds: float) -> list[str]:
    return ["timeout", "-s", "TERM", "-k", "10", str(int(seconds))]


def _command_version(cmd: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(pattern, out)
    return m.group(1) if m else None


def _npm_version(package: str) -> str | None:
    try:
        return json.loads((NODE_DIR / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


class Publisher:
    """What every publisher shares: a WHIP URL, --seconds, where the offer and answer go."""

    name = "?"  # as shown in the README table
    _version: str | None = None
    _version_known = False

    def __init__(self, spec: RowSpec, seconds: float, workdir: Path, screenshot: Path) -> None:
        self.spec, self.seconds, self.workdir, self.screenshot = spec, seconds, workdir, screenshot

    def common(self) -> list[str]:
        return ["--seconds", str(self.seconds), "--answer-out", str(self.workdir / "answer.sdp"),
                "--offer-out", str(self.workdir / "offer.sdp")]

    def token_args(self) -> list[str]:
        return ["--token", self.spec.token] if self.spec.token else []

    def command(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    @classmethod
    def version(cls) -> str | None:
        if not cls._version_known:
            cls._version, cls._version_known = cls.find_version(), True
        return cls._version

    @classmethod
    def find_version(cls) -> str | None:
        return None

    @classmethod
    def missing(cls) -> list[str]:
        """What this publisher needs and does not find (with how to get it)."""
        return []

    def check(self, check, result: dict) -> None:
        """The publisher's own checks on its RESULT (beyond the WHIP exchange every row checks)."""


class Aiortc(Publisher):
    name = "aiortc"
    script = HERE / "aiortc_publish.py"

    def command(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        extra = ["--trickle"] if self.spec.trickle else []
        if self.spec.sessions > 1:
            extra += ["--sessions", str(self.spec.sessions)]
        return [*_timeout(self.spec.sessions * self.seconds + 60), sys.executable, str(self.script),
                "--url", f"http://{http}/whip/{ingest_id}", "--codec", self.spec.codec,
                *self.common(), *extra, *self.token_args()]

    @classmethod
    def find_version(cls) -> str | None:
        try:
            import aiortc

            return aiortc.__version__
        except Exception:
            return "unknown"


class _Node(Publisher):
    package = ""

    def env(self) -> dict:
        env = dict(os.environ, NODE_PATH=str(NODE_DIR))
        # Nothing is ever downloaded: the browsers are Debian's.
        env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
        env["PUPPETEER_SKIP_DOWNLOAD"] = "1"
        return env

    @classmethod
    def missing(cls) -> list[str]:
        out = [] if shutil.which("node") else ["node (apt-get install nodejs npm)"]
        if not (NODE_DIR / cls.package).is_dir():
            out.append(f"{cls.package} (cd interop && npm ci)")
        return out


class Browser(_Node):
    """A Debian browser on whipgate's own /publish page, driven by browser_publish.mjs."""

    script = HERE / "browser_publish.mjs"
    executable = ""

    def command(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        spec = self.spec
        profile = Path(tempfile.mkdtemp(prefix=f"{spec.client}-profile-", dir=self.workdir))
        procs.watch_dir(str(profile))
        # The page takes the token from the fragment only (never sent to the server).
        page = (f"http://{http}/publish/{ingest_id}?codec={spec.codec}"
                + ("&simulcast" if spec.simulcast else "") + "&autostart"
                + (f"#token={spec.token}" if spec.token else ""))
        shot = ["--screenshot", str(self.screenshot)] if spec.screenshot else []
        # The restart and the token-less DELETE happen within the row's seconds.
        restart = ["--ice-restart-after", str(spec.ice_restart)] if spec.ice_restart else []
        if spec.unauthorized_delete:
            restart.append("--delete-without-token")
        return [*_timeout(self.seconds + 70), "node", str(self.script), "--browser", spec.client,
                "--url", page, "--codec", spec.codec, "--profile-dir", str(profile), *shot,
                *restart, *self.common()]

    @classmethod
    def missing(cls) -> list[str]:
        out = super().missing()
        if not os.access(cls.executable, os.X_OK):
            out.append(f"{cls.executable} (apt-get install {Path(cls.executable).name})")
        return out


class Chromium(Browser):
    name = "Chromium"
    package = "playwright-core"
    executable = "/usr/bin/chromium"

    @classmethod
    def find_version(cls) -> str | None:
        return _command_version(["chromium", "--version"], r"Chromium (\S+)")


class Firefox(Browser):
    name = "Firefox ESR"
    package = "puppeteer-core"
    executable = "/usr/bin/firefox-esr"

    def env(self) -> dict:
        env = super().env()
        env.setdefault("MOZ_HEADLESS", "1")
        return env

    @classmethod
    def find_version(cls) -> str | None:
        return _command_version(["firefox-esr", "--version"], r"Firefox (\S+)")


class Wrtc(_Node):
    name = "@roamhq/wrtc (libwebrtc)"
    package = "@roamhq/wrtc"
    script = HERE / "wrtc_publish.mjs"

    def command(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        return [*_timeout(self.seconds + 60), "node", str(self.script),
                "--url", f"http://{http}/whip/{ingest_id}", *self.common(), *self.token_args()]

    @classmethod
    def find_version(cls) -> str | None:
        return _npm_version(cls.package)


class Gstreamer(Publisher):
    name = "GStreamer webrtcbin"
    script = HERE / "gst_publish.py"

    def command(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        return [*_timeout(self.seconds + 60), SYSTEM_PYTHON, str(self.script),
                "--url", f"http://{http}/whip/{ingest_id}", "--codec", self.spec.codec,
                *self.common(), *self.token_args()]

    def env(self) -> dict:
        env = dict(os.environ)
        env.setdefault("GST_DEBUG", "2")
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        return env

    @classmethod
    def find_version(cls) -> str | None:
        return _command_version([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
                                 "from gi.repository import Gst; print(Gst.version_string())"],
                                r"GStreamer (\S+)")

    @classmethod
    def missing(cls) -> list[str]:
        return [] if cls.version() else ["GStreamer for system python3 (see scripts/test)"]


class FfmpegWhip(Publisher):
    """FFmpeg 9's WHIP muxer, the build in the PyPI package imageio-ffmpeg (in the venv),
    run by ffmpeg_whip_publish.py (which relays its HTTP to record the exchange)."""

    name = "FFmpeg WHIP muxer"
    script = HERE / "ffmpeg_whip_publish.py"

    def command(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        size = f"{self.spec.size[0]}x{self.spec.size[1]}" if self.spec.size else "640x360"
        return [*_timeout(self.seconds + 60), sys.executable, str(self.script),
                "--url", f"http://{http}/whip/{ingest_id}", "--size", size,
                "--log-out", str(self.workdir / "ffmpeg-whip.log"), *self.common(), *self.token_args()]

    @classmethod
    def find_version(cls) -> str | None:
        try:
            import imageio_ffmpeg

            exe = imageio_ffmpeg.get_ffmpeg_exe()
            return _command_version([exe, "-hide_banner", "-version"], r"ffmpeg version n?(\d[\w.]*)")
        except Exception:
            return None

    @classmethod
    def missing(cls) -> list[str]:
        try:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
            return []
        except Exception:
            return ["imageio-ffmpeg (pip install -r interop/requirements.txt)"]

    def check(self, check, result: dict) -> None:
        post, d = result.get("post") or {}, result.get("delete") or {}
        check("FFmpeg: the POST carried Authorization: Bearer (-authorization)", post.get("authorization") is True)
        check("FFmpeg: offers a=setup:passive and no candidates (its muxer is the ICE client of an "
              "ICE-lite server)", result.get("offer_setup") == "a=setup:passive" and not result.get("offer_candidates"),
              f"{result.get('offer_setup')}, {len(result.get('offer_candidates') or [])} candidates")
        check("FFmpeg: its DELETE (with the token) got 200 with Content-Length: 0 on the wire",
              d.get("status") == 200 and d.get("content_length") == "0" and d.get("authorization") is True,
              f"{d.get('status_line')!r}, Content-Length {d.get('content_length')}")
        known = result.get("failed_lines_known_ffmpeg_bug") or []
        other = [x for x in result.get("failed_lines") or [] if x not in known]
        check("FFmpeg's log has no `Failed to` line (but its own DELETE-response read, see below)",
              not other, "; ".join(other[:3]))
        if known:
            check.notes.append(
                "FFmpeg 9.0's WHIP muxer logs `Failed to read response from DELETE` / `Failed to dispose "
                "resource, ret=-5` whatever the answer: it opens the DELETE for writing and its HTTP client "
                "then reads the status line as a chunk size; the wire shows "
                f"{d.get('status_line')!r} with Content-Length {d.get('content_length')}")
        t = result.get("ffmpeg_timings") or {}
        if t:
            check.notes.append(f"FFmpeg's own timings (ms): answer {t.get('answer')}, ICE {t.get('ice')}, "
                               f"DTLS {t.get('dtls')}, SRTP {t.get('srtp')}")


class Libdatachannel(_Node):
    """OBS Studio's whip-output.cpp rebuilt on libdatachannel (node-datachannel), fed by
    FFmpeg-encoded H264 and Opus (Debian's ffmpeg), libdatachannel_publish.mjs."""

    name = "libdatachannel (OBS whip-output)"
    package = "node-datachannel"
    script = HERE / "libdatachannel_publish.mjs"

    def command(self, http: str, ingest_id: str, procs: Procs) -> list[str]:
        spec = self.spec
        size = spec.size or (640, 360)
        extra = ["--delete-without-token"] if spec.unauthorized_delete else []
        return [*_timeout(self.seconds + 70), "node", str(self.script),
                "--url", f"http://{http}/whip/{ingest_id}", "--workdir", str(self.workdir),
                "--width", str(size[0]), "--height", str(size[1]),
                "--offer-candidates", "yes" if spec.offer_candidates else "no",
                *extra, *self.common(), *self.token_args()]

    @classmethod
    def find_version(cls) -> str | None:
        lib = _command_version(["node", "-e", f"process.chdir({json.dumps(str(HERE))}); console.log("
                                "require(require.resolve('node-datachannel', {paths: [process.cwd()]}))"
                                ".getLibraryVersion())"], r"(\d+\.\d+\.\d+)")
        binding = _npm_version(cls.package)
        return f"{lib} (node-datachannel {binding})" if lib else None

    def check(self, check, result: dict) -> None:
        posts = [f for f in result.get("fetches") or [] if f.get("method") == "POST"]
        check("libdatachannel: every POST (redirects included) carried Authorization: Bearer",
              bool(posts) and all(f.get("authorization") for f in posts),
              ", ".join(f"{f.get('status')} {f.get('url')}" for f in posts))
        offered = result.get("offer_candidates") or []
        if self.spec.offer_candidates:
            check("libdatachannel: the offer was POSTed once gathering was complete, with its candidates",
                  bool(offered), f"{len(offered)} candidates")
        else:
            check("libdatachannel: the offer was POSTed at once, without candidates (OBS 30.2+), no trickle",
                  not offered and not result.get("trickle") and (result.get("candidates_gathered") or 0) >= 1,
                  f"{len(offered)} in the offer, {result.get('candidates_gathered')} gathered locally")
        opened = result.get("tracks_open_millis") or {}
        check("libdatachannel: both tracks opened", set(opened) == {"video", "audio"}, f"{opened} ms after the POST")
        check("libdatachannel: keyframes sent on its own schedule (at start, every 2 s)",
              (result.get("keyframes_sent") or 0) >= 1, f"{result.get('keyframes_sent')} IDR sent")
        dropped = result.get("frames_dropped_before_open") or {}
        check.notes.append(
            f"libdatachannel (as OBS): {dropped.get('video')} video / {dropped.get('audio')} audio frames dropped "
            f"before the tracks were open; {result.get('plis_received_ignored')} PLI received and ignored; "
            f"first IDR sent {result.get('first_keyframe_after_connected_millis')} ms after connected; "
            f"connected {result.get('connect_millis')} ms after connecting ({result.get('post_to_connected_millis')} "
            "ms after the POST)")


CLIENTS: dict[str, type[Publisher]] = {
    "aiortc": Aiortc, "chromium": Chromium, "firefox": Firefox, "wrtc": Wrtc, "gstreamer": Gstreamer,
    "ffmpeg": FfmpegWhip, "libdatachannel": Libdatachannel,
}
