"""Prices file and the procurement view: throughput per watt, per dollar, cost per million.

The prices file (YAML; see docs/prices.example.yaml and docs/reporting.md)::

    currency: USD                 # a label only (default USD)
    power_price_per_kwh: 0.15     # default for entries priced by purchase
    machines:
      - name: "GPU server"        # shown in the report (default: the match)
        match: {gpu_name: "H100", backend: cuda}
        hourly: 4.10              # price per hour, power included (cloud) ...
      - name: "CPU box"
        match: {hostname: build-07}
        purchase: 9000            # ... or purchase price spread over its lifetime
        lifetime_years: 4
        utilization: 0.5          # share of the lifetime it does useful work (default 1)
        watts: 350                # nameplate power: used when no energy was measured
        peak_gmacs: 1500          # nominal peak (GMAC/s) for the roofline (optional)
        memory_gbps: 200          # nominal memory bandwidth (GB/s) for the roofline (optional)

``match`` keys (all given must hold): ``machine_id``, ``hostname``, ``backend`` (exact,
case-insensitive); ``cpu_model``, ``gpu_name``, ``device`` (case-insensitive substring).
When several entries match a case, the one with the most match keys wins, then the
first in the file.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import BenchError
from harness.report.model import Dataset, _num, usable
from harness.safe import short, unknown_keys

MATCH_KEYS = ("machine_id", "hostname", "cpu_model", "gpu_name", "device", "backend")
ENTRY_KEYS = {"name", "match", "hourly", "purchase", "lifetime_years", "lifetime_hours", "utilization",
              "power_price_per_kwh", "watts", "peak_gmacs", "memory_gbps", "notes"}
TOP_KEYS = {"currency", "power_price_per_kwh", "machines"}
HOURS_PER_YEAR = 8760.0


@dataclass
class PriceEntry:
    name: str
    match: dict[str, str]
    hourly: float | None = None
    purchase: float | None = None
    lifetime_hours: float | None = None
    utilization: float = 1.0
    power_price_per_kwh: float | None = None
    watts: float | None = None
    peak_macs_per_s: float | None = None
    memory_bandwidth: float | None = None

    def matches(self, row: dict) -> bool:
        for key, want in self.match.items():
            w = want.lower()
            if key == "machine_id":
                ok = (row["machine_id"] or "").lower() == w
            elif key == "hostname":
                ok = (row["hostname"] or "").lower() == w
            elif key == "backend":
                ok = row["backend"].lower() == w
            elif key == "cpu_model":
                ok = w in (row["cpu_model"] or "").lower()
            elif key == "gpu_name":
                ok = any(w in g.lower() for g in row["gpus"])
            else:  # device
                ok = w in (row["device"] or "").lower()
            if not ok:
                return False
        return True

    def hourly_cost(self, watts: float | None) -> tuple[float | None, str]:
        """(cost per hour, how it was made) given the power draw to charge for."""
        if self.hourly is not None:
            return self.hourly, "hourly price"
        capex = self.purchase / (self.lifetime_hours * self.utilization)
        years = self.lifetime_hours / HOURS_PER_YEAR
        basis = f"purchase over {years:g} y"
        if self.utilization != 1.0:
            basis += f" at {self.utilization:.0%} use"
        if self.power_price_per_kwh is not None and watts:
            return capex + watts / 1000.0 * self.power_price_per_kwh, basis + " + power"
        return capex, basis + " (no power cost)"


@dataclass
class Prices:
    path: str
    currency: str
    entries: list[PriceEntry]

    def lookup(self, row: dict) -> PriceEntry | None:
        found = [e for e in self.entries if e.matches(row)]
        if not found:
            return None
        return max(found, key=lambda e: (len(e.match), -self.entries.index(e)))


def _positive(value: Any, where: str, *, allow_zero: bool = False) -> float:
    v = _num(value)
    if v is None or v < 0 or (v == 0 and not allow_zero):
        raise BenchError(f"{where}: must be a {'non-negative' if allow_zero else 'positive'} number, "
                         f"got {short(repr(value))}")
    return v


def _check_keys(mapping: dict, allowed, where: str) -> None:
    unknown = set(mapping) - set(allowed)
    if unknown:
        raise BenchError(unknown_keys(where, unknown, allowed))


def parse_prices(data: Any, source: str = "prices") -> Prices:
    """Validate a loaded prices document; one clear :class:`BenchError` naming the spot."""
    if not isinstance(data, dict):
        raise BenchError(f"{source}: expected a mapping with a 'machines' list at the top")
    _check_keys(data, TOP_KEYS, source)
    machines = data.get("machines")
    if not isinstance(machines, list) or not machines:
        raise BenchError(f"{source}: 'machines' must be a non-empty list of price entries")
    default_power = None
    if data.get("power_price_per_kwh") is not None:
        default_power = _positive(data["power_price_per_kwh"], f"{source}: power_price_per_kwh", allow_zero=True)
    entries = []
    for i, item in enumerate(machines):
        where = f"{source}: machines[{i}]"
        if not isinstance(item, dict):
            raise BenchError(f"{where}: expected a mapping, got {type(item).__name__}")
        _check_keys(item, ENTRY_KEYS, where)
        match = item.get("match")
        if not isinstance(match, dict) or not match:
            raise BenchError(f"{where}: needs 'match' with at least one of {', '.join(MATCH_KEYS)}")
        bad = set(match) - set(MATCH_KEYS)
        if bad:
            raise BenchError(f"{where}: unknown match key(s) {', '.join(short(k, 40) for k in sorted(map(str, bad))[:3])} "
                             f"(expected: {', '.join(MATCH_KEYS)})")
        for k, v in match.items():
            if not isinstance(v, (str, int, float)) or isinstance(v, bool) or str(v).strip() == "":
                raise BenchError(f"{where}: match.{k} must be a non-empty string")
        entry = PriceEntry(name=str(item.get("name") or ", ".join(f"{k}={v}" for k, v in match.items())),
                           match={k: str(v) for k, v in match.items()})
        if item.get("hourly") is not None:
            if item.get("purchase") is not None:
                raise BenchError(f"{where}: give either 'hourly' or 'purchase', not both")
            entry.hourly = _positive(item["hourly"], f"{where}: hourly", allow_zero=True)
        elif item.get("purchase") is not None:
            entry.purchase = _positive(item["purchase"], f"{where}: purchase", allow_zero=True)
            if item.get("lifetime_years") is not None:
                entry.lifetime_hours = _positive(item["lifetime_years"], f"{where}: lifetime_years") * HOURS_PER_YEAR
            elif item.get("lifetime_hours") is not None:
                entry.lifetime_hours = _positive(item["lifetime_hours"], f"{where}: lifetime_hours")
            else:
                raise BenchError(f"{where}: 'purchase' needs 'lifetime_years' (or 'lifetime_hours')")
            if item.get("utilization") is not None:
                u = _positive(item["utilization"], f"{where}: utilization")
                if u > 1:
                    raise BenchError(f"{where}: utilization must be in (0, 1], got {short(repr(item['utilization']))}")
                entry.utilization = u
            entry.power_price_per_kwh = default_power
            if item.get("power_price_per_kwh") is not None:
                entry.power_price_per_kwh = _positive(item["power_price_per_kwh"], f"{where}: power_price_per_kwh",
                                                      allow_zero=True)
        else:
            raise BenchError(f"{where}: needs a price: 'hourly', or 'purchase' with 'lifetime_years'")
        if item.get("watts") is not None:
            entry.watts = _positive(item["watts"], f"{where}: watts")
        if item.get("peak_gmacs") is not None:
            entry.peak_macs_per_s = _positive(item["peak_gmacs"], f"{where}: peak_gmacs") * 1e9
        if item.get("memory_gbps") is not None:
            entry.memory_bandwidth = _positive(item["memory_gbps"], f"{where}: memory_gbps") * 1e9
        entries.append(entry)
    currency = data.get("currency") or "USD"
    if not isinstance(currency, str):
        raise BenchError(f"{source}: currency must be a string such as USD")
    return Prices(path=source, currency=currency, entries=entries)


def load_prices(path: str | Path) -> Prices:
    """Read and validate a prices YAML file (see the module doc for the format)."""
    import yaml

    from harness.safe import check_input_file

    if not Path(path).exists() and not Path(path).is_symlink():
        raise BenchError(f"prices file not found: {path}")
    p = check_input_file(path, what="prices file", max_bytes=16 * 1024 * 1024)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise BenchError(f"{p}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{p}: cannot read ({exc})") from None
    return parse_prices(data, str(p))


def apply_nominal_peaks(ds: Dataset, prices: Prices | None) -> None:
    """Give rows without a measured peak the nominal one from their prices entry."""
    if prices is None:
        return
    for r in ds.rows:
        e = prices.lookup(r)
        if e is None:
            continue
        if not r["peak_macs_per_s"] and e.peak_macs_per_s:
            r["peak_macs_per_s"], r["peak_source"] = e.peak_macs_per_s, "nominal"
        if not r["memory_bandwidth"] and e.memory_bandwidth:
            r["memory_bandwidth"] = e.memory_bandwidth


def procurement_rows(ds: Dataset, prices: Prices | None) -> list[dict]:
    """One row per (suite, model, platform): its best usable configuration, ranked.

    The best configuration is the usable case with the highest throughput whose accuracy
    gate did not fail. Ranked within (suite, model) by cost per million inferences when
    priced, else by throughput.
    """
    best: dict[tuple, dict] = {}
    for r in ds.rows:
        if not usable(r) or not r["throughput"] or r["passed"] is False:
            continue
        k = (r["suite"], r["model"], r["platform"])
        if k not in best or r["throughput"] > best[k]["throughput"]:
            best[k] = r
    out = []
    for (suite, model, platform), r in best.items():
        entry = prices.lookup(r) if prices else None
        tput = r["throughput"]
        watts, watts_source, per_watt = None, None, None
        if r["joules_per_inference"]:
            per_watt = 1.0 / r["joules_per_inference"]  # inferences per joule = (1/s) / W
            watts = r["avg_watts"] or tput * r["joules_per_inference"]
            watts_source = "measured"
        elif r["avg_watts"]:
            watts, watts_source = r["avg_watts"], "measured"
            per_watt = tput / watts
        elif entry is not None and entry.watts:
            watts, watts_source = entry.watts, "nameplate"
            per_watt = tput / watts
        hourly, basis = (None, None)
        if entry is not None:
            hourly, basis = entry.hourly_cost(watts)
        per_dollar = tput * 3600.0 / hourly if hourly else None
        out.append({
            "suite": suite, "model": model, "platform": platform, "machine": r["machine"],
            "backend": r["backend"], "runtime": r["runtime"], "device": r["device"],
            "variant": r["variant"], "precision": r["precision"], "batch": r["batch"], "scenario": r["scenario"],
            "basis": r["basis"], "throughput": tput, "watts": watts, "watts_source": watts_source,
            "per_watt": per_watt, "price_entry": entry.name if entry else None, "hourly_cost": hourly,
            "cost_basis": basis, "per_dollar": per_dollar,
            "cost_per_million": hourly / (tput * 3600.0) * 1e6 if hourly is not None else None,
            "case_id": r["case_id"],
        })
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in out:
        groups[(row["suite"], row["model"])].append(row)
    ranked = []
    for k in sorted(groups):
        g = groups[k]
        g.sort(key=lambda x: (x["cost_per_million"] is None,
                              x["cost_per_million"] if x["cost_per_million"] is not None else 0.0,
                              -x["throughput"], x["platform"]))
        for i, row in enumerate(g, 1):
            row["rank"] = i
        ranked.extend(g)
    return ranked
