"""Energy over a measured window: joules per inference and average watts, or why not.

Place in the data path: the worker's case driver wraps its measured window in a meter from
here (or the session's own); the figures land in the case record's ``energy``.

A meter has ``start()`` and ``stop() -> joules``; ``available()`` says whether it can read.
- :class:`RaplMeter` reads Linux powercap RAPL counters
  (``/sys/class/powercap/intel-rapl:N/energy_uj``, microjoules, monotonically increasing
  and wrapping at ``max_energy_range_uj``). Each top-level zone's ``name`` is read:
  ``package-N`` zones are summed, E = sum over packages of (end - start) mod range.
  ``psys`` (the platform zone of Intel client machines) already includes the packages, so
  it is used only where there is no package zone, never added to them; other top-level
  zones (e.g. ``dram`` on some servers) are left out and named. It counts the whole package
  (every process on it), so figures are honest only on an otherwise idle machine; the
  record says so.
- GPU backends bring their own meter (NVML's total-energy counter).
Where no counter is readable the case records ``energy: {"available": false, "reason": ...}``;
a meter that fails when the window ends does the same and the latency measured is kept.
"""
from __future__ import annotations

from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


def _zone_name(d: Path) -> str | None:
    try:
        return (d / "name").read_text().strip() or None
    except OSError:
        return None


def select_rapl_zones(zones: list[tuple[Path, str | None]]) -> tuple[list[Path], str, list[str]]:
    """Which top-level RAPL zones to sum: (chosen, scope, excluded names with why).

    ``package-*`` zones (a zone with no readable name is taken as a package, as in kernels
    before names existed); ``psys`` only when there is no package zone, since psys already
    includes the package energy; anything else is excluded.
    """
    packages = [d for d, n in zones if n is None or n.startswith("package")]
    psys = [d for d, n in zones if n == "psys"]
    excluded = []
    if packages:
        chosen, scope = packages, "cpu package(s), all processes"
        excluded += [f"{n} (includes the packages: not added)" for d, n in zones if n == "psys"]
    elif psys:
        chosen, scope = psys, "platform (psys: packages and more), all processes"
    else:
        chosen, scope = [], ""
    excluded += [f"{n} (not a package zone)" for d, n in zones
                 if n is not None and n != "psys" and not n.startswith("package")]
    return chosen, scope, excluded


class RaplMeter:
    source = "rapl"

    def __init__(self, root: Path | str = POWERCAP):
        self.root = Path(root)
        top = sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1) \
            if self.root.is_dir() else []
        named = [(d, _zone_name(d)) for d in top]
        self.domains, self.scope, self.excluded = select_rapl_zones(named)
        names = dict(named)
        self.zones = [names[d] or d.name for d in self.domains]
        if not self.scope:
            self.scope = "cpu package(s), all processes"
        self._start: list[int] | None = None

    def available(self) -> tuple[bool, str]:
        if not self.domains:
            what = f" (only: {', '.join(self.excluded)})" if self.excluded else ""
            return False, f"no RAPL package counters under {self.root}{what}"
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


def measure_energy(meter, window, *, inferences_of, duration_of=None) -> tuple[object, dict]:
    """Run ``window()`` (returns a result) inside the meter; returns (result, energy record).

    ``inferences_of(result)`` gives how many inferences the window ran, ``duration_of(result)``
    its seconds (default: the result's ``duration_s``). joules_per_inference = J / max(1, n);
    avg_watts = J / s.
    A meter that raises (or returns None) when the window ends leaves the result intact and
    records energy as unavailable with the reason: a failed reading never costs a latency.
    """
    if meter is None:
        return window(), {"available": False, "reason": "this backend has no energy counter"}
    ok, why = meter.available()
    if not ok:
        return window(), {"available": False, "reason": why}
    meter.start()
    result = window()
    try:
        joules = meter.stop()
    except Exception as exc:  # noqa: BLE001 - the meter failed, the measurement did not
        return result, {"available": False, "reason": f"energy reading failed at the end of the window: "
                                                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    if joules is None:
        return result, {"available": False, "reason": "the energy meter returned no reading for the window"}
    n = max(1, int(inferences_of(result)))
    seconds = max(1e-12, float(duration_of(result) if duration_of is not None else result.duration_s))
    rec = {"available": True, "source": meter.source, "scope": meter.scope, "joules": joules,
           "joules_per_inference": joules / n, "avg_watts": joules / seconds}
    zones = getattr(meter, "zones", None)
    if zones:
        rec["zones"] = list(zones)
        if getattr(meter, "excluded", None):
            rec["excluded_zones"] = list(meter.excluded)
    return result, rec
