"""Child processes: each in its own process group, stopped by PID with a timeout, killed in
cleanup() (and by the kernel if the driver itself dies). The one place that signals them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path


def log(msg: str) -> None:
    print(f"[interop {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the driver dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def wait_exit(p: subprocess.Popen, timeout: float) -> int | None:
    """The exit code, or None when `p` still runs after `timeout` seconds."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # the group we created for it: its pid is the pgid
    except ProcessLookupError:
        pass


class Procs:
    """The child processes of one row."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen]] = []
        self.markers: list[str] = []

    def start(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent, **kw)
        self.items.append((name, p))
        return p

    @staticmethod
    def stop(p: subprocess.Popen, sig: int, timeout: float, group: bool = True) -> int | None:
        """Sends `sig` (to the process group, or to `p` alone), waits up to `timeout`; on
        timeout SIGKILLs the group and waits 5 s more. Returns the exit code after `sig`, or
        None when `sig` was not enough."""
        if group:
            signal_group(p, sig)
        else:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        code = wait_exit(p, timeout)
        if code is None:
            signal_group(p, signal.SIGKILL)
            wait_exit(p, 5)
        return code

    def watch_dir(self, marker: str) -> None:
        """Processes whose command line names `marker` (a browser's fresh profile dir) are
        killed in cleanup(), with their process groups: browsers are started detached by
        their automation libraries, so they are not in their driver's group."""
        self.markers.append(marker)

    def leftovers(self) -> list[int]:
        """Pids of running processes whose command line contains a watched marker."""
        found: list[int] = []
        if not self.markers:
            return found
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                raw = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            cmd = raw.replace(b"\0", b" ").decode(errors="replace")
            if any(m in cmd for m in self.markers):
                found.append(int(d))
        return found

    def kill_leftovers(self) -> list[int]:
        pids = self.leftovers()
        own = os.getpgrp()
        for pid in pids:
            try:
                pgid = os.getpgid(pid)
                if pgid != own:
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def cleanup(self) -> None:
        """SIGKILLs every process group started here (children such as ffmpeg under timeout
        may outlive their parent) and every watched leftover."""
        pids = self.kill_leftovers()
        if pids:
            log(f"killed leftover browser processes {pids}")
        for name, p in self.items:
            if p.poll() is None:
                log(f"killing {name} (pid {p.pid})")
            signal_group(p, signal.SIGKILL)
            if wait_exit(p, 10) is None:
                log(f"{name} (pid {p.pid}) did not die after SIGKILL")


def read_ready_line(p: subprocess.Popen, timeout: float) -> dict:
    """Reads whipgate's one JSON ready line from its stdout, with a deadline."""
    box: dict = {}

    def reader() -> None:
        try:
            box["line"] = p.stdout.readline()
        except Exception as e:  # pragma: no cover
            box["error"] = e

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise RuntimeError(f"whipgate printed no ready line within {timeout}s")
    line = box.get("line", b"").decode(errors="replace").strip()
    if not line:
        raise RuntimeError(f"whipgate closed stdout without a ready line (exit {p.poll()})")
    ready = json.loads(line)
    for key in ("http", "grpc", "udp"):
        if key not in ready:
            raise RuntimeError(f"ready line lacks {key!r}: {line}")
    # Drain the rest of stdout so whipgate never blocks on a full pipe.
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    return ready


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no file)"
    return "\n".join(text[-lines:])
