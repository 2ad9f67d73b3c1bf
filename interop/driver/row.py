"""One interop row, phase by phase:

  1. start whipgate on ephemeral loopback ports and read its ready line;
  2. over gRPC: watch events, RegisterIngest with FFmpeg's RTP ports as targets;
  3. start FFmpeg on the ingest's consumer SDP (before any media flows);
  4. publish for the row's seconds, then DELETE the session (a browser: its Stop button),
     polling GetIngest meanwhile;
  5. the WHIP exchange, the live session in GetIngest, SessionEnded after DELETE;
  6. what FFmpeg decoded (frames, resolution, motion, the scenario's own checks);
  7. a clean SIGTERM shutdown, then every process killed by PID, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import traceback
from pathlib import Path

from . import ffmpeg
from .checks import Checks, check_page, check_whip, first_line
from .control import EventWatcher, free_even_ports, post_without_token, session_timings
from .procs import Procs, log, read_ready_line, tail, wait_exit
from .publishers import CLIENTS
from .scenario import scenario_for
from .spec import RowSpec
from .tap import RtpTap

POLL_S = 0.25


class Row:
    def __init__(self, spec: RowSpec, args, pb, pbg, workdir: Path, screenshot: Path) -> None:
        self.spec, self.args, self.pb, self.pbg = spec, args, pb, pbg
        self.workdir, self.screenshot = workdir, screenshot
        self.scenario = scenario_for(spec)
        self.check = Checks()
        self.seconds = spec.seconds_per_session(args.seconds)
        self.publisher = CLIENTS[spec.client](spec, self.seconds, workdir, screenshot)
        self.ingest_id = f"interop-{spec.name}-{os.getpid()}"
        self.procs = Procs()
        self.channel = self.watcher = self.tap = None
        self.gw = self.ff = None
        self.gw_err, self.ff_err = workdir / "whipgate.stderr", workdir / "ffmpeg.stderr"
        self.pub_out, self.pub_err = workdir / "publisher.stdout", workdir / "publisher.stderr"
        self.vcrc, self.acrc = workdir / "video.framecrc", workdir / "audio.framecrc"
        self.frames = {"video": 0, "audio": 0}
        self.sent: dict = {}
        self.resolution: tuple[int, int] | None = None
        self.decoded_resolutions: list[str] = []
        self.version = self.driver = self.na = None
        self.trickle = False
        self.pub_result: dict = {}
        self.snapshots: list = []
        self.connected_at: dict[str, float] = {}  # session id -> first CONNECTED snapshot
        self.ff_exited_at: float | None = None  # monotonic time FFmpeg was first seen gone
        self.details: dict = {}  # what the reconnect and simulcast rows measured
        self.timings: dict[str, dict] = {}  # session id -> the gateway's connect timings
        self.gateway_warns: list[str] = []  # WARN lines of every node's log
        self.started = time.monotonic()

    # ------------------------------------------------------------ helpers for scenarios

    def resolution_text(self) -> str | None:
        return f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else None

    def set_decoded(self, decoded: list[str], unknown_clears: bool = True) -> None:
        """The resolutions FFmpeg decoded, in order; the last one is the row's resolution."""
        self.decoded_resolutions = decoded
        if decoded and "?" not in decoded[-1]:
            self.resolution = tuple(int(x) for x in decoded[-1].split("x"))
        elif decoded and unknown_clears:
            self.resolution = None

    # ------------------------------------------------------------ the run

    def run(self) -> Row:
        """Every phase; a failure anywhere is a failed check, and cleanup always runs."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log(f"row {self.spec.name}: {self.spec.client} {self.spec.codecs} (logs in {self.workdir})")
        try:
            ready = self.start_gateway()
            ready, stub = self.scenario.after_register(self, ready, self.register(ready))
            udp_port = int(ready["udp"].rsplit(":", 1)[1])
            keep = self.start_ffmpeg()
            result = self.publish(ready, stub)
            if self.na is None:
                session_ids, sessions = self.check_sessions(result, udp_port)
                self.check_session_end(stub, session_ids)
                self.check_decoded(sessions, session_ids, keep)
                self.report_timings(session_ids)
            self.shutdown()
            self.check_gateway_warns()
        except Exception as e:
            self.check("row ran to the end", False, f"{type(e).__name__}: {e}")
            traceback.print_exc()
        finally:
            self.cleanup()
        return self

    def start_gateway(self) -> dict:
        env = dict(os.environ)
        # The gateway's own default log filter (RUST_LOG only if the caller set one): the WARN
        # check sees what an operator sees.
        env.setdefault("NO_COLOR", "1")  # plain logs in files
        with open(self.gw_err, "wb") as err:
            self.gw = self.procs.start(
                "whipgate",
                [self.args.whipgate, "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                 "--udp-listen", "127.0.0.1:0", "--data-dir", str(self.workdir / "data"),
                 *self.scenario.gateway_args(self)],
                stdout=subprocess.PIPE, stderr=err, env=env,
            )
        ready = read_ready_line(self.gw, self.args.ready_timeout)
        log(f"  whipgate ready: {ready}")
        return ready

    def register(self, ready: dict):
        import grpc

        pb, check = self.pb, self.check
        self.channel = grpc.insecure_channel(ready["grpc"])
        grpc.channel_ready_future(self.channel).result(timeout=10)
        stub = self.pbg.IngestControlStub(self.channel)
        self.watcher = EventWatcher(stub, pb, self.ingest_id)
        if not self.watcher.subscribed.wait(5):
            log("  WatchEvents sent no headers within 5 s; going on (events may be missed)")
        if self.scenario.uses_tap:
            # whipgate -> tap -> FFmpeg: the tap sees every RTP header FFmpeg gets.
            self.vport, self.aport, reg_v, reg_a = free_even_ports(4)
            self.tap = RtpTap({"video": (reg_v, self.vport), "audio": (reg_a, self.aport)})
        else:
            self.vport, self.aport = reg_v, reg_a = free_even_ports(2)
        codec = {"h264": pb.VIDEO_CODEC_H264, "vp8": pb.VIDEO_CODEC_VP8}[self.spec.codec]
        reg = stub.RegisterIngest(
            pb.RegisterIngestRequest(ingest_id=self.ingest_id, video_target=f"127.0.0.1:{reg_v}",
                                     audio_target=f"127.0.0.1:{reg_a}", video_codecs=[codec],
                                     bearer_token=self.spec.token or ""),
            timeout=10,
        )
        sdp = reg.ingest.consumer_sdp
        check("RegisterIngest created", reg.created, f"video {reg_v}, audio {reg_a}")
        check("consumer SDP names the video port", f"m=video {reg_v} " in sdp, first_line(sdp, "m=video"))
        check("consumer SDP names the audio port", f"m=audio {reg_a} " in sdp, first_line(sdp, "m=audio"))
        if self.tap:
            (self.workdir / "consumer.whipgate.sdp").write_text(sdp)
            sdp = sdp.replace(f"m=video {reg_v} ", f"m=video {self.vport} ").replace(
                f"m=audio {reg_a} ", f"m=audio {self.aport} ")
            log(f"  tap: whipgate -> 127.0.0.1:{reg_v}/{reg_a} -> FFmpeg 127.0.0.1:{self.vport}/{self.aport}")
        (self.workdir / "consumer.sdp").write_text(sdp)
        check(f"consumer SDP has {self.spec.encoding}",
              re.search(rf"a=rtpmap:\d+ {self.spec.encoding}/90000", sdp, re.I) is not None)
        check("consumer SDP has opus", re.search(r"a=rtpmap:\d+ opus/48000", sdp, re.I) is not None)
        ev = self.watcher.wait_for(lambda e: e.WhichOneof("payload") == "ingest_registered", 5)
        check("IngestRegistered event", ev is not None, f"events so far {self.watcher.kinds()}")
        return stub

    def start_ffmpeg(self) -> float:
        """FFmpeg, before any media flows; returns the seconds of each stream it keeps."""
        keep = self.scenario.ffmpeg_seconds(self.seconds)
        cmd = ffmpeg.command(self.workdir / "consumer.sdp", self.vcrc, self.acrc, keep,
                             limit=self.spec.sessions * self.seconds + 60,
                             raw_timestamps=self.scenario.raw_timestamps)
        with open(self.ff_err, "wb") as err:
            self.ff = self.procs.start("ffmpeg", cmd, stdout=subprocess.DEVNULL, stderr=err)
        ffmpeg.wait_listening(self.ff, {self.vport, self.vport + 1, self.aport, self.aport + 1}, self.ff_err)
        log("  ffmpeg listening")
        return keep

    def publish(self, ready: dict, stub) -> dict:
        """Runs the publisher to its end (first, when the row has a token, a POST without it
        must be refused), polling GetIngest; returns its RESULT."""
        import grpc

        pb, check = self.pb, self.check
        if self.spec.token:
            status, www = post_without_token(f"http://{ready['http']}/whip/{self.ingest_id}")
            check("POST without the bearer token: 401", status == 401, f"{status}")
            check("401 carries WWW-Authenticate: Bearer (RFC 6750)", www.lower().startswith("bearer"), repr(www))
        t_publish = time.time() - 1
        cmd = self.publisher.command(ready["http"], self.ingest_id, self.procs)
        log(f"  publisher: {' '.join(cmd)}")
        with open(self.pub_out, "wb") as out, open(self.pub_err, "wb") as err:
            pub = self.procs.start("publisher", cmd, stdout=out, stderr=err, env=self.publisher.env())
        deadline = time.monotonic() + self.spec.sessions * self.seconds + 75
        while pub.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("publisher did not finish in time")
            try:
                ing = stub.GetIngest(pb.GetIngestRequest(ingest_id=self.ingest_id), timeout=2).ingest
                self.scenario.observe(self, ing)
                if ing.HasField("session"):
                    self.snapshots.append(ing.session)
                    if ing.session.state == pb.SESSION_STATE_CONNECTED:
                        self.connected_at.setdefault(ing.session.session_id, time.monotonic())
                    t = session_timings(ing.session)
                    if t is not None:
                        self.timings[ing.session.session_id] = t
            except grpc.RpcError as e:
                log(f"  GetIngest failed: {e.code()} {e.details()}")
            if self.ff_exited_at is None and self.ff.poll() is not None:
                self.ff_exited_at = time.monotonic()
            self.scenario.poll(self, stub, self.snapshots)
            time.sleep(POLL_S)
        result = None
        for line in self.pub_out.read_text(errors="replace").splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
        if result is None:
            raise RuntimeError(f"publisher printed no RESULT (exit {pub.returncode}):\n"
                               f"{tail(self.pub_out)}\n{tail(self.pub_err)}")
        self.pub_result, self.driver = result, result.get("driver")
        self.trickle = bool(result.get("trickle"))
        self.version = result.get("version") or None
        self.sent = result.get("frames_sent", {})
        self.pub_exit = pub.returncode
        if self.procs.markers:
            left = self.procs.leftovers()
            check("no browser process left after the publisher exited", not left, f"pids {left}")
        if result.get("na") and self.spec.na_ok:
            # Not a failure: this publisher cannot do this codec here (said why).
            self.na = result["na"]
            log(f"  n/a: {self.na}")
            check("publisher said why the row is n/a", True, self.na)
        elif self.spec.screenshot:
            shot = self.screenshot
            check("screenshot of the publish page while connected",
                  shot.is_file() and shot.stat().st_size > 1000 and shot.stat().st_mtime >= t_publish, str(shot))
        return result

    def check_sessions(self, result: dict, udp_port: int) -> tuple[list[str], list[dict]]:
        """The WHIP exchange of every session, the page, the publisher's exit, GetIngest live."""
        pb, check = self.pb, self.check
        sessions = result.get("sessions") or [result]
        several = len(sessions) > 1
        session_ids = []
        for i, r in enumerate(sessions, 1):
            answer = self.workdir / (f"answer-{i}.sdp" if several else "answer.sdp")
            check_whip(check, self.spec, r, self.ingest_id, udp_port, answer, f"session {i}: " if several else "")
            session_ids.append((r.get("post", {}).get("location") or "").rstrip("/").rsplit("/", 1)[-1])
        self.publisher.check(check, result)
        if self.spec.browser:
            check_page(check, self.spec, result)
        check("publisher exit 0", self.pub_exit == 0,
              "; ".join(result.get("errors", [])) or f"exit {self.pub_exit}")
        if len(sessions) != self.spec.sessions:
            check(f"publisher ran {self.spec.sessions} sessions", False, f"{len(sessions)}")
        if several:
            check("each session has its own id", len(set(session_ids)) == len(session_ids), f"{session_ids}")

        snapshots = self.snapshots
        connected = [s for s in snapshots if s.state == pb.SESSION_STATE_CONNECTED]
        check("GetIngest showed the live session", bool(snapshots), f"{len(snapshots)} snapshots")
        check("GetIngest session_id = Location's id",
              bool(snapshots) and all(s.session_id in session_ids for s in snapshots),
              f"{sorted({s.session_id for s in snapshots})} vs {session_ids}")
        states: list[str] = []
        for snap in snapshots:
            name = pb.SessionState.Name(snap.state).removeprefix("SESSION_STATE_")
            if not states or states[-1] != name:
                states.append(name)
        check("GetIngest state CONNECTED", bool(connected), " -> ".join(states))
        if several:
            seen = [sid for sid in session_ids if sid in self.connected_at]
            times = [self.connected_at[x] for x in seen]
            check("GetIngest showed every session CONNECTED, in order",
                  seen == session_ids and sorted(times) == times, f"{len(seen)} of {len(session_ids)}")
        if connected:
            c = connected[-1].counters
            check("GetIngest counters video_packets > 0", c.video_packets > 0,
                  f"video {c.video_packets}, audio {c.audio_packets}, "
                  f"forwarded {c.packets_forwarded}, plis {c.plis_sent}")
            check("GetIngest counters audio_packets > 0", c.audio_packets > 0)
        return session_ids, sessions

    def check_session_end(self, stub, session_ids: list[str]) -> None:
        """SessionEnded (PUBLISHER_DELETE) for every session, and no session left in GetIngest."""
        pb, check, watcher = self.pb, self.check, self.watcher
        watcher.wait_for(lambda e: e.WhichOneof("payload") == "session_ended"
                         and e.session_id == session_ids[-1], 10)
        ended = watcher.of("session_ended")
        check("SessionEnded event after DELETE" + (" (each session)" if len(session_ids) > 1 else ""),
              sorted(e.session_id for e in ended) == sorted(session_ids),
              f"ended {[e.session_id for e in ended]}, events {watcher.kinds()}"
              + (f", watch error {watcher.error}" if watcher.error else ""))
        if ended:
            check("SessionEnded session_id = Location's id", all(e.session_id in session_ids for e in ended),
                  f"{[e.session_id for e in ended]!r}")
            check("SessionEnded reason PUBLISHER_DELETE",
                  all(e.session_ended.reason == pb.END_REASON_PUBLISHER_DELETE for e in ended),
                  ", ".join(pb.EndReason.Name(e.session_ended.reason) for e in ended))
        gone = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ing = stub.GetIngest(pb.GetIngestRequest(ingest_id=self.ingest_id), timeout=2).ingest
            if not ing.HasField("session"):
                gone = True
                break
            time.sleep(0.1)
        check("GetIngest has no session after DELETE", gone)

    def check_decoded(self, sessions: list[dict], session_ids: list[str], keep: float) -> None:
        """FFmpeg ends by itself after `keep` seconds of media; then its outputs."""
        check = self.check
        code = wait_exit(self.ff, 20)
        check(f"FFmpeg decoded {keep} s of each stream and exited by itself", code == 0,
              f"exit {code}" if code is not None else "still running 20 s after DELETE")
        if code is None:
            ffmpeg.stop(self.ff)
        v, au = ffmpeg.parse_framecrc(self.vcrc), ffmpeg.parse_framecrc(self.acrc)
        self.frames = {"video": v.frames, "audio": au.frames}
        ff_text = self.ff_err.read_text(errors="replace")
        self.resolution = v.dimensions or ffmpeg.input_resolution(ff_text)
        check("FFmpeg decoded video frames > 0", v.frames > 0, f"{v.frames} decoded, {self.sent.get('video', 0)} sent")
        check("FFmpeg decoded audio frames > 0", au.frames > 0, f"{au.frames} decoded, {self.sent.get('audio', 0)} sent")
        self.scenario.check_video(self, v, ff_text)
        self.scenario.check_corrupt(self, ff_text)
        check("decoded video frames differ (the picture moves)", len(v.crcs) > 1,
              f"{len(v.crcs)} distinct of {v.frames}")
        self.scenario.check_counts(self, sessions, session_ids, v, au, keep, ff_text)

    def report_timings(self, session_ids: list[str]) -> None:
        """The gateway's connect timings of each session, as GetIngest last showed them while
        it was live (measured, never checked against a goal: reported in the results)."""
        for sid in session_ids:
            t = self.timings.get(sid)
            if t is None:
                self.check.notes.append(f"session {sid[:8]}: GetIngest carried no timings "
                                        "(a gateway without Session.timings)")
            else:
                log(f"  gateway timings, session {sid[:8]}: connected {t['connect_ms']} ms after the POST, "
                    f"first keyframe forwarded {t['first_keyframe_ms']} ms after connected")

    # whipgate's own advice about how the row configured it, not a fault of the publish.
    CONFIG_ADVICE = ("ingest registered without a bearer token",)

    def check_gateway_warns(self) -> None:
        """Every node's log after the row: no WARN line but whipgate's configuration advice
        (a token-less registration); --allow-gateway-warn only lists them."""
        warns: list[str] = []
        for path in sorted(self.workdir.glob("whipgate*.stderr")):
            for line in path.read_text(errors="replace").splitlines():
                if re.search(r"\bWARN\b", line) and not any(a in line for a in self.CONFIG_ADVICE):
                    warns.append(f"{path.stem}: {line}")
        self.gateway_warns = warns
        distinct = sorted({re.sub(r"^\S+\s+WARN\s+", "", w.split(": ", 1)[1]) for w in warns})
        if not getattr(self.args, "allow_gateway_warn", False):
            self.check("no WARN line in the gateway logs", not warns,
                       f"{len(warns)} lines; distinct: {distinct[:5]}")
        elif warns:
            log(f"  gateway WARN lines: {len(warns)} ({len(distinct)} distinct), first: {distinct[0][:160]}")

    def shutdown(self) -> None:
        """The one graceful end: gRPC closed, FFmpeg gone, whipgate exits on SIGTERM."""
        self.close_control()
        self.scenario.shutdown(self)
        if self.ff is not None and self.ff.poll() is None:
            Procs.stop(self.ff, signal.SIGKILL, 5)
        code = Procs.stop(self.gw, signal.SIGTERM, 10)
        self.check("whipgate exits on SIGTERM within 10 s", code is not None, f"exit {code}")

    def close_control(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def cleanup(self) -> None:
        """Whatever happened: every process killed by PID, the tap closed, browser profiles
        (tens of MB each, nothing to read) removed."""
        self.close_control()
        self.scenario.cleanup(self)
        self.procs.cleanup()
        if self.tap is not None:
            self.tap.close()
        for profile in self.procs.markers:
            shutil.rmtree(profile, ignore_errors=True)
