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
        if restart and spec.token:
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


CLIENTS: dict[str, type[Publisher]] = {
    "aiortc": Aiortc, "chromium": Chromium, "firefox": Firefox, "wrtc": Wrtc, "gstreamer": Gstreamer,
}
