"""Counts as people write them: parsing, formatting, rounding up."""

from __future__ import annotations

import pytest

from minidml.counts import format_count, parse_count, round_up
from minidml.errors import MinidmlError


@pytest.mark.parametrize("text, value", [
    ("20M", 20_000_000), ("20m", 20_000_000), ("1.5M", 1_500_000), ("20k", 20_000),
    ("2B", 2_000_000_000), ("3G", 3_000_000_000), ("1.001k", 1001), ("0.5k", 500),
    (".5M", 500_000), ("20_000_000", 20_000_000), (" 5000 ", 5000), ("7", 7), (7, 7),
    ("4.35k", 4350),
])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.5", "-5M", "0", "0k", "1.0005k", "5X", "1e6",
                                  "1__0", "20M!", "M", True, 0])
def test_parse_count_rejects(text):
    with pytest.raises(MinidmlError, match=r"^--budget "):
        parse_count(text)
    with pytest.raises(MinidmlError, match=r"^--targets "):
        parse_count(text, option="--targets")


def test_format_count():
    assert format_count(20_000_000) == "20M"
    assert format_count(1_500_000) == "1.5M"
    assert format_count(5_600_000) == "5.6M"
    assert format_count(2_000_000_000) == "2B"
    assert format_count(999) == "999"
    # rounded before the suffix is chosen: never "1000k" or "1e+03k"
    assert [format_count(n) for n in (999_600, 999_999_999, 999.6, 1_500 * 10**9)] == [
        "1M", "1B", "1k", "1500B"]
    for n in (5_600_000, 1_110_000, 20_000, 3 * 10**9):
        assert parse_count(format_count(n)) == n


@pytest.mark.parametrize("n, digits, up", [
    (5_510_400, 2, 5_600_000), (5_600_000, 2, 5_600_000), (1_000_001, 2, 1_100_000),
    (981, 2, 990), (999, 2, 1000), (12, 3, 12), (7, 1, 7), (0, 2, 0),
])
def test_round_up(n, digits, up):
    assert round_up(n, digits) == up
    assert round_up(n, digits) >= n
