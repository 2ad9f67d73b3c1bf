"""The lossy row (chromium-h264-lossy): the publisher's media crosses the lossy relay
(lossy.py) with uniform random uplink loss, put into the path by the WHIP proxy
(whip_proxy.py: the publish page, its POST and DELETE go through the proxy; the answer's
candidates name the relay). whipgate repairs what it can (NACK today; RTX, RED and its own
NACK/PLI policy are issue 25); FFmpeg decodes what it forwards, through the row's tap.

What the row measures (rtpstats.compare): the publisher's media packets at the relay against
the unique media packets the tap saw go to FFmpeg (unrepaired = the difference), and the
RFC 3550 sequence gaps FFmpeg saw (false holes = gaps - unrepaired). It passes when
  - FFmpeg's decode errors (frames it concealed or could not decode, decode_errors()) are no
    more than the unrepaired media packets: each unrepaired packet damages at most one frame.
    A repair later than FFmpeg's reordering delay for RTP over UDP (100 ms by default: "max
    delay reached", then "RTP: dropping old packet received too late") counts as repaired at
    the consumer but damages a frame all the same, so it shows up here;
  - the false holes are within the issue's goal: gaps - unrepaired <= 0.1 % of expected. The
    difference may be negative: a media packet the publisher sent before the consumer's first
    packet (before the first keyframe is forwarded) or after its last (the DELETE) counts as
    unrepaired but lies outside the consumer's sequence range, so it is no gap there.
Both numbers, and FFmpeg's own count of missed packets, go in the row's details.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .lossy import LossyPath, RandomLoss
from .procs import log
from .rtpstats import SinkPacket, compare
from .scenario import Scenario
from .whip_proxy import udp_host_candidate

if TYPE_CHECKING:
    from .row import Row

FALSE_HOLES_GOAL_PCT = 0.1

# FFmpeg's H264 decoder and RTP demuxer on damage: one "concealing" line per frame it patched,
# "Missing reference picture" / "no frame!" / "decode_slice_header error" for frames it could
# not decode at all (each its own frame); "error while decoding MB" accompanies "concealing"
# (not counted again); "RTP: missed N packets" is the demuxer's view of the sequence gaps.
FRAME_ERRORS = ("concealing", "Missing reference picture", "no frame!", "decode_slice_header error")


def decode_errors(ff_text: str) -> dict:
    """Frames FFmpeg reported damaged or undecodable, and the packets its RTP demuxer missed."""
    lines = ff_text.splitlines()
    per = {k: sum(k in x for x in lines) for k in FRAME_ERRORS}
    missed = sum(int(m.group(1)) for m in re.finditer(r"RTP: missed (\d+) packets", ff_text))
    late = sum("RTP: dropping old packet" in x for x in lines)
    return {"frames": sum(per.values()), "by_kind": per, "rtp_missed": missed, "rtp_dropped_late": late,
            "error_while_decoding_lines": sum("error while decoding" in x for x in lines)}


class Lossy(Scenario):
    uses_tap = True  # the tap between whipgate and FFmpeg is the consumer's view

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.path: LossyPath | None = None
        self.errors: dict = {}

    def after_register(self, run: Row, ready: dict, stub):
        """The proxy and relay in front of whipgate; the row's publisher gets the proxy's address
        (and the relay's as the UDP port its answer names)."""
        self.path = LossyPath(ready["http"], RandomLoss(self.spec.loss, self.spec.loss_seed))
        relay = self.path.relay.address
        log(f"  lossy path: WHIP proxy {self.path.http} -> {ready['http']}, relay 127.0.0.1:{relay[1]} -> "
            f"{ready['udp']}, {self.path.relay.up.describe()} uplink, seed {self.spec.loss_seed}")
        self.gateway_udp = ready["udp"]
        return dict(ready, http=self.path.http, udp=f"{relay[0]}:{relay[1]}"), stub

    def check_corrupt(self, run: Row, ff_text: str) -> None:
        """Under loss FFmpeg may conceal: counted here, judged in check_counts."""
        self.errors = decode_errors(ff_text)

    def check_counts(self, run: Row, sessions, session_ids, v, au, keep, ff_text) -> None:
        super().check_counts(run, sessions, session_ids, v, au, keep, ff_text)
        check, path = run.check, self.path
        posts = path.proxy.posts()
        answer = posts[-1].answer if posts else ""
        host, port = self.gateway_udp.rsplit(":", 1)
        check("the gateway's own answer (before the proxy) names whipgate's UDP port",
              udp_host_candidate(answer) == (host, int(port)), f"{udp_host_candidate(answer)} vs {self.gateway_udp}")
        relay = path.relay.snapshot()
        sink = {k: [SinkPacket(p[0], p[1], p[2], p[3], p[5], p[6]) for p in run.tap.packets(k)] for k in ("video", "audio")}
        m = compare(relay["uplink_rtp"], path.proxy.roles(), sink)
        vm, am = m["video"], m["audio"]
        up = relay["datagrams"]["up"]
        sent, dropped = sum(up["sent"].values()), sum(up["dropped"].values())
        unrepaired = max(vm["lost"], 0)
        false_holes = None if vm["gaps_pct"] is None or vm["lost_pct"] is None else vm["gaps_pct"] - vm["lost_pct"]
        e = self.errors
        run.details["lossy"] = {
            "loss": path.relay.up.describe(), "seed": self.spec.loss_seed,
            "uplink_datagrams": sent, "uplink_dropped": dropped,
            "video_media_sent": vm["sent"], "video_media_dropped_uplink": vm["dropped_uplink"],
            "video_unrepaired": vm["lost"], "video_unrepaired_pct": vm["lost_pct"],
            "video_never_through_relay": vm["never_delivered"], "video_resent_over_64_behind": vm["resent_over_64_behind"],
            "video_gaps": vm["gaps"], "video_gaps_pct": vm["gaps_pct"], "false_holes_pct": false_holes,
            "video_repair_p50_ms": vm["repair_p50_ms"], "video_repair_p99_ms": vm["repair_p99_ms"],
            "video_duplicates": vm["duplicates"], "audio_lost_pct": am["lost_pct"], "audio_gaps_pct": am["gaps_pct"],
            "padding_datagrams": vm["padding_datagrams"], "rtx_datagrams": vm["rtx_datagrams"],
            "nack_datagrams_to_publisher": relay["downlink_rtcp"].get("nack", 0),
            "pli_datagrams_to_publisher": relay["downlink_rtcp"].get("pli", 0),
            "ffmpeg_decode_errors": e.get("frames"), "ffmpeg_errors_by_kind": e.get("by_kind"),
            "ffmpeg_rtp_missed": e.get("rtp_missed"), "ffmpeg_rtp_dropped_late": e.get("rtp_dropped_late"),
        }
        check("the lossy relay dropped uplink datagrams (the row measured loss)", dropped > 0,
              f"{dropped} of {sent} ({100 * dropped / max(sent, 1):.2f} %); video media {vm['dropped_uplink']} of {vm['sent']}")
        check("FFmpeg's decode errors <= the media packets left unrepaired at the consumer",
              e.get("frames", 0) <= unrepaired,
              f"{e.get('frames')} damaged frames ({', '.join(f'{k}: {n}' for k, n in (e.get('by_kind') or {}).items() if n)}"
              f"{'none' if not e.get('frames') else ''}) vs {vm['lost']} unrepaired of {vm['sent']} sent "
              f"({vm['lost_pct']} %: {vm['never_delivered']} never got through the relay, {vm['resent_over_64_behind']} "
              f"resent > 64 sequence numbers behind); FFmpeg's RTP demuxer (video and audio) missed {e.get('rtp_missed')} packets "
              f"and dropped {e.get('rtp_dropped_late')} repairs as too late")
        check(f"no false holes beyond the goal (sequence gaps - unrepaired <= {FALSE_HOLES_GOAL_PCT} %)",
              false_holes is not None and false_holes <= FALSE_HOLES_GOAL_PCT,
              f"gaps {vm['gaps']} of {vm['expected']} expected ({vm['gaps_pct']} %) vs unrepaired {vm['lost']} "
              f"({vm['lost_pct']} %): {false_holes:.2f} % false holes; {vm['padding_datagrams']} padding datagrams "
              f"on the uplink" if false_holes is not None else "nothing measured")
        check.notes.append(
            f"lossy relay: {path.relay.up.describe()} uplink (seed {self.spec.loss_seed}), {dropped} of {sent} datagrams "
            f"dropped; video repair p50 / p99 {vm['repair_p50_ms']} / {vm['repair_p99_ms']} ms; "
            f"{relay['downlink_rtcp'].get('nack', 0)} NACK datagrams to the publisher; audio lost {am['lost_pct']} %")

    def cleanup(self, run: Row) -> None:
        if self.path is not None:
            path, self.path = self.path, None
            path.close()
