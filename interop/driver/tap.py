"""A transparent UDP relay between whipgate and FFmpeg that records every forwarded RTP
header (the reconnect row checks SSRC, sequence and timestamp continuity on the wire)."""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time

from .rtpstats import padding_only


class RtpTap:
    """A transparent UDP relay between whipgate and FFmpeg: per kind an RTP port and its RTCP
    port (+1), whipgate's datagrams go on to FFmpeg's ports unchanged, FFmpeg's (receiver
    reports) back to whipgate. Every RTP header from whipgate is recorded: (wall time, SSRC,
    sequence number, timestamp, marker, payload type, padding only?), and the SSRCs of its RTCP
    sender reports. A thread in this process; close() stops it and closes its sockets."""

    def __init__(self, ports: dict[str, tuple[int, int]]) -> None:  # kind -> (listen, FFmpeg)
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.rtp: dict[str, list[tuple[float, int, int, int, bool, int, bool]]] = {k: [] for k in ports}
        self.sr_ssrcs: dict[str, set[int]] = {k: set() for k in ports}
        self.whipgate: dict[int, tuple] = {}  # socket fd -> whipgate's address, for replies
        self.lock = threading.Lock()
        try:
            for kind, (listen, target) in ports.items():
                for off in (0, 1):
                    sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self.socks.append(sk)
                    sk.bind(("127.0.0.1", listen + off))
                    sk.setblocking(False)
                    self.sel.register(sk, selectors.EVENT_READ, (kind, off == 1, ("127.0.0.1", target + off)))
        except OSError:
            self.close()
            raise
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.1):
                sk, (kind, rtcp, target) = key.fileobj, key.data
                try:
                    data, src = sk.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                now = time.time()
                try:
                    if src == target:  # FFmpeg's receiver report: back to whipgate
                        back = self.whipgate.get(sk.fileno())
                        if back:
                            sk.sendto(data, back)
                        continue
                    self.whipgate[sk.fileno()] = src
                    sk.sendto(data, target)
                except OSError:
                    continue
                if len(data) < 12 or data[0] >> 6 != 2:
                    continue
                with self.lock:
                    if rtcp:
                        if data[1] == 200:  # sender report
                            self.sr_ssrcs[kind].add(struct.unpack_from(">I", data, 4)[0])
                    else:
                        seq, ts, ssrc = struct.unpack_from(">HII", data, 2)
                        self.rtp[kind].append((now, ssrc, seq, ts, bool(data[1] & 0x80), data[1] & 0x7F,
                                               padding_only(data)))

    def packets(self, kind: str) -> list[tuple[float, int, int, int, bool, int, bool]]:
        with self.lock:
            return list(self.rtp[kind])

    def close(self) -> None:
        if getattr(self, "stop", None) is not None:
            self.stop.set()
            self.thread.join(2)
        self.sel.close()
        for sk in self.socks:
            sk.close()
