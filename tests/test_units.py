"""harness.units: the one set of unit formatters, on hand-computed values."""
from __future__ import annotations

import math

from harness import units as u


def test_fmt_ns_picks_the_unit():
    assert u.fmt_ns(None) == "-" and u.fmt_ns(math.nan) == "-"
    assert u.fmt_ns(512) == "512 ns"
    assert u.fmt_ns(1_234) == "1.23 µs"
    assert u.fmt_ns(1_234_567) == "1.23 ms"
    assert u.fmt_ns(2.5e9) == "2.5 s"
    assert u.fmt_ns(1_234.5e9) == "1,234 s"
    assert u.fmt_time_ns is u.fmt_ns


def test_rates_metrics_counts():
    assert u.fmt_rate(None) == "-" and u.fmt_rate(12) == "12 /s"
    assert u.fmt_rate(12_345) == "12.3 k/s" and u.fmt_rate(2_500_000) == "2.5 M/s"
    assert u.fmt_metric("p90", 2e6) == "2 ms" and u.fmt_metric("throughput", 12_345.6) == "12,346/s"
    assert u.fmt_metric("throughput", 12.3456) == "12.35/s" and u.fmt_metric("accuracy", 0.98765) == "0.9877"
    assert u.fmt_count(1_814_073_344) == "1.814 G" and u.fmt_count(12) == "12"
    assert u.fmt_num(1234.5) == "1,234" and u.fmt_num(0.012345) == "0.0123" and u.fmt_num(None) == ""
    assert u.fmt_pct_change(1.05) == "+5.0%" and u.fmt_pct_change(None) == "-"
    assert u.ns_to_ms(2_500_000) == 2.5 and u.ns_to_ms(None) is None


def test_time_unit_follows_the_median():
    assert u.time_unit([1e3, 2e6, 3e6]) == ("ms", 1e6)
    assert u.time_unit([]) == ("ns", 1.0)
    assert u.pretty_time("2026-11-02T09:00:00.000Z") == "2026-11-02 09:00 UTC"
