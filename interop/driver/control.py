"""whipgate's control plane from the driver's side: generated gRPC stubs, a WatchEvents
consumer, free UDP ports for the consumer, and a POST without a token."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_stubs(tmp: Path):
    """Generates whipgate.v1 Python stubs from crates/proto/proto/ into tmp and imports them."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    proto_dir = REPO / "crates" / "proto" / "proto"
    out = tmp / "stubs"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
         f"--python_out={out}", f"--grpc_python_out={out}",
         str(proto_dir / "whipgate" / "v1" / "control.proto")],
        check=True, timeout=60,
    )
    sys.path.insert(0, str(out))
    pb = importlib.import_module("whipgate.v1.control_pb2")
    pbg = importlib.import_module("whipgate.v1.control_pb2_grpc")
    return pb, pbg


class EventWatcher:
    """Consumes WatchEvents for one ingest in a thread; close() cancels it."""

    def __init__(self, stub, pb, ingest_id: str) -> None:
        self.events: list = []
        self.error: Exception | None = None
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.call = stub.WatchEvents(pb.WatchEventsRequest(ingest_ids=[ingest_id]), timeout=600)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import grpc

        try:
            self.call.initial_metadata()
            self.subscribed.set()
            for ev in self.call:
                with self.cond:
                    self.events.append(ev)
                    self.cond.notify_all()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e
        finally:
            with self.cond:
                self.cond.notify_all()

    def wait_for(self, pred, timeout: float):
        """The first event (seen so far or within `timeout`) for which `pred` holds, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    return None
                self.cond.wait(left)

    def kinds(self) -> list[str]:
        with self.cond:
            return [ev.WhichOneof("payload") or "?" for ev in self.events]

    def snapshot(self) -> list:
        with self.cond:
            return list(self.events)

    def of(self, kind: str) -> list:
        """Every event so far whose payload is `kind`."""
        return [e for e in self.snapshot() if e.WhichOneof("payload") == kind]

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def session_timings(session) -> dict | None:
    """The gateway's connect timings of a Session snapshot (`timings`, whipgate.v1 field 13):
    connect_millis (POST accepted -> ICE + DTLS connected) and first_keyframe_millis (connected
    -> first keyframe forwarded; 0: none yet, shown as None). None when the gateway's proto has
    no such field, or the snapshot does not carry it (yet: 0 is "not connected yet")."""
    try:
        if not session.HasField("timings"):
            return None
    except ValueError:  # stubs generated from a proto without the field
        return None
    t = session.timings
    if not t.connect_millis:
        return None
    return {"connect_ms": t.connect_millis, "first_keyframe_ms": t.first_keyframe_millis or None}


def free_even_ports(n: int) -> list[int]:
    """n even UDP ports on 127.0.0.1 whose port+1 is free too (RTP, RTCP)."""
    held: list[socket.socket] = []
    found: list[int] = []
    try:
        for _ in range(500):
            if len(found) == n:
                break
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind(("127.0.0.1", 0))
            held.append(a)
            port = a.getsockname()[1]
            if port % 2 or port >= 65534:
                continue
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                b.close()
                continue
            held.append(b)
            found.append(port)
    finally:
        for s in held:
            s.close()
    if len(found) < n:
        raise RuntimeError("could not find free even UDP ports")
    return found


def post_without_token(url: str) -> tuple[int, str]:
    """POSTs a (never used) offer with no Authorization: (status, WWW-Authenticate)."""
    import urllib.error
    import urllib.request

    body = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/sdp"})
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("WWW-Authenticate", "")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")
