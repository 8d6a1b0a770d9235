"""The one log2 histogram module: BCC's layout, bucket bounds, count, average, percentile estimates."""

from __future__ import annotations

import pytest

from bpfscope.output.histogram import Durations, Log2Histogram, Unit, bucket_bounds, bucket_of


def test_bucket_bounds_and_the_slot_of_a_value_agree():
    assert [bucket_bounds(i) for i in range(4)] == [(0, 1), (2, 3), (4, 7), (8, 15)]
    assert bucket_bounds(63) == (1 << 63, (1 << 64) - 1)
    for value in [0, 1, 2, 3, 4, 7, 8, 1023, 1024, 1350, 2047, 2048, 11_000, 22_000, (1 << 64) - 1]:
        low, high = bucket_bounds(bucket_of(value))
        assert low <= value <= high


def test_lines_are_laid_out_as_bcc_prints_them():
    hist = Log2Histogram([0, 0, 3, 1], "usecs")
    assert hist.lines() == [
        "     usecs               : count     distribution",
        "         0 -> 1          : 0        |                                        |",
        "         2 -> 3          : 0        |                                        |",
        "         4 -> 7          : 3        |****************************************|",
        "         8 -> 15         : 1        |*************                           |",
    ]


def test_slots_past_32_use_the_wide_layout_with_half_the_stars():
    slots = [0] * 64
    slots[33] = 2
    lines = Log2Histogram(slots, "nsecs").lines()
    assert lines[0] == "               nsecs                         : count     distribution"
    assert lines[-1] == f"{1 << 33:>20} -> {(1 << 34) - 1:<20} : 2        |{'*' * 20}|"
    assert len(lines) == 35


def test_empty_histogram_prints_nothing_and_has_no_percentiles():
    hist = Log2Histogram([0] * 64, "usecs", total=0)
    assert hist.lines() == []
    assert hist.count == 0 and hist.average is None and hist.percentile(50) is None
    assert hist.summary() == "count 0"
    assert hist.as_dict()["buckets"] == []


def test_percentiles_are_interpolated_within_the_bucket_that_holds_them():
    slots = [0] * 16
    slots[10], slots[13], slots[14] = 10, 5, 3  # 1024-2047, 8192-16383, 16384-32767
    hist = Log2Histogram(slots, "usecs", total=10 * 1400 + 5 * 11000 + 3 * 22000)
    p50 = hist.percentile(50)
    assert p50 is not None and (p50.low, p50.high) == (1024, 2047)
    assert p50.value == pytest.approx(1024 + 1023 * 9 / 10)
    p80 = hist.percentile(80)  # rank 14.4 of 18: the 5 calls after the first 10
    assert p80 is not None and (p80.low, p80.high) == (8192, 16383)
    p90 = hist.percentile(90)  # rank 16.2: among the last 3
    assert p90 is not None and (p90.low, p90.high) == (16384, 32767)
    assert hist.percentile(100).value == 32767  # type: ignore[union-attr]
    assert hist.percentile(0).value == 1024  # type: ignore[union-attr]
    assert hist.average == pytest.approx(135_000 / 18)
    with pytest.raises(ValueError):
        hist.percentile(101)


def test_summary_and_json_view():
    hist = Log2Histogram([0, 2, 2], "usecs", total=14)
    assert hist.summary() == ("count 4, average 3.5 usecs, p50 ≈ 3, p90 ≈ 6, p99 ≈ 7 usecs "
                              "(interpolated within log2 buckets)")
    view = hist.as_dict(percentiles=(50,))
    assert view == {
        "unit": "usecs", "count": 4, "average": 3.5,
        "buckets": [{"low": 0, "high": 1, "count": 0}, {"low": 2, "high": 3, "count": 2},
                    {"low": 4, "high": 7, "count": 2}],
        "percentiles": {"p50": {"estimate": 3.0, "low": 2, "high": 3}},
    }


def test_difference_of_two_readings_is_the_interval():
    later = Log2Histogram([1, 5, 2], "usecs", total=20)
    earlier = Log2Histogram([1, 2, 0], "usecs", total=5)
    delta = later - earlier
    assert delta.slots == [0, 3, 2] and delta.total == 15 and delta.count == 5


def test_durations_add_subtract_and_show_their_exact_total():
    early = Durations(Unit.USECS, (1, 2), 3, 5_000)
    late = Durations(Unit.USECS, (1, 4, 1), 6, 14_000)
    assert late - early == Durations(Unit.USECS, (0, 2, 1), 3, 9_000)
    assert early + late == Durations(Unit.USECS, (2, 6, 1), 9, 19_000)
    shown = (late - early).as_dict()
    assert shown["count"] == 3 and shown["sum_ns"] == 9_000 and shown["average"] == 3.0
    assert shown["buckets"][-1] == {"low": 4, "high": 7, "count": 1}


def test_durations_as_prometheus_buckets_in_seconds():
    waits = Durations(Unit.NSECS, (5, 0, 1, 2, 0, 7), 15, 100)
    # slots 0 and 1 fall into the first exported bucket (le 8 ns), slot 5 past the last into +Inf
    assert waits.prometheus_buckets(range(2, 5)) == [(repr(8e-9), 6), (repr(16e-9), 8), (repr(32e-9), 8),
                                                     ("+Inf", 15)]
