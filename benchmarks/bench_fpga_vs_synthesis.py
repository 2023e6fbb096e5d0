"""bench's FPGA estimate next to published hls4ml synthesis results, design by design, with ratios.

    python benchmarks/bench_fpga_vs_synthesis.py          # every design in the data file
    python benchmarks/bench_fpga_vs_synthesis.py --fit    # also re-derive the fitted constants
    python benchmarks/bench_fpga_vs_synthesis.py --baseline OLD/backends/fpga/estimator.py
                                                          # + another estimator's ratios on the sweep

The reports are ``backends/fpga/data/synthesis_reports.json`` (each with its source); the designs are
rebuilt and costed by :mod:`backends.fpga.calibration` (synthetic, stated weights: the published
models' weights are not published). Prints one table per design: estimate, synthesis and
estimate / synthesis for II, latency, DSP, LUT, FF (and BRAM for the CNNs, per stage too), and the
worst ratio per quantity over the reuse factors whose design fits the part. Asserts nothing; the
targets are held by tests/test_fpga_estimator.py and discussed in docs/fpga.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import backends  # noqa: F401
except ImportError:  # run from a checkout without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.fpga import calibration as cal  # noqa: E402


def _source(design) -> str:
    s = design["source"]
    return f"{s['repository']} {s['commit'][:12]} {s['path']} ({design['tool']}, {design['part']})"


def load_estimator(path: str):
    """Another version of estimator.py (e.g. ``git show 34f2696:backends/fpga/estimator.py > old.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_estimator", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def print_baseline(design, path: str) -> None:
    from backends.fpga.parts import get_part

    old = load_estimator(path)
    layers, part = cal.jet_mlp_layers(), get_part(design["part"])
    print(f"  baseline {path}: estimate / synthesis on the same layers")
    print(f"  {'RF':>4} | " + " | ".join(f"{q:>7}" for q in cal.QUANTITIES))
    for row in design["rows"]:
        d = old.estimate(layers, part, reuse_factor=row["reuse_factor"]).as_dict()
        r = d["resources"]
        got = {"ii": d["ii_cycles"], "latency": d["latency_cycles"], "dsp": r["dsp"], "lut": r["lut"], "ff": r["ff"]}
        print(f"  {row['reuse_factor']:>4} | " + " | ".join(f"{got[q] / row[q]:7.2f}" for q in cal.QUANTITIES))


def print_sweep(design, fit: bool) -> None:
    import backends.fpga.estimator as E

    print(f"\n## {design['title']}\n   {_source(design)}")
    print(f"  {'RF':>4} | " + " | ".join(f"{q + ' est / syn':>24}" for q in cal.QUANTITIES))
    worst = dict.fromkeys(cal.QUANTITIES, 0.0)
    for row in cal.sweep_rows(design):
        cells = []
        for q in cal.QUANTITIES:
            e, s = row["est"][q], row["syn"][q]
            if row["fits"]:
                worst[q] = max(worst[q], abs(e / s - 1))
            cells.append(f"{e:>8,} / {s:<8,} {e / s:5.2f}")
        note = "" if row["fits"] else "   (does not fit the part)"
        held = " h" if row["reuse_factor"] in cal.HOLD_RF else "  "
        print(f"  {row['reuse_factor']:>4}{held}| " + " | ".join(cells) + note)
    print("  h = held out of the fit.  worst |est/syn - 1| where the design fits: "
          + ", ".join(f"{q} {v:.0%}" for q, v in worst.items()))
    if fit:
        got = cal.fit_constants(design)
        print(f"  constants fitted on RF {', '.join(map(str, cal.FIT_RF))} (held out "
              f"{', '.join(map(str, cal.HOLD_RF))}); value in backends/fpga/estimator.py in brackets:")
        for k, v in got.items():
            print(f"    {k:<24} {v:.4f}   [{getattr(E, k)}]")


def print_cnn(design, quantized: bool) -> None:
    c = cal.cnn_compare(design, quantized)
    print(f"\n## {design['title']}\n   {_source(design)}   [{c['architecture']}]")
    print(f"  {'':<8} {'estimate':>10} {'csynth':>10} {'est/cs':>7} {'Vivado':>10} {'est/viv':>7}")
    for q in ("ii", "latency", "dsp", "lut", "ff", "bram18"):
        e, s, v = c["est"][q], c["csynth"][q], c["vivado_synth"].get(q)
        viv = f"{v:>10,} {e / v:7.2f}" if v else f"{'-':>10} {'-':>7}"
        print(f"  {q:<8} {e:>10,} {s:>10,} {e / s:7.2f} {viv}")
    print("  per stage, estimate / csynth:")
    for inst in c["per_instance"]:
        p = c["per_layer"].get(inst["name"])
        if p is None:
            continue
        print(f"    {inst['name']:<14} DSP {p['dsp']:>6,} / {inst.get('dsp', 0):<6,} LUT {p['lut']:>7,} / "
              f"{inst['lut']:<7,} FF {p['ff']:>7,} / {inst['ff']:<7,}")


def print_parts() -> None:
    """The jet MLP (the sweep's design, 16-bit accumulators) folded with --fit on every part."""
    from backends.fpga.estimator import estimate
    from backends.fpga.parts import PARTS

    layers = cal.jet_mlp_layers()
    print("\n## jet MLP (hls4ml config: ap_fixed<16,6>, 16-bit accumulators) with --fit on each part")
    print(f"  {'part':<9} {'strategy':<9} {'reuse':>7} {'II':>4} {'latency':>14} {'inferences/s':>13} {'DSP':>13} {'LUT':>15} "
          f"{'FF':>15} {'BRAM36':>6}")
    for name, part in PARTS.items():
        d = estimate(layers, part, fit_design=True).as_dict()
        r, pc = d["resources"], d["resources"]["percent_of_part"]
        rf = sorted(set(d["reuse_factors"].values()))
        strat = "/".join(sorted({c["strategy"] for c in d["per_layer"] if c.get("strategy")}))
        print(f"  {name:<9} {strat:<9} {'/'.join(map(str, rf)):>7} {d['ii_cycles']:>4} "
              f"{d['latency_cycles']:>4} = {d['latency_ns']:>5.0f} ns {d['throughput_inferences_per_s']:>13.3g} "
              f"{r['dsp']:>6,} ({pc['dsp']:>3.0f}%) {r['lut']:>7,} ({pc['lut']:>3.0f}%) {r['ff']:>7,} ({pc['ff']:>3.0f}%) "
              f"{r['bram36']:>6}" + ("" if d["fits"] else "  does not fit"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="re-derive the fitted constants from the RF sweep")
    ap.add_argument("--baseline", metavar="ESTIMATOR_PY", help="also print this estimator.py's ratios on the sweep")
    args = ap.parse_args(argv)
    reports = cal.load_reports()
    print_sweep(reports["jet-mlp-rf-sweep-xczu7ev"], args.fit)
    if args.baseline:
        print_baseline(reports["jet-mlp-rf-sweep-xczu7ev"], args.baseline)
    print_cnn(reports["pruned-cnn-svhn-xcu250"], quantized=False)
    print_cnn(reports["qkeras6-pruned-cnn-svhn-xcu250"], quantized=True)
    print_parts()
    return 0


if __name__ == "__main__":
    sys.exit(main())
