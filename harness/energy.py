"""Energy over a measured window: joules per inference and average watts, or why not.

A meter has ``start()`` and ``stop() -> joules``; ``available()`` says whether it can read.
- :class:`RaplMeter` reads Linux powercap RAPL package counters
  (``/sys/class/powercap/intel-rapl:N/energy_uj``, microjoules, monotonically increasing
  and wrapping at ``max_energy_range_uj``): E = sum over packages of
  (end - start) mod range. It counts the whole package (every process on it), so figures
  are honest only on an otherwise idle machine; the record says so.
- GPU backends bring their own meter (NVML's total-energy counter).
Where no counter is readable the case records ``energy: {"available": false, "reason": ...}``.
"""
from __future__ import annotations

from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


class RaplMeter:
    source = "rapl"
    scope = "cpu package(s), all processes"

    def __init__(self, root: Path | str = POWERCAP):
        self.root = Path(root)
        self.domains = sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1) \
            if self.root.is_dir() else []
        self._start: list[int] | None = None

    def available(self) -> tuple[bool, str]:
        if not self.domains:
            return False, f"no RAPL package counters under {self.root}"
        try:
            self._read()
        except OSError as exc:
            return False, f"RAPL counters not readable: {exc.strerror or exc}"
        return True, ""

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def _ranges(self) -> list[int]:
        out = []
        for d in self.domains:
            try:
                out.append(int((d / "max_energy_range_uj").read_text()))
            except OSError:
                out.append(2 ** 32)
        return out

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        end = self._read()
        total_uj = sum((e - s) % r for s, e, r in zip(self._start, end, self._ranges()))
        return total_uj / 1e6


def measure_energy(meter, window, *, inferences_of) -> tuple[object, dict]:
    """Run ``window()`` (returns a result) inside the meter; returns (result, energy record).

    ``inferences_of(result)`` gives how many inferences the window ran; duration comes from
    the result's ``duration_s``.
    """
    if meter is None:
        return window(), {"available": False, "reason": "this backend has no energy counter"}
    ok, why = meter.available()
    if not ok:
        return window(), {"available": False, "reason": why}
    meter.start()
    result = window()
    joules = meter.stop()
    n = max(1, int(inferences_of(result)))
    seconds = max(1e-12, float(result.duration_s))
    return result, {"available": True, "source": meter.source, "scope": meter.scope, "joules": joules,
                    "joules_per_inference": joules / n, "avg_watts": joules / seconds}
