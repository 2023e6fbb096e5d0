from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.measure.energy import RaplMeter, measure_energy


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


def powercap_tree(root, zones):
    """A faked /sys/class/powercap: ``zones`` = [(name, energy_uj, max_range_uj)], one top-level
    ``intel-rapl:N`` zone each, each with a ``core`` sub-zone (never counted), plus an
    ``intel-rapl-mmio:0`` duplicate of package 0 as on Intel client machines (never counted)."""
    for i, (name, uj, rng) in enumerate(zones):
        d = root / f"intel-rapl:{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(str(uj))
        (d / "max_energy_range_uj").write_text(str(rng))
        sub = root / f"intel-rapl:{i}:0"
        sub.mkdir(exist_ok=True)
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text(str(uj // 2))
    mmio = root / "intel-rapl-mmio:0"
    mmio.mkdir(exist_ok=True)
    (mmio / "name").write_text("package-0\n")
    (mmio / "energy_uj").write_text("0")


def test_rapl_psys_is_not_added_to_the_packages(tmp_path):
    # Intel client machine: package-0 and psys (psys = package + the rest of the platform)
    powercap_tree(tmp_path, [("package-0", 1_000_000, 2**32), ("psys", 5_000_000, 2**32)])
    meter = RaplMeter(tmp_path)
    assert meter.available() == (True, "")
    meter.start()
    powercap_tree(tmp_path, [("package-0", 3_000_000, 2**32), ("psys", 9_000_000, 2**32)])  # +2 J pkg, +4 J psys
    assert meter.stop() == pytest.approx(2.0)  # today's code sums both: 6 J
    assert meter.zones == ["package-0"] and meter.excluded and meter.excluded[0].startswith("psys")
    assert meter.scope.startswith("cpu package")


def test_rapl_psys_alone_is_the_platform_and_other_zones_are_named(tmp_path):
    powercap_tree(tmp_path, [("psys", 0, 2**32), ("dram", 0, 2**32)])
    meter = RaplMeter(tmp_path)
    meter.start()
    powercap_tree(tmp_path, [("psys", 7_000_000, 2**32), ("dram", 1_000_000, 2**32)])
    assert meter.stop() == pytest.approx(7.0)
    assert meter.zones == ["psys"] and meter.scope.startswith("platform")
    assert any(x.startswith("dram") for x in meter.excluded)
    only_dram = tmp_path / "dram-only"
    powercap_tree(only_dram, [("dram", 0, 2**32)])
    ok, why = RaplMeter(only_dram).available()
    assert not ok and "dram" in why


def test_two_socket_server_sums_both_packages_and_records_zones(tmp_path):
    powercap_tree(tmp_path, [("package-0", 0, 2**32), ("package-1", 0, 2**32)])
    meter = RaplMeter(tmp_path)

    def window():
        powercap_tree(tmp_path, [("package-0", 1_500_000, 2**32), ("package-1", 2_500_000, 2**32)])
        return SimpleNamespace(iterations=10, duration_s=1.0)

    _, e = measure_energy(meter, window, inferences_of=lambda r: r.iterations)
    assert e["joules"] == pytest.approx(4.0) and e["zones"] == ["package-0", "package-1"]


def test_a_meter_failing_at_stop_keeps_the_measurement():
    class Broken:
        source, scope = "nvml", "gpu"

        def available(self):
            return True, ""

        def start(self):
            pass

        def stop(self):
            raise RuntimeError("NVML: GPU is lost")

    res, e = measure_energy(Broken(), lambda: SimpleNamespace(iterations=3, duration_s=1.0),
                            inferences_of=lambda r: r.iterations)
    assert res.iterations == 3
    assert e["available"] is False and "GPU is lost" in e["reason"] and "\n" not in e["reason"]
