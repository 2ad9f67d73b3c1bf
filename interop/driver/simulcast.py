"""The simulcast row: Chromium sends three layers (rids q, h, f); whipgate forwards the
highest-bitrate one by default; the driver switches to spec.select live and checks that the
forwarded layer and FFmpeg's decoded picture follow.

whipgate's hysteresis (SWITCH_MARGIN) is read from the Rust source, the one place it is
declared, so that the driver's notion of "the highest layer" cannot drift from the gateway's."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import ffmpeg
from .checks import first_line
from .ffmpeg import FrameCrc
from .procs import log
from .scenario import Scenario

if TYPE_CHECKING:
    from .row import Row

SRC = Path(__file__).resolve().parents[2] / "crates"
MARGIN_RE = re.compile(r"\bconst SWITCH_MARGIN: f64 = ([0-9]+(?:\.[0-9]+)?);")
SETTLE_MAX_S = 8.0  # the default layer gets this long to settle before the switch
FOLLOW_LIMIT_S = 5.0  # GetIngest and FFmpeg must follow the switch within this


def switch_margin(src: Path = SRC) -> float:
    """whipgate's SWITCH_MARGIN: a layer takes over only with this many times the current
    layer's bitrate. Exactly one declaration under `src` (else RuntimeError)."""
    found = [(p, float(m.group(1))) for p in sorted(src.rglob("*.rs"))
             for m in MARGIN_RE.finditer(p.read_text(errors="replace"))]
    if len(found) != 1:
        raise RuntimeError(f"want one `const SWITCH_MARGIN: f64 = ...;` under {src}, found "
                           f"{[str(p) for p, _ in found]}")
    return found[0][1]


def layer_samples(text: str) -> list[tuple[int, dict]]:
    """What the browser said each layer sent so far, one sample about every 250 ms: its
    `LAYERS {"ms": .., "layers": {rid: {"res": .., "bytes": ..}}}` lines, as (ms, layers)."""
    out = []
    for line in text.splitlines():
        if line.startswith("LAYERS "):
            try:
                d = json.loads(line[len("LAYERS "):])
                out.append((int(d["ms"]), dict(d["layers"])))
            except (ValueError, KeyError, TypeError):
                continue
    return out


def layer_sizes(samples: list[tuple[int, dict]]) -> dict[str, set[str]]:
    """Every resolution each layer was seen at."""
    sizes: dict[str, set[str]] = {}
    for _, layers in samples:
        for rid, layer in layers.items():
            sizes.setdefault(rid, set()).add(layer["res"])
    return sizes


def layer_rates(samples: list[tuple[int, dict]], window_ms: int = 2000) -> dict[str, int]:
    """Each layer's bitrate (bit/s) over the last `window_ms` of the samples."""
    if len(samples) < 2:
        return {}
    last_ms, last = samples[-1]
    first_ms, first = next(((ms, s) for ms, s in samples if ms >= last_ms - window_ms), samples[0])
    if last_ms <= first_ms:
        return {}
    return {rid: int((layer["bytes"] - (first.get(rid) or {}).get("bytes", 0)) * 8000 / (last_ms - first_ms))
            for rid, layer in last.items()}


def is_highest(rid: str, rates: dict[str, int], margin: float) -> bool:
    """Whether `rid` is the highest-bitrate layer as whipgate ranks them: another layer takes
    over only with `margin` times its bitrate."""
    return bool(rates) and rid in rates and rates[rid] * margin >= max(rates.values())


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class Simulcast(Scenario):
    """Waits for whipgate's default layer to settle, selects spec.select live, and times
    how long GetIngest's forwarded_layer and FFmpeg's decoded frame size take to follow."""

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.margin = switch_margin()
        self.phase = "default"  # -> switching -> done | timeout
        self.forwarded: list[tuple[float, str]] = []  # (seconds into the row, layer) per change
        self.forwarded_since = self.first_forwarded_at = None
        self.ingest_layer = None
        self.default_layer = self.highest = None
        self.rates: dict[str, int] = {}
        self.select_at = self.select_after = self.forwarded_at = self.decoded_at = None
        self.frames_before = self.size_before = None
        self.session_live = self.select_error = None

    def observe(self, run: Row, ingest) -> None:
        self.ingest_layer = ingest.simulcast_layer

    def poll(self, run: Row, stub, snapshots: list) -> None:
        pb, rid, now = run.pb, self.spec.select, time.monotonic()
        snap = snapshots[-1] if snapshots else None
        fwd = snap.forwarded_layer if snap is not None and snap.state == pb.SESSION_STATE_CONNECTED else ""
        if fwd:
            if not self.forwarded or self.forwarded[-1][1] != fwd:
                self.forwarded.append((round(now - run.started, 2), fwd))
                self.forwarded_since = now
            if self.first_forwarded_at is None:
                self.first_forwarded_at = now
        samples = layer_samples(_read(run.pub_out))
        if self.phase == "default" and fwd:
            v = ffmpeg.parse_framecrc(run.vcrc)
            rates = layer_rates(samples)
            waited = now - self.first_forwarded_at
            settled = (is_highest(fwd, rates, self.margin) and now - self.forwarded_since >= 1.0
                       and waited >= 3.0 and v.frames >= 30)
            if not settled and waited < SETTLE_MAX_S:
                return
            self.phase, self.default_layer, self.select_at = "switching", fwd, now
            self.frames_before = v.frames
            self.size_before = v.frame_sizes[-1] if v.frame_sizes else None
            self.select_after = round(now - run.started, 2)
            self.highest = max(rates, key=rates.get) if rates else None
            self.rates = rates
            self.select(run, stub, fwd, v.frames)
        elif self.phase == "switching":
            if fwd == rid and self.forwarded_at is None:
                self.forwarded_at = now
            want = {ffmpeg.frame_bytes(res) for res in layer_sizes(samples).get(rid, ())}
            after = ffmpeg.parse_framecrc(run.vcrc).frame_sizes[self.frames_before:]
            if self.decoded_at is None and any(size in want for size in after):
                self.decoded_at = now
            if self.forwarded_at is not None and self.decoded_at is not None:
                self.phase = "done"
                log(f"  layer {rid!r}: forwarded after {self.forwarded_at - self.select_at:.2f} s, "
                    f"decoded after {self.decoded_at - self.select_at:.2f} s")
            elif now - self.select_at > SETTLE_MAX_S:
                self.phase = "timeout"

    def select(self, run: Row, stub, fwd: str, frames: int) -> None:
        import grpc

        rid = self.spec.select
        try:
            resp = stub.SelectSimulcastLayer(
                run.pb.SelectSimulcastLayerRequest(ingest_id=run.ingest_id, rid=rid), timeout=5)
            self.session_live = resp.session_live
        except grpc.RpcError as e:
            self.select_error = f"{e.code()} {e.details()}"
        log(f"  SelectSimulcastLayer({rid!r}) with {fwd!r} forwarded, {frames} frames decoded: "
            f"{self.select_error or 'session_live=' + str(self.session_live)}")

    def after(self, at: float | None) -> float | None:
        return round(at - self.select_at, 2) if at is not None and self.select_at is not None else None

    def check_video(self, run: Row, v: FrameCrc, ff_text: str) -> None:
        """What Chromium sent on each layer, what whipgate answered and forwarded, and the
        live switch to spec.select."""
        check, pb, rid, layers = run.check, run.pb, self.spec.select, list(self.spec.simulcast)
        r = run.pub_result
        stats = r.get("layer_stats") or {}
        sizes: dict[str, list[str]] = {x: [] for x in layers}
        for entry in r.get("layer_timeline") or []:
            for x, res in (entry.get("layers") or {}).items():
                if res not in sizes.setdefault(x, []):
                    sizes[x].append(res)
        sent = [x for x in layers if (stats.get(x) or {}).get("framesSent") and sizes.get(x)]
        what = "; ".join(f"{x}: {' -> '.join(sizes.get(x) or ['nothing'])}, "
                         f"{(stats.get(x) or {}).get('framesSent', 0)} frames, "
                         f"{(stats.get(x) or {}).get('bytesSent', 0)} bytes, "
                         f"limited by {(stats.get(x) or {}).get('qualityLimitationReason')}" for x in layers)
        t = {"forwarded_after_s": self.after(self.forwarded_at), "decoded_after_s": self.after(self.decoded_at)}
        run.details["simulcast"] = {
            "layers_sent": {x: sizes.get(x) for x in sent}, "layer_stats": stats,
            "forwarded": self.forwarded or None, "default_layer": self.default_layer,
            "rates_at_select": self.rates or None, "switch_margin": self.margin,
            "selected": rid, "select_after_s": self.select_after, **t,
        }
        offer, answer = _read(run.workdir / "offer.sdp"), _read(run.workdir / "answer.sdp")
        want = ";".join(layers)
        check(f"offer: a=simulcast:send {want}", f"a=simulcast:send {want}" in offer.splitlines(),
              first_line(offer, "a=simulcast:"))
        check(f"answer: a=simulcast:recv {want}", f"a=simulcast:recv {want}" in answer.splitlines(),
              first_line(answer, "a=simulcast:"))
        check("answer: a=rid:<rid> recv for every layer",
              all(f"a=rid:{x} recv" in answer.splitlines() for x in layers),
              ", ".join(x for x in answer.splitlines() if x.startswith("a=rid:")))
        if sent == layers:
            check(f"Chromium sent all {len(layers)} layers", True, what)
        else:
            # The browser decides (bandwidth estimate, CPU): assert on what it did send.
            check.notes.append(f"Chromium sent only {sent} of {layers}: {what}")
            check("Chromium sent at least one layer", bool(sent), what)
        page = (r.get("page") or {}).get("layers") or {}
        # The page lists every configured layer; one the browser never sent shows 0x0.
        shown = [x for x, layer in page.items() if layer.get("width")]
        check("page: window.whipgate.layers shows every layer sent, at its size",
              sorted(shown) == sorted(sent)
              and all(f"{page[x]['width']}x{page[x]['height']}" in sizes[x] for x in sent),
              f"{ {x: (layer.get('width'), layer.get('height')) for x, layer in page.items()} }")
        conn = [s for s in run.snapshots if s.state == pb.SESSION_STATE_CONNECTED and s.simulcast_layers]
        got = sorted({tuple(s.simulcast_layers) for s in conn})
        check(f"GetIngest session.simulcast_layers == {layers}",
              bool(conn) and got == [tuple(layers)], f"{[list(g) for g in got]}")
        fwd = [s.forwarded_layer for s in run.snapshots if s.state == pb.SESSION_STATE_CONNECTED]
        check("GetIngest session.forwarded_layer set while media flows", any(fwd),
              " -> ".join(f"{x[1]} ({x[0]} s)" for x in self.forwarded))
        started = [e.track_started for e in run.watcher.of("track_started")
                   if e.track_started.kind == pb.MEDIA_KIND_VIDEO]
        check("TrackStarted (video) for every layer sent, with its rid",
              set(sent) <= {s.rid for s in started}, f"{sorted(s.rid for s in started)}")

        by_size = {ffmpeg.frame_bytes(res): res for x in layers for res in sizes.get(x) or []}
        decoded = [by_size.get(size, f"? ({size} bytes)") for size in v.size_runs]
        run.set_decoded(decoded, unknown_clears=False)
        check("every decoded frame size is one Chromium sent on some layer",
              bool(decoded) and all("?" not in d for d in decoded), f"decoded {' -> '.join(decoded)}; layers {what}")
        self.check_switch(run, v, sizes, by_size, t)

    def check_switch(self, run: Row, v: FrameCrc, sizes: dict[str, list[str]], by_size: dict[int, str],
                     t: dict) -> None:
        check, rid, default = run.check, self.spec.select, self.default_layer
        check(f"whipgate forwarded the highest-bitrate layer by default (the browser's last 2 s, "
              f"within whipgate's {self.margin}x switch margin)",
              default and is_highest(default, self.rates, self.margin),
              f"forwarded {default!r}, highest {self.highest!r}; bit/s {self.rates or None}")
        check("FFmpeg decoded that layer's size before the switch",
              default in sizes and self.size_before in {ffmpeg.frame_bytes(x) for x in sizes[default]},
              f"{by_size.get(self.size_before, self.size_before)} vs {sizes.get(default)}")
        check(f"SelectSimulcastLayer({rid!r}) answered session_live", self.session_live is True,
              self.select_error or f"{self.session_live}")
        check(f"GetIngest ingest.simulcast_layer == {rid!r} after it (kept for later sessions)",
              self.ingest_layer == rid, repr(self.ingest_layer))
        if default == rid:
            check.notes.append(f"the default layer was already {rid!r}: no resolution change to see")
        limit = FOLLOW_LIMIT_S
        fa, da = t["forwarded_after_s"], t["decoded_after_s"]
        check(f"GetIngest forwarded_layer == {rid!r} within {limit:.0f} s of the select",
              fa is not None and fa <= limit, f"after {fa} s" if fa is not None else f"never; forwarded {self.forwarded}")
        want = {ffmpeg.frame_bytes(x) for x in sizes.get(rid) or []}
        check(f"FFmpeg's decoded size changed to layer {rid!r} ({', '.join(sizes.get(rid) or [])}) "
              f"within {limit:.0f} s", da is not None and da <= limit,
              f"after {da} s" if da is not None else "never")
        start = self.frames_before if self.frames_before is not None else v.frames
        after = v.frame_sizes[start:]
        first = next((i for i, size in enumerate(after) if size in want), None)
        rest = after[first:] if first is not None else ()
        check(f"after the switch FFmpeg decoded only layer {rid!r}, no frame of another",
              bool(rest) and all(size in want for size in rest),
              f"{len(rest)} frames of {rid!r}, {first} of the old layer before them")
