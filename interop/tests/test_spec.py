"""Row selection, the frozen row specs, and the namespace command."""

import dataclasses

import pytest

from driver.netns import unshare_command
from driver.reconnect import largest_pause, steps_back
from driver.scenario import Scenario, scenario_for
from driver.spec import ROWS, select_rows


def test_select_rows_in_order_once_with_aliases():
    assert select_rows("vp8, aiortc-h264,h264") == ["aiortc-vp8", "aiortc-h264"]
    assert select_rows("all") == list(ROWS)
    with pytest.raises(ValueError):
        select_rows("nope")


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROWS["aiortc-h264"].codec = "vp8"


def test_every_row_has_one_scenario():
    kinds = {name: type(scenario_for(spec)).__name__ for name, spec in ROWS.items()}
    assert kinds["aiortc-h264-reconnect"] == "Reconnect"
    assert kinds["chromium-vp8-simulcast"] == "Simulcast"
    assert type(scenario_for(ROWS["aiortc-h264"])) is Scenario
    assert ROWS["aiortc-vp8"].codecs == "VP8+Opus"
    assert kinds["chromium-h264-lossy"] == "Lossy" and ROWS["chromium-h264-lossy"].loss == 0.05


def test_unshare_as_root_or_in_a_user_namespace():
    assert unshare_command(["x"], root=True)[:3] == ["unshare", "--net", "--"]
    user = unshare_command(["x", "y"], root=False)
    assert user[:4] == ["unshare", "--user", "--map-root-user", "--net"]
    assert user[-2:] == ["x", "y"]


def test_reconnect_helpers():
    assert steps_back([0, 1, 1, 3, 2]) == [2, 4]
    assert largest_pause([(0.0,), (0.1,), (2.5,), (2.6,)]) == 2


def test_cluster_rows_share_node_args_and_differ_in_mode(tmp_path):
    from driver.cluster import Cluster
    from driver.publishers import Chromium

    redirect, proxy = ROWS["aiortc-h264-307"], ROWS["chromium-h264-cluster"]
    assert type(scenario_for(redirect)) is Cluster and type(scenario_for(proxy)) is Cluster
    assert (redirect.cluster, proxy.cluster) == ("redirect", "proxy")
    assert proxy.token and proxy.ice_restart and not redirect.ice_restart
    # Every node's common arguments come from one place; the mode flag is not among them.
    assert "--cluster-redirect-publish" not in Cluster(redirect).node_args("a")

    class NoProcs:
        def watch_dir(self, _):
            pass

    cmd = Chromium(proxy, 12.0, tmp_path, tmp_path / "shot.png").command("127.0.0.1:1", "x", NoProcs())
    assert cmd[cmd.index("--ice-restart-after") + 1] == "4.0" and "--delete-without-token" in cmd
    url = cmd[cmd.index("--url") + 1]
    assert url.startswith("http://127.0.0.1:1/publish/x?") and url.endswith("#token=" + proxy.token)


def test_counters_between_and_grew():
    from types import SimpleNamespace as C

    from driver.cluster_proxy import counters_between, grew

    samples = [(t, "s", 1, C(video_packets=10 * t)) for t in (1.0, 2.0, 3.0, 4.0)]
    assert [s[0] for s in counters_between(samples, 1.0, 4.0)] == [2.0, 3.0]
    assert grew(counters_between(samples, 1.5, 5.0), "video_packets") == 20
    assert grew(samples[:1], "video_packets") == 0
