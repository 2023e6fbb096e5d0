"""FPGA backend: a simulator over the exported ONNX graph (see docs/fpga.md).

- :mod:`backends.fpga.fixed` - HLS ``ap_fixed`` arithmetic, bit-accurate (rounding, overflow modes);
- :mod:`backends.fpga.emulator` - runs the ONNX graph in fixed point (or int8 for QDQ variants);
- :mod:`backends.fpga.estimator` - cycles, initiation interval and DSP/LUT/FF/BRAM/URAM per layer;
- :mod:`backends.fpga.parts` - the parts table (``bench list parts``);
- :mod:`backends.fpga.backend` - the harness backend (``--backend fpga``), ``simulated = True``.

Importing this package imports neither numpy nor onnx.
"""
from backends.fpga.backend import FPGABackend

__all__ = ["FPGABackend"]
