"""FPGA parts the estimator can target: resource counts from the vendor's product tables.

Counts are for the whole device (the U250 and VU9P have several SLRs; a design that spans them
pays in routing and clock speed, which this model does not price). ``clock_mhz`` is a typical
clock for HLS designs on that part: 200 MHz (5 ns), the clock hls4ml's examples target on
UltraScale+, and 100 MHz on the Zynq-7000 (PYNQ-Z1/Z2 FINN builds). ``dsp_slice`` names the DSP
slice, whose signed multiplier is in :data:`DSP_SLICES` (DSP48E2: 27x18; DSP48E1: 25x18).

Sources: AMD/Xilinx product tables (Alveo U250 data sheet DS962; UltraScale+ product selection
guide; Zynq UltraScale+ MPSoC product guide; Zynq-7000 product selection guide), as collected in
shared/REFERENCES.md.
"""
from __future__ import annotations

from harness.errors import BenchError

PARTS: dict[str, dict] = {
    "xcu250": {
        "name": "xcu250", "part": "xcu250-figd2104-2L-e", "board": "Alveo U250",
        "lut": 1_728_000, "ff": 3_456_000, "bram36": 2_688, "uram": 1_280, "dsp": 12_288,
        "dsp_slice": "DSP48E2", "clock_mhz": 200.0,
    },
    "xcvu9p": {
        "name": "xcvu9p", "part": "xcvu9p-flga2104-2L-e", "board": "VU9P (AWS F1, VCU118)",
        "lut": 1_182_240, "ff": 2_364_480, "bram36": 2_160, "uram": 960, "dsp": 6_840,
        "dsp_slice": "DSP48E2", "clock_mhz": 200.0,
    },
    "xczu7ev": {
        "name": "xczu7ev", "part": "xczu7ev-ffvc1156-2-e", "board": "ZCU104",
        "lut": 230_400, "ff": 460_800, "bram36": 312, "uram": 96, "dsp": 1_728,
        "dsp_slice": "DSP48E2", "clock_mhz": 200.0,
    },
    "xczu9eg": {
        "name": "xczu9eg", "part": "xczu9eg-ffvb1156-2-e", "board": "ZCU102",
        "lut": 274_080, "ff": 548_160, "bram36": 912, "uram": 0, "dsp": 2_520,
        "dsp_slice": "DSP48E2", "clock_mhz": 200.0,
    },
    "xc7z020": {
        "name": "xc7z020", "part": "xc7z020clg400-1", "board": "PYNQ-Z1 / PYNQ-Z2",
        "lut": 53_200, "ff": 106_400, "bram36": 140, "uram": 0, "dsp": 220,
        "dsp_slice": "DSP48E1", "clock_mhz": 100.0,
    },
}

#: signed multiplier (a x b bits) of one DSP slice
DSP_SLICES = {"DSP48E2": (27, 18), "DSP48E1": (25, 18)}

#: utilisation ceilings used by ``fit`` (FINN's defaults: 70 % LUT, 50 % FF, 80 % BRAM/URAM/DSP)
HEADROOM = {"lut": 0.70, "ff": 0.50, "bram36": 0.80, "uram": 0.80, "dsp": 0.80}


def get_part(name: str) -> dict:
    """A part by short name (``xcu250``), full part number or board name (``ZCU104``), case-insensitive."""
    key = str(name).strip().lower()
    for short, p in PARTS.items():
        boards = [b.strip().lower() for b in p["board"].replace("(", "/").replace(")", "").replace(",", "/").split("/")]
        if key == short or key == p["part"].lower() or key.startswith(short + "-") or key in boards:
            return p
    raise BenchError(f"unknown FPGA part '{name}' (choose from: {', '.join(PARTS)}; see 'bench list parts')")
