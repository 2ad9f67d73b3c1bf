"""The cluster rows: a private redis-server and two whipgate nodes on it. Node a is full
(--max-publishers 0), node b has room. The ingest is registered on a; b starts after (it reads
the registration from Redis at boot). The publisher talks to a; FFmpeg decodes what b forwards.
GetIngest and the events come from b, the node holding the session.

- "redirect" (a runs with --cluster-redirect-publish): a answers the POST 307 to b's WHIP URL,
  the publisher follows it (a real aiortc publisher: aiohttp re-sends the offer) and connects
  to b.
- "proxy": a carries the POST to b over the cluster's routed calls and answers 201 with b's
  answer (its candidates name b's UDP port, so media flows straight to b); the ICE restart
  PATCH and the DELETE to the session URL on a are carried to b the same way
  (cluster_proxy.py checks them).

Every process (redis-server, both nodes) is started through the row's Procs: stopped by PID,
killed in cleanup whatever happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING

from . import cluster_proxy
from .control import EventWatcher
from .procs import Procs, log, read_ready_line
from .scenario import Scenario

if TYPE_CHECKING:
    from .row import Row

REDIS_READY_S = 10.0
PLACEMENT_READY_S = 15.0


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_node_ids(port: int) -> list[bytes]:
    """The node ids in whipgate's node set (ZRANGE whipgate:nodes 0 -1), [] if unreachable."""
    parts = [b"ZRANGE", b"whipgate:nodes", b"0", b"-1"]
    cmd = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(cmd)
            reply = s.recv(4096)
    except OSError:
        return []
    lines = reply.split(b"\r\n")
    return [x for x, prev in zip(lines[1:], lines) if prev.startswith(b"$")]


class Cluster(Scenario):
    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.redis_port = 0
        self.secret_file = None
        self.node_b = None
        self.ready_b: dict = {}
        self.a_control: tuple = ()
        self.ready_a: dict = {}
        self.samples: list[tuple] = []  # (time.time(), session id, state, counters) from b
        self.gauges: dict[str, list] = {"a": [], "b": []}  # whipgate_live_publishers while live

    def node_args(self, node_id: str) -> list[str]:
        """Every node's arguments (the mode's own are added for a only): the cluster's Redis,
        its shared secret (routed calls and records are authenticated with it), and an ICE-TCP
        port of its own (two nodes on one host cannot both take the fixed default)."""
        return ["--cluster-redis", f"redis://127.0.0.1:{self.redis_port}/0", "--node-id", node_id,
                "--cluster-secret-file", str(self.secret_file), "--tcp-listen", "127.0.0.1:0"]

    def gateway_args(self, run: Row) -> list[str]:
        """Starts redis-server; node a joins the cluster full."""
        self.secret_file = run.workdir / "cluster.secret"
        self.secret_file.write_text(os.urandom(32).hex())
        self.secret_file.chmod(0o600)
        self.redis_port = free_tcp_port()
        with open(run.workdir / "redis.log", "wb") as out:
            run.procs.start("redis-server", [
                "redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                "--save", "", "--appendonly", "no", "--dir", str(run.workdir),
            ], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_READY_S
        while not redis_ping(self.redis_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING within {REDIS_READY_S} s")
            time.sleep(0.1)
        log(f"  redis-server on 127.0.0.1:{self.redis_port}")
        mode = ["--cluster-redirect-publish"] if self.spec.cluster == "redirect" else []
        return [*self.node_args("a"), "--max-publishers", "0", *mode]

    def after_register(self, run: Row, ready: dict, stub):
        """Starts node b and waits for its node record (what a's placement reads). The row
        then publishes to a's HTTP address, and checks the answer's UDP port, GetIngest and
        the events on b (which holds the session)."""
        import grpc

        env = dict(os.environ, NO_COLOR="1")
        with open(run.workdir / "whipgate-b.stderr", "wb") as err:
            self.node_b = run.procs.start("whipgate-b", [
                run.args.whipgate, "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                "--udp-listen", "127.0.0.1:0", "--data-dir", str(run.workdir / "data-b"),
                *self.node_args("b"),
            ], stdout=subprocess.PIPE, stderr=err, env=env)
        self.ready_b = read_ready_line(self.node_b, run.args.ready_timeout)
        log(f"  whipgate b ready: {self.ready_b}")
        deadline = time.monotonic() + PLACEMENT_READY_S
        while b"b" not in redis_node_ids(self.redis_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node b's record not in Redis within {PLACEMENT_READY_S} s")
            time.sleep(0.1)
        self.ready_a = dict(ready)
        # The row's control plane moves to b; a's stays open until shutdown.
        self.a_control = (run.channel, run.watcher)
        run.channel = grpc.insecure_channel(self.ready_b["grpc"])
        grpc.channel_ready_future(run.channel).result(timeout=10)
        stub_b = run.pbg.IngestControlStub(run.channel)
        run.watcher = EventWatcher(stub_b, run.pb, run.ingest_id)
        if not run.watcher.subscribed.wait(5):
            log("  WatchEvents on b sent no headers within 5 s; going on")
        ing = stub_b.GetIngest(run.pb.GetIngestRequest(ingest_id=run.ingest_id), timeout=5).ingest
        run.check("node b reads the registration made on a", ing.ingest_id == run.ingest_id)
        return dict(self.ready_b, http=ready["http"]), stub_b

    def observe(self, run: Row, ingest) -> None:
        if ingest.HasField("session"):
            s = ingest.session
            self.samples.append((time.time(), s.session_id, s.state, s.counters))

    def poll(self, run: Row, stub, snapshots: list) -> None:
        if self.spec.cluster == "proxy":
            for node, ready in (("a", self.ready_a), ("b", self.ready_b)):
                self.gauges[node].append(cluster_proxy.live_publishers(ready["http"]))

    def check_counts(self, run: Row, sessions, session_ids, v, au, keep, ff_text) -> None:
        super().check_counts(run, sessions, session_ids, v, au, keep, ff_text)
        if self.spec.cluster == "proxy":
            cluster_proxy.check(run, self, v)
            return
        post = (sessions[0] if sessions else {}).get("post") or {}
        hops = post.get("redirects") or []
        want = f"http://{self.ready_b.get('http')}/whip/{run.ingest_id}"
        run.check("the publisher's POST followed one 307 to node b",
                  [(h.get("status"), h.get("location")) for h in hops] == [(307, want)],
                  f"{hops}, final URL {post.get('final_url')}")

    def shutdown(self, run: Row) -> None:
        """Node b ends on SIGTERM; a's control channel closes (a itself stops with the row)."""
        channel, watcher = self.a_control or (None, None)
        if watcher is not None:
            watcher.close()
        if channel is not None:
            channel.close()
        if self.node_b is not None:
            code = Procs.stop(self.node_b, signal.SIGTERM, 10)
            run.check("whipgate b exits on SIGTERM within 10 s", code is not None, f"exit {code}")
