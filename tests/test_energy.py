from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.energy import RaplMeter, measure_energy


def fake_rapl(root, values, ranges=(2**32,)):
    for i, (v, r) in enumerate(zip(values, ranges)):
        d = root / f"intel-rapl:{i}"
        d.mkdir(exist_ok=True)
        (d / "energy_uj").write_text(str(v))
        (d / "max_energy_range_uj").write_text(str(r))
        sub = root / f"intel-rapl:{i}:0"  # a sub-domain (core): must not be double counted
        sub.mkdir(exist_ok=True)
        (sub / "energy_uj").write_text("0")


def test_rapl_sums_packages_and_handles_wraparound(tmp_path):
    fake_rapl(tmp_path, [1_000_000, 999_000], ranges=(10_000_000, 1_000_000))
    meter = RaplMeter(tmp_path)
    assert meter.available() == (True, "")
    meter.start()
    # package 0 advances 2 J; package 1 wraps: 999,000 -> 1,000,000 (range) -> 500,000 = 0.501 J
    fake_rapl(tmp_path, [3_000_000, 500_000], ranges=(10_000_000, 1_000_000))
    assert meter.stop() == pytest.approx(2.501)


def test_energy_record_per_inference_and_watts(tmp_path):
    fake_rapl(tmp_path, [0])
    meter = RaplMeter(tmp_path)

    def window():
        fake_rapl(tmp_path, [4_000_000])  # 4 J during the window
        return SimpleNamespace(iterations=100, duration_s=2.0)

    _, e = measure_energy(meter, window, inferences_of=lambda r: r.iterations * 8)
    assert e["available"] and e["joules"] == pytest.approx(4.0)
    assert e["joules_per_inference"] == pytest.approx(4.0 / 800) and e["avg_watts"] == pytest.approx(2.0)


def test_no_counters_is_recorded_with_a_reason(tmp_path):
    res, e = measure_energy(RaplMeter(tmp_path / "none"), lambda: SimpleNamespace(iterations=1, duration_s=1.0),
                            inferences_of=lambda r: 1)
    assert e == {"available": False, "reason": f"no RAPL package counters under {tmp_path / 'none'}"}
    assert res.iterations == 1
    _, e = measure_energy(None, lambda: SimpleNamespace(iterations=1, duration_s=1.0), inferences_of=lambda r: 1)
    assert e["available"] is False and "no energy counter" in e["reason"]
