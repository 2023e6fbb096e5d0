"""The ``fpga`` backend: an FPGA simulator over the exported ONNX graph (no vendor tools needed).

``prepare`` builds a bit-accurate emulator of the graph (:mod:`backends.fpga.emulator`) and an
analytical cycle / resource estimate of the design on a named part
(:mod:`backends.fpga.estimator`). ``Session.run`` returns the emulator's outputs, so the
harness measures accuracy as the FPGA design would reach it; the wall time the harness measures
is the *emulator's* on the host CPU and is labelled so (``backend_info.timing_is``). The FPGA's
latency and throughput are estimates, returned as ``SessionReport.estimates`` (``Session.report()``) and put by
the runner into ``case["estimates"]``.

Options (``bench run --option K=V`` or the flags ``--part``, ``--precision``, ``--reuse-factor``,
``--fit``):

``part``               xcu250 (default), xcvu9p, xczu7ev, xczu9eg, xc7z020 (``bench list parts``)
``precision``          data type of activations, e.g. ``ap_fixed<16,6>`` (default), ``ap_fixed<8,3,AP_RND,AP_SAT>``
``weight_precision``   weights (default: ``precision``); ``bias_precision`` likewise
``accum_precision``    accumulator: ``auto`` (default, exact: hls4ml's inferred accumulator) or a type
``output_precision``   graph outputs (default: the last layer's exact accumulator value)
``softmax_precision``  Softmax output type (default: ``precision``)
``reuse_factor``       N: every layer computes with n_in*n_out/N multipliers; ``fit=1`` (the default
                       when no reuse factor is given) folds each layer just enough to fit the part
``clock_mhz``          overrides the part's typical clock
``max_emulation_macs`` per-sample MAC limit of the numpy emulator (default 2e8)
``strategy``           hls4ml's Strategy for every Dense/Conv: ``latency``, ``resource``, or ``auto`` (default:
                       Latency up to 4096 weights a layer, Resource above; ``fit`` falls back to Resource)
"""
from __future__ import annotations

from typing import Any, Mapping

from backends._common import option_flag
from backends.base import Availability, Backend, DoesNotFit, Option, Session, SessionReport, UnsupportedCase
from harness.errors import BenchError

SIM_VERSION = "1.0"
DEFAULT_PART = "xcu250"
DEFAULT_PRECISION = "ap_fixed<16,6>"
DEFAULT_MAX_EMULATION_MACS = 2e8
KNOWN_OPTIONS = ("part", "precision", "weight_precision", "bias_precision", "accum_precision", "output_precision",
                 "softmax_precision", "reuse_factor", "fit", "clock_mhz", "max_emulation_macs", "strategy")
STRATEGIES = ("auto", "latency", "resource")
TIMING_IS = "emulator wall time on the host CPU, not FPGA latency (FPGA figures: case estimates)"


class FPGAOptionError(BenchError):
    """A bad --part / --precision / --reuse-factor value: one line, exit 2."""


class DesignDoesNotFit(DoesNotFit):
    """The design needs more of the part than it has: a ``does_not_fit`` case with the reason and
    the full estimate (``.estimates``: resources, % of the part, II, latency, ``fits: false``)."""


def _on(v) -> bool:
    """``fit`` and friends: given without a value means on."""
    return option_flag(v, bare=True)


def parse_options(options: Mapping[str, Any] | None) -> dict:
    """Validate backend options; returns normalised values or raises :class:`FPGAOptionError`."""
    from backends.fpga.fixed import PrecisionError, parse_precision
    from backends.fpga.parts import get_part

    opts = dict(options or {})
    unknown = [k for k in opts if k not in KNOWN_OPTIONS]
    if unknown:
        raise FPGAOptionError(f"unknown fpga option '{unknown[0]}' (choose from: {', '.join(KNOWN_OPTIONS)})")
    try:
        part = get_part(opts.get("part") or DEFAULT_PART)
    except BenchError as exc:
        raise FPGAOptionError(str(exc)) from None
    out: dict[str, Any] = {"part": part}
    try:
        out["precision"] = parse_precision(opts.get("precision") or DEFAULT_PRECISION)
        for k in ("weight_precision", "bias_precision", "output_precision", "softmax_precision"):
            out[k] = parse_precision(opts[k]) if opts.get(k) else None
        acc = str(opts.get("accum_precision") or "auto")
        out["accum_precision"] = None if acc.lower() == "auto" else parse_precision(acc)
    except PrecisionError as exc:
        raise FPGAOptionError(f"impossible precision {exc}") from None
    for k in ("precision", "weight_precision"):
        t = out.get(k)
        if t is not None and t.width > 32:
            raise FPGAOptionError(f"impossible precision '{t.name}' for {k}: the emulator handles at most 32-bit "
                                  "data and weights")
    rf = opts.get("reuse_factor")
    fit = opts.get("fit")
    if rf not in (None, "") and fit not in (None, "") and _on(fit):
        raise FPGAOptionError("give either --reuse-factor or --fit, not both")
    if rf not in (None, ""):
        try:
            out["reuse_factor"] = int(str(rf))
        except ValueError:
            raise FPGAOptionError(f"reuse factor '{rf}' is not an integer") from None
        if out["reuse_factor"] < 1:
            raise FPGAOptionError(f"reuse factor must be >= 1, not {rf}")
        out["fit"] = False
    else:
        out["reuse_factor"] = None
        out["fit"] = True if fit in (None, "") else _on(fit)
        if not out["fit"]:
            out["reuse_factor"] = 1
    strategy = str(opts.get("strategy") or "auto").strip().lower()
    if strategy not in STRATEGIES:
        raise FPGAOptionError(f"unknown strategy '{opts.get('strategy')}' (choose from: {', '.join(STRATEGIES)})")
    out["strategy"] = strategy
    for k, default in (("clock_mhz", None), ("max_emulation_macs", DEFAULT_MAX_EMULATION_MACS)):
        v = opts.get(k)
        if v in (None, ""):
            out[k] = default
            continue
        try:
            out[k] = float(v)
        except ValueError:
            raise FPGAOptionError(f"{k} '{v}' is not a number") from None
        if out[k] <= 0:
            raise FPGAOptionError(f"{k} must be positive, not {v}")
    return out


def emulation_mode(precision: str) -> str:
    if precision in ("fp32", "fixed"):
        return "fixed"
    if precision in ("int8", "int4"):
        return "int"
    raise UnsupportedCase(f"fpga simulator: no FPGA path for {precision} variants (FPGA designs here are "
                          "fixed-point or integer; run the fp32 variant with --precision ap_fixed<W,I> instead)")


class FPGASession(Session):
    def __init__(self, emulator, estimate: dict, info: dict):
        super().__init__()
        self._emu = emulator
        self._estimate = estimate
        self.info = info

    def run(self, inputs):
        return self._emu.run(inputs)

    def timings(self):  # the older hook, kept for callers of it
        return {"estimates": self._estimate}

    def report(self) -> SessionReport:
        # the device's figures are estimates; the measured wall time is the emulator's (latency_ns)
        return SessionReport(estimates=self._estimate, info=self.info)

    def close(self):
        self._emu = None


def build(artifact, *, precision: str, batch: int, options: Mapping[str, Any] | None = None):
    """(emulator, estimate dict, info dict) for an artifact: what ``prepare`` does, importable."""
    import numpy as np

    from backends.fpga.emulator import Emulator, EmulatorConfig, UnsupportedOp
    from backends.fpga.estimator import estimate

    opts = parse_options(options)
    mode = emulation_mode(precision)
    data = opts["precision"]
    cfg = EmulatorConfig(mode=mode, data=data, weight=opts["weight_precision"], bias=opts["bias_precision"],
                         accum=opts["accum_precision"], softmax=opts["softmax_precision"],
                         output=opts["output_precision"])
    try:
        emu = Emulator(artifact.onnx_path, cfg)
        feeds = {}
        for inp in artifact.inputs:
            shape = [1 if (i == 0 or d is None) else int(d) for i, d in enumerate(inp["shape"])]
            feeds[inp["name"]] = np.zeros(shape, dtype=inp.get("dtype") or "float32")
        layers = emu.trace(feeds, shape_only=True)
    except UnsupportedOp as exc:
        raise UnsupportedCase(f"fpga simulator: {exc}") from None
    if not any(l.kind in ("dense", "conv", "dwconv") for l in layers):
        raise UnsupportedCase("fpga simulator: the graph has no Dense/Conv layer to map")
    part = opts["part"]
    est = estimate(layers, part, reuse_factor=opts["reuse_factor"], fit_design=opts["fit"],
                   clock_mhz=opts["clock_mhz"], strategy=opts["strategy"])
    d = est.as_dict(batch=batch)
    label = data.name if mode == "fixed" else precision
    d["precision"] = label
    d["emulation"] = cfg.describe()
    d["identity"] = {"device": f"{part['name']} (simulated, {d['clock_mhz']:g} MHz, {d['folding']})",
                     "precision": label}
    d["model_version"] = SIM_VERSION
    d["assumptions"] = "docs/fpga.md"
    if not est.fits:
        res = d["resources"]
        worst = max(("dsp", "lut", "ff", "bram36", "uram"), key=lambda k: res["percent_of_part"][k])
        hint = ("even fully folded" if opts["fit"] else
                f"at reuse factor {opts['reuse_factor']}; try --fit or a larger --reuse-factor")
        raise DesignDoesNotFit(f"{artifact.name}/{artifact.variant} at {label} does not fit {part['name']} "
                               f"({part['board']}) {hint}: " + "; ".join(est.problems)
                               + f" (worst: {worst.upper()} {res['percent_of_part'][worst]:.0f}% of the part)",
                               estimates=d)
    macs = sum(l.macs for l in layers)
    if macs > opts["max_emulation_macs"]:
        raise UnsupportedCase(
            f"fpga simulator: emulating {artifact.name} would take too long in numpy ({macs / 1e6:.0f} M MACs per "
            f"sample > max_emulation_macs {opts['max_emulation_macs'] / 1e6:.0f} M); estimate on {part['name']}: "
            f"latency ~{d['latency_ns'] / 1e3:.3g} us, ~{d['throughput_inferences_per_s']:.3g} inferences/s, "
            f"DSP {d['resources']['percent_of_part']['dsp']:.0f}%, LUT {d['resources']['percent_of_part']['lut']:.0f}%, "
            f"BRAM {d['resources']['percent_of_part']['bram36']:.0f}% (estimated)")
    info = {
        "runtime": "simulator", "engine": "bench numpy fixed-point emulator", "model_version": SIM_VERSION,
        "emulation": cfg.describe(), "part": part["name"], "clock_mhz": d["clock_mhz"],
        "timing_is": TIMING_IS, "simulated": True,
    }
    return emu, d, info


#: the --option settings of the fpga backend; the values are checked further by parse_options
OPTIONS = tuple(
    Option(k, int, minimum=1) if k == "reuse_factor" else
    Option(k, bool) if k == "fit" else
    Option(k, float, minimum=1e-9) if k in ("clock_mhz", "max_emulation_macs") else
    Option(k, str, choices=STRATEGIES) if k == "strategy" else
    Option(k, str)
    for k in KNOWN_OPTIONS)


class FPGABackend(Backend):
    def __init__(self):
        super().__init__(name="fpga", runtimes=("simulator",), default_runtime="simulator", simulated=True,
                         options=OPTIONS)

    def availability(self) -> Availability:
        import importlib.util

        if importlib.util.find_spec("onnx") is None:
            return Availability(False, "the fpga simulator needs onnx (pip install onnx)")
        return Availability(True, "simulated: bit-accurate emulator + analytical estimates (no vendor tools needed)")

    def runtime_availability(self, runtime: str) -> Availability:
        if runtime not in self.runtimes:
            return Availability(False, f"unknown runtime '{runtime}' for fpga (choose from: simulator)")
        return self.availability()

    def describe(self) -> dict:
        from backends.fpga.parts import PARTS

        return {"name": "FPGA simulator", "kind": "fpga-simulator", "simulated": True, "model_version": SIM_VERSION,
                "parts": list(PARTS)}

    def device_name(self) -> str:
        return "fpga-simulator"

    def runtime_version(self, runtime: str) -> str | None:
        return f"sim-{SIM_VERSION}"

    def list_targets(self) -> list[dict]:
        """The FPGA parts this simulator models (``bench list parts``)."""
        from backends.fpga.parts import PARTS

        return [dict(p) for p in PARTS.values()]

    def check_options(self, options: Mapping[str, Any] | None, runtime: str | None = None) -> dict:
        """Validate options in the parent before any case runs (raises a one-line error)."""
        super().check_options(options, runtime)
        parse_options(options)
        return dict(options or {})

    def prepare(self, artifact, *, precision, batch, threads, runtime, options=None) -> Session:
        if runtime != "simulator":
            raise UnsupportedCase(f"unknown runtime '{runtime}' for fpga")
        emu, est, info = build(artifact, precision=precision, batch=batch, options=options)
        return FPGASession(emu, est, info)
