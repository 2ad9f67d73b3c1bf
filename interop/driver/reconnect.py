"""The reconnect row: aiortc publishes, DELETEs, and a new peer connection publishes to the
same ingest while ONE FFmpeg decodes across both sessions; a UDP tap between whipgate and
FFmpeg checks the forwarded SSRC, sequence numbers and timestamps over the gap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ffmpeg import FrameCrc, split_at_largest_gap
from .scenario import Scenario

if TYPE_CHECKING:
    from .row import Row


def steps_back(pts: tuple[int, ...] | list[int]) -> list[int]:
    """Indices of frames whose timestamp is not above the one before."""
    return [i for i in range(1, len(pts)) if pts[i] - pts[i - 1] <= 0]


def largest_pause(packets: list[tuple]) -> int:
    """Index of the packet after the longest wall-clock pause (packets: (time, ...))."""
    return max(range(1, len(packets)), key=lambda k: packets[k][0] - packets[k - 1][0])


class Reconnect(Scenario):
    uses_tap = True
    raw_timestamps = True

    def ffmpeg_seconds(self, seconds: float) -> float:
        # ONE FFmpeg for every session: it must decode across the reconnects and end by itself
        # inside the last session (the reconnect gaps add to the media time).
        return round(self.spec.sessions * seconds - 1.5, 1)

    def check_counts(self, run: Row, sessions: list[dict], session_ids: list[str], v: FrameCrc,
                     au: FrameCrc, keep: float, ff_text: str) -> None:
        """One FFmpeg across the publisher's reconnect: it kept running, decoded both halves,
        its timestamps kept increasing; the tap saw one SSRC per kind whose sequence numbers
        and timestamps continue over the gap; each session had its own publisher SSRCs."""
        check = run.check
        t2 = run.connected_at.get(session_ids[-1])
        exited = None if run.ff_exited_at is None else round(run.ff_exited_at - run.started, 1)
        check("FFmpeg was still running when the new session connected (one FFmpeg, both sessions)",
              t2 is not None and (run.ff_exited_at is None or run.ff_exited_at > t2),
              f"new session CONNECTED at {round(t2 - run.started, 1) if t2 else None} s, "
              f"FFmpeg gone at {exited} s")
        rep: dict = {"sessions": session_ids}
        for kind, info in (("video", v), ("audio", au)):
            rep[kind] = self.check_halves(run, kind, info, sessions, keep)
        if v.pts:
            check.notes.append(f"decoded {rep['video']['first_half']} + {rep['video']['second_half']} video and "
                               f"{rep['audio']['first_half']} + {rep['audio']['second_half']} audio frames "
                               f"before + after the reconnect ({rep['video']['gap_s']} s gap in the video timestamps)")
        mono = [x.strip() for x in ff_text.splitlines() if "Non-monotonous DTS in output stream 0:" in x]
        check("FFmpeg saw no non-monotonous video timestamps", not mono,
              f"{len(mono)} lines, first: {mono[0]}" if mono else "")
        rep["publisher_ssrcs"] = self.check_publisher_ssrcs(run, sessions, session_ids)
        rep["tap"] = self.check_tap(run, sessions, rep["publisher_ssrcs"])
        run.details["reconnect"] = rep

    def check_halves(self, run: Row, kind: str, info: FrameCrc, sessions: list[dict], keep: float) -> dict:
        """Decoded timestamps: increasing, with one gap (the reconnect) between the halves."""
        check = run.check
        pts, tb = info.pts, info.tb or 0
        steps = [b - a for a, b in zip(pts, pts[1:])]
        back = steps_back(pts)
        split, gap = split_at_largest_gap(pts, tb)
        halves = (split, len(pts) - split)
        sent1 = (sessions[0].get("frames_sent") or {}).get(kind, 0)
        rate2 = (sessions[-1].get("frames_sent") or {}).get(kind, 0) / run.seconds
        start2 = pts[split] * tb if split < len(pts) else keep
        exp2 = int(rate2 * max(0.0, keep - start2))
        if kind == "video":
            check("decoded video timestamps strictly increasing", bool(pts) and not back,
                  f"{len(back)} of {len(steps)} steps not increasing"
                  + (f", first at frame {back[0]}: {pts[back[0] - 1]} -> {pts[back[0]]}" if back else ""))
        else:
            check("decoded audio timestamps never go backwards", bool(pts) and all(d >= 0 for d in steps),
                  f"{len(back)} of {len(steps)} steps not increasing")
        typical = sorted(steps)[len(steps) // 2] * tb if steps else 0
        # The reconnect (DELETE, new POST, ICE, DTLS, first media) takes 50-100 ms on loopback
        # now, so the gap can be as short as one and a half frame steps: the first session's
        # last frame precedes the DELETE and the second's first frame follows its connection.
        # A step at least 1.4 frame steps long is the reconnect (aiortc's frames are evenly
        # spaced); it splits the frames where the sessions do, and the next two checks count
        # each half against its session (the tap checks tie the gap to the DELETE).
        check(f"decoded {kind} has one reconnect gap ({gap:.3f} s, typical step {typical * 1000:.0f} ms)",
              typical > 0 and gap >= 1.4 * typical, f"frames {halves[0]} + {halves[1]}")
        check(f"FFmpeg decoded {kind} from the first session (>= half the frames sent)",
              halves[0] > 0 and halves[0] * 2 >= sent1, f"{halves[0]} of {sent1}")
        check(f"FFmpeg decoded {kind} from the second session (>= half the frames expected "
              f"from {start2:.2f} s to {keep} s)", halves[1] > 0 and halves[1] * 2 >= exp2,
              f"{halves[1]} of {exp2}")
        return {"decoded": len(pts), "first_half": halves[0], "second_half": halves[1],
                "gap_s": round(gap, 3), "second_half_starts_s": round(start2, 3),
                "expected_first": sent1, "expected_second": exp2, "non_increasing": len(back)}

    @staticmethod
    def check_publisher_ssrcs(run: Row, sessions: list[dict], session_ids: list[str]) -> list[dict]:
        """Publisher SSRCs (aiortc's own, and whipgate's TrackStarted): new ones each session."""
        started: dict[str, dict[str, int]] = {}
        for e in run.watcher.of("track_started"):
            kind = "video" if e.track_started.kind == run.pb.MEDIA_KIND_VIDEO else "audio"
            started.setdefault(e.session_id, {})[kind] = e.track_started.ssrc
        own = [s.get("ssrcs") or {} for s in sessions]
        for kind in ("video", "audio"):
            ss = [started.get(sid, {}).get(kind) for sid in session_ids]
            run.check(f"TrackStarted {kind} per session = the publisher's SSRC, a new one after the reconnect",
                      all(ss) and len(set(ss)) == len(ss) and ss == [o.get(kind) for o in own],
                      f"{[hex(x) if x else x for x in ss]}, aiortc "
                      f"{[hex(o[kind]) if o.get(kind) else None for o in own]}")
        return own

    @staticmethod
    def check_tap(run: Row, sessions: list[dict], own: list[dict]) -> dict:
        """What FFmpeg received, header by header: one SSRC, +1 sequence, timestamps that
        advance by the wall-clock gap, sender reports on the forwarded SSRC only."""
        check, tap, out = run.check, run.tap, {}
        deleted = sessions[0].get("deleted_at") or 0
        for kind, clock in (("video", 90000), ("audio", 48000)):
            pk = tap.packets(kind) if tap else []
            ssrcs = sorted({p[1] for p in pk})
            check(f"tap: one {kind} SSRC forwarded across the reconnect", len(ssrcs) == 1,
                  f"{[hex(x) for x in ssrcs]} in {len(pk)} packets; publishers "
                  f"{[hex(o[kind]) if o.get(kind) else None for o in own]}")
            if len(pk) < 2:
                continue
            i = largest_pause(pk)
            before, after = pk[i - 1], pk[i]
            gap = after[0] - before[0]
            dseq = (after[2] - before[2]) & 0xFFFF
            dts = ((after[3] - before[3]) & 0xFFFFFFFF) / clock
            jumps = [k for k in range(1, len(pk)) if (pk[k][2] - pk[k - 1][2]) & 0xFFFF != 1]
            out[kind] = {"ssrc": hex(ssrcs[0]) if ssrcs else None, "packets": len(pk),
                         "gap_s": round(gap, 3), "seq": [before[2], after[2]],
                         "ts_advance_s": round(dts, 3), "seq_steps_not_plus_one": len(jumps),
                         "sr_ssrcs": [hex(x) for x in sorted(tap.sr_ssrcs[kind])]}
            check(f"tap: the {kind} reconnect gap ({gap:.2f} s) follows the first DELETE",
                  before[0] <= deleted + 0.5 and after[0] >= deleted,
                  f"last packet {before[0] - deleted:+.3f} s, next {after[0] - deleted:+.3f} s from the DELETE")
            check(f"tap: {kind} sequence numbers continue across the reconnect (+1)", dseq == 1,
                  f"{before[2]} -> {after[2]}")
            check(f"tap: {kind} RTP timestamps advance by the gap (+{dts:.3f} s over {gap:.3f} s)",
                  abs(dts - gap) <= 0.1)
            check(f"tap: RTCP sender reports ({kind}) carry the forwarded SSRC only",
                  tap.sr_ssrcs[kind] <= set(ssrcs), f"{out[kind]['sr_ssrcs']}")
            if jumps:
                check.notes.append(f"tap: {len(jumps)} {kind} sequence steps other than +1 in {len(pk)} packets")
        return out
