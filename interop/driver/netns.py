"""The private network namespace every interop run happens in: the one place that enters it.

Everything must stay on loopback. When the driver sees a network interface besides lo, it
re-executes itself inside a new network namespace whose only interface is lo (brought up):
as root with `unshare --net`, otherwise in a user namespace that maps us to root inside
(`unshare --user --map-root-user --net`)."""

from __future__ import annotations

import os
import shutil
import sys

ENV_MARK = "WHIPGATE_INTEROP_IN_NETNS"


def non_loopback_interfaces() -> list[str]:
    """Interfaces this process sees besides lo."""
    # /proc/net/dev follows this process's network namespace (/sys/class/net may not).
    try:
        with open("/proc/net/dev") as f:
            names = [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]
    except OSError:
        return []
    return sorted(n for n in names if n and n != "lo")


def unshare_command(argv: list[str], root: bool) -> list[str]:
    """The command that runs `argv` in a new network namespace with lo up."""
    ns = ["--net"] if root else ["--user", "--map-root-user", "--net"]
    return ["unshare", *ns, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def ensure_private(allow_host_network: bool, log) -> None:
    """Returns when only lo is visible (or the caller allows the host network); otherwise
    re-executes this process inside a private network namespace, or exits saying why not."""
    others = non_loopback_interfaces()
    if not others or allow_host_network:
        return
    if os.environ.get(ENV_MARK):
        sys.exit(f"still see interfaces {others} inside the namespace; refusing to run")
    if not shutil.which("unshare") or not shutil.which("ip"):
        sys.exit(f"interfaces {others} besides lo are visible and unshare/ip are missing "
                 "(apt-get install util-linux iproute2), or pass --allow-host-network")
    log(f"interfaces {others} besides lo: re-running inside a private network namespace")
    cmd = unshare_command([sys.executable, *sys.argv], root=os.geteuid() == 0)
    os.execvpe("unshare", cmd, dict(os.environ, **{ENV_MARK: "1"}))
