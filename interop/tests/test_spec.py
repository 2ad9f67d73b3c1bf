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


def test_unshare_as_root_or_in_a_user_namespace():
    assert unshare_command(["x"], root=True)[:3] == ["unshare", "--net", "--"]
    user = unshare_command(["x", "y"], root=False)
    assert user[:4] == ["unshare", "--user", "--map-root-user", "--net"]
    assert user[-2:] == ["x", "y"]


def test_reconnect_helpers():
    assert steps_back([0, 1, 1, 3, 2]) == [2, 4]
    assert largest_pause([(0.0,), (0.1,), (2.5,), (2.6,)]) == 2
