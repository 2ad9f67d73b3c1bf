"""The interop rows: one frozen RowSpec per publisher, codec and scenario."""

from __future__ import annotations

from dataclasses import dataclass

# Rows with a token register the ingest with it: the publisher must send Authorization.
TOKEN = "interop-secret-token"


@dataclass(frozen=True)
class RowSpec:
    """What one row publishes and how. `size`: the video resolution the publisher sends when
    it is fixed; None: what the publisher reports it sent (a browser's camera and encoder
    decide). `seconds`: the row's own publishing time per session (None: --seconds).
    `label`: what the row does beyond one plain publish (shown in the README table)."""

    name: str
    client: str  # aiortc, chromium, firefox, wrtc, gstreamer, ffmpeg, libdatachannel
    codec: str  # h264, vp8
    token: str | None = None
    size: tuple[int, int] | None = None
    trickle: bool = False
    sessions: int = 1
    seconds: float | None = None
    label: str | None = None
    simulcast: tuple[str, ...] = ()  # rids the browser sends
    select: str | None = None  # the rid chosen live with SelectSimulcastLayer
    screenshot: bool = False  # this row takes docs/publish-page.png
    na_ok: bool = False  # "n/a" (with the publisher's reason) is not a failure
    # Two nodes on a private Redis, the publisher talks to the full one (a):
    # "redirect": a answers 307 to the node with room (--cluster-redirect-publish);
    # "proxy": a carries the POST, PATCH and DELETE to the node with room (b) and answers itself.
    cluster: str | None = None
    ice_restart: float | None = None  # seconds into publishing: ICE restart (PATCH If-Match: *)
    # The offer POSTed carries the publisher's candidates (False: none, and no trickle either:
    # OBS 30.2+; whipgate learns the address from the checks).
    offer_candidates: bool = True
    # Halfway through, a DELETE without the token to the session URL must get 401 and the
    # session must live on.
    unauthorized_delete: bool = False
    # The publisher's media crosses the lossy relay (lossy.py, behind whip_proxy.py): uniform
    # random loss at this rate on the uplink, the relay's RNG seeded with loss_seed.
    loss: float | None = None
    loss_seed: int = 25

    @property
    def encoding(self) -> str:
        return self.codec.upper()

    @property
    def codecs(self) -> str:
        return f"{self.encoding}+Opus"

    @property
    def browser(self) -> bool:
        return self.client in ("chromium", "firefox")

    def seconds_per_session(self, default: float) -> float:
        return float(self.seconds if self.seconds is not None else default)


SIZE = (640, 360)
ROWS: dict[str, RowSpec] = {
    s.name: s
    for s in (
        RowSpec("aiortc-h264", "aiortc", "h264", size=SIZE),
        RowSpec("aiortc-vp8", "aiortc", "vp8", token=TOKEN, size=SIZE),
        RowSpec("aiortc-h264-reconnect", "aiortc", "h264", size=SIZE, sessions=2, seconds=5.0,
                label="reconnect, one FFmpeg"),
        RowSpec("aiortc-h264-307", "aiortc", "h264", size=SIZE, cluster="redirect",
                label="cluster: 307 from a full node"),
        RowSpec("aiortc-h264-trickle", "aiortc", "h264", size=SIZE, trickle=True),
        RowSpec("aiortc-vp8-trickle", "aiortc", "vp8", token=TOKEN, size=SIZE, trickle=True),
        RowSpec("chromium-h264", "chromium", "h264", screenshot=True),
        RowSpec("chromium-vp8", "chromium", "vp8", token=TOKEN),
        RowSpec("chromium-h264-lossy", "chromium", "h264", loss=0.05, seconds=15.0,
                label="5 % uplink loss"),
        RowSpec("chromium-h264-cluster", "chromium", "h264", token=TOKEN, cluster="proxy",
                seconds=12.0, ice_restart=4.0, unauthorized_delete=True,
                label="cluster: through a non-owner node, token"),
        RowSpec("chromium-vp8-simulcast", "chromium", "vp8", simulcast=("q", "h", "f"),
                select="q", seconds=12.0, label="simulcast"),
        RowSpec("firefox-vp8", "firefox", "vp8"),
        RowSpec("firefox-h264", "firefox", "h264", na_ok=True),
        RowSpec("wrtc-vp8", "wrtc", "vp8", token=TOKEN, size=SIZE),
        RowSpec("gstreamer-h264", "gstreamer", "h264", size=SIZE),
        RowSpec("gstreamer-vp8", "gstreamer", "vp8", token=TOKEN, size=SIZE),
        RowSpec("ffmpeg-whip-h264", "ffmpeg", "h264", token=TOKEN, size=SIZE),
        RowSpec("ffmpeg-whip-h264-cluster", "ffmpeg", "h264", token=TOKEN, size=SIZE, cluster="proxy",
                seconds=6.0, label="cluster: through a non-owner node, token"),
        RowSpec("libdatachannel-h264", "libdatachannel", "h264", token=TOKEN, size=SIZE,
                label="offer with candidates"),
        RowSpec("libdatachannel-h264-nocands", "libdatachannel", "h264", token=TOKEN, size=SIZE,
                offer_candidates=False, label="offer without candidates"),
        RowSpec("libdatachannel-h264-cluster", "libdatachannel", "h264", token=TOKEN, size=SIZE,
                cluster="proxy", offer_candidates=False, unauthorized_delete=True,
                label="no candidates, cluster: through a non-owner node, token"),
        RowSpec("libdatachannel-h264-307", "libdatachannel", "h264", token=TOKEN, size=SIZE,
                cluster="redirect", label="cluster: 307 from a full node, token"),
    )
}
# `h264` and `vp8` alone still mean the aiortc rows.
ALIASES = {"h264": "aiortc-h264", "vp8": "aiortc-vp8"}


def select_rows(text: str) -> list[str]:
    """Row names from a comma-separated list (`all`, names, aliases), in order, once each.
    Raises ValueError on an unknown name."""
    rows: list[str] = []
    for r in (x.strip() for x in text.split(",")):
        if not r:
            continue
        if r == "all":
            rows.extend(ROWS)
            continue
        r = ALIASES.get(r, r)
        if r not in ROWS:
            raise ValueError(f"unknown row {r!r}; known: all, {', '.join(ROWS)}")
        rows.append(r)
    return list(dict.fromkeys(rows))
