"""Layer rates, the highest layer with whipgate's margin, and reading that margin from Rust."""

import pytest

from driver.simulcast import is_highest, layer_rates, layer_samples, layer_sizes, switch_margin

# A real run's browser output (Chromium, rids q, h, f), one sample every ~270 ms.
LAYERS = """starting
LAYERS {"ms":1019,"layers":{"h":{"res":"640x360","bytes":5334},"q":{"res":"320x180","bytes":3556},"f":{"res":"1280x720","bytes":13766}}}
LAYERS {"ms":1296,"layers":{"h":{"res":"640x360","bytes":10489},"q":{"res":"320x180","bytes":5862},"f":{"res":"1280x720","bytes":27331}}}
LAYERS not json
LAYERS {"ms":1563,"layers":{"h":{"res":"640x360","bytes":14720},"q":{"res":"320x180","bytes":7522},"f":{"res":"960x540","bytes":38894}}}
"""


def test_samples_skip_other_lines_and_bad_json():
    samples = layer_samples(LAYERS)
    assert [ms for ms, _ in samples] == [1019, 1296, 1563]
    assert samples[0][1]["f"]["bytes"] == 13766


def test_sizes_collect_every_resolution_per_layer():
    sizes = layer_sizes(layer_samples(LAYERS))
    assert sizes == {"q": {"320x180"}, "h": {"640x360"}, "f": {"1280x720", "960x540"}}


def test_rates_over_the_window():
    rates = layer_rates(layer_samples(LAYERS))
    # 2 s window covers every sample: bytes from 1019 ms to 1563 ms, in bit/s.
    assert rates == {
        "h": int((14720 - 5334) * 8000 / 544),
        "q": int((7522 - 3556) * 8000 / 544),
        "f": int((38894 - 13766) * 8000 / 544),
    }


def test_rates_use_only_the_last_window():
    samples = [(0, {"a": {"bytes": 0}}), (1000, {"a": {"bytes": 1000}}), (5000, {"a": {"bytes": 2000}}),
               (6000, {"a": {"bytes": 3000}})]
    assert layer_rates(samples, window_ms=2000) == {"a": 8000}  # 5000..6000 ms: 1000 bytes


def test_a_layer_that_appears_late_counts_from_zero():
    samples = [(0, {"a": {"bytes": 0}}), (1000, {"a": {"bytes": 1000}, "b": {"bytes": 500}})]
    assert layer_rates(samples) == {"a": 8000, "b": 4000}


def test_rates_need_two_samples_and_time():
    assert layer_rates([]) == {}
    assert layer_rates([(5, {"a": {"bytes": 1}})]) == {}
    assert layer_rates([(5, {"a": {"bytes": 1}}), (5, {"a": {"bytes": 9}})]) == {}


def test_highest_within_the_margin():
    rates = {"q": 100, "h": 300, "f": 350}
    assert is_highest("f", rates, 1.2)
    assert is_highest("h", rates, 1.2)  # 300 * 1.2 >= 350: whipgate keeps h
    assert not is_highest("h", rates, 1.1)
    assert not is_highest("q", rates, 1.2)
    assert not is_highest("x", rates, 1.2)
    assert not is_highest("f", {}, 1.2)


def test_margin_comes_from_the_rust_source():
    # The gateway's own constant: this fails if it disappears or is declared twice.
    assert switch_margin() > 1.0


def test_margin_wants_exactly_one_declaration(tmp_path):
    (tmp_path / "a.rs").write_text("const SWITCH_MARGIN: f64 = 1.5;\n")
    assert switch_margin(tmp_path) == 1.5
    (tmp_path / "b.rs").write_text("const SWITCH_MARGIN: f64 = 1.3;\n")
    with pytest.raises(RuntimeError):
        switch_margin(tmp_path)
    with pytest.raises(RuntimeError):
        switch_margin(tmp_path / "empty")
