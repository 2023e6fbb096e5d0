"""Bit-accurate fixed-point arithmetic as Xilinx HLS defines it (``ap_fixed`` / ``ap_ufixed`` / ``ap_int``).

A value of type ``ap_fixed<W, I, Q, O, N>`` is an integer *mantissa* ``m`` of ``W`` bits (two's
complement when signed) scaled by ``2**-F`` with ``F = W - I`` fractional bits. Here a tensor of
such values is an ``int64`` numpy array of mantissas plus its :class:`FixedType`; arithmetic on
mantissas is exact, and every conversion to a narrower type goes through :func:`quantize`, which
follows the HLS headers' rules (``ap_fixed_base.h``: ``quantization_adjust`` and
``overflow_adjust``) step by step:

1. *Quantization* (fraction bits dropped): start from the floor of the exact value at ``F`` bits;
   with ``qb`` the first dropped bit, ``r`` the OR of the bits below it and ``s`` the sign of the
   source, add one LSB when
   ``AP_TRN`` never (floor, toward -inf); ``AP_TRN_ZERO`` ``s and (qb or r)`` (toward zero);
   ``AP_RND`` ``qb`` (ties toward +inf); ``AP_RND_ZERO`` ``qb and (s or r)`` (ties toward zero);
   ``AP_RND_MIN_INF`` ``qb and r`` (ties toward -inf); ``AP_RND_INF`` ``qb and (not s or r)``
   (ties away from zero); ``AP_RND_CONV`` ``qb and (lsb or r)`` (ties to even).
2. *Overflow* (the quantized integer outside ``[min, max]``):
   ``AP_WRAP`` keeps the low ``W`` bits (with ``N > 0`` saturation bits the sign bit is forced to
   the source's sign and the next ``N - 1`` bits to its complement); ``AP_SAT`` clamps to
   ``[min, max]``; ``AP_SAT_ZERO`` gives 0; ``AP_SAT_SYM`` clamps to ``[-max, max]`` (signed);
   ``AP_WRAP_SM`` is sign-magnitude wrap-around (``N = 0`` only).

Defaults are HLS's: ``AP_TRN`` and ``AP_WRAP``. ``int8`` / ``uint4`` / ``ap_int<8>`` are fixed types
with ``F = 0``. Widths here are limited to 1..48 bits for data and weights (mantissa products must
fit an ``int64``); accumulators to 62 bits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

Q_MODES = ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV")
O_MODES = ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM", "AP_WRAP_SM")
MAX_WIDTH = 62


class PrecisionError(ValueError):
    """A precision string that does not name a valid fixed-point type."""


@dataclass(frozen=True)
class FixedType:
    width: int
    integer: int
    signed: bool = True
    q_mode: str = "AP_TRN"
    o_mode: str = "AP_WRAP"
    sat_bits: int = 0

    def __post_init__(self):
        if not 1 <= self.width <= MAX_WIDTH:
            raise PrecisionError(f"width {self.width} out of range 1..{MAX_WIDTH} for {self.name}")
        if self.q_mode not in Q_MODES:
            raise PrecisionError(f"unknown quantization mode {self.q_mode} (choose from: {', '.join(Q_MODES)})")
        if self.o_mode not in O_MODES:
            raise PrecisionError(f"unknown overflow mode {self.o_mode} (choose from: {', '.join(O_MODES)})")
        if not 0 <= self.sat_bits <= self.width:
            raise PrecisionError(f"saturation bits N={self.sat_bits} must lie in 0..W={self.width}")
        if self.o_mode == "AP_WRAP_SM" and (not self.signed or self.sat_bits):
            raise PrecisionError("AP_WRAP_SM is supported for signed types with N=0 only")
        if self.signed and self.width < 2 and self.o_mode == "AP_SAT_SYM":
            raise PrecisionError("AP_SAT_SYM needs at least 2 bits")

    # ------------------------------------------------------------------ facts
    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def min_int(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    @property
    def min_value(self) -> float:
        return self.min_int * self.lsb

    @property
    def max_value(self) -> float:
        return self.max_int * self.lsb

    @property
    def name(self) -> str:
        base = f"ap_{'' if self.signed else 'u'}fixed<{self.width},{self.integer}"
        if (self.q_mode, self.o_mode, self.sat_bits) != ("AP_TRN", "AP_WRAP", 0):
            base += f",{self.q_mode},{self.o_mode}"
            if self.sat_bits:
                base += f",{self.sat_bits}"
        return base + ">"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.name

    def with_modes(self, q_mode: str | None = None, o_mode: str | None = None) -> "FixedType":
        return FixedType(self.width, self.integer, self.signed, q_mode or self.q_mode, o_mode or self.o_mode,
                         self.sat_bits)

    # ------------------------------------------------------------------ conversions
    def quantize(self, x) -> np.ndarray:
        """Mantissas (int64) of float values ``x`` converted to this type."""
        return quantize_float(np.asarray(x, dtype=np.float64), self)

    def to_float(self, m) -> np.ndarray:
        return np.asarray(m, dtype=np.float64) * self.lsb

    def round_trip(self, x) -> np.ndarray:
        """``float(T(x))``: the value this type holds after assigning ``x``."""
        return self.to_float(self.quantize(x))


_FIXED_RE = re.compile(r"^(?:ap_)?(u?)fixed<\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(\w+)\s*)?(?:,\s*(\w+)\s*)?"
                       r"(?:,\s*(\d+)\s*)?>$", re.IGNORECASE)
_INT_RE = re.compile(r"^(?:ap_)?(u?)int<\s*(\d+)\s*>$|^(u?)int(\d+)$", re.IGNORECASE)


def parse_precision(text: str) -> FixedType:
    """``ap_fixed<16,6>``, ``ap_ufixed<8,0,AP_RND,AP_SAT>``, ``fixed<16,6>``, ``ap_int<8>``, ``int8``, ``uint4``."""
    s = str(text).strip().replace(" ", "")
    m = _FIXED_RE.match(s)
    if m:
        uns, w, i, q, o, n = m.groups()
        q = (q or "AP_TRN").upper()
        o = (o or "AP_WRAP").upper()
        if not q.startswith("AP_"):
            q = "AP_" + q
        if not o.startswith("AP_"):
            o = "AP_" + o
        if q not in Q_MODES:
            raise PrecisionError(f"'{text}': unknown quantization mode {q} (choose from: {', '.join(Q_MODES)})")
        if o not in O_MODES:
            raise PrecisionError(f"'{text}': unknown overflow mode {o} (choose from: {', '.join(O_MODES)})")
        try:
            return FixedType(int(w), int(i), not uns, q, o, int(n or 0))
        except PrecisionError as exc:
            raise PrecisionError(f"'{text}': {exc}") from None
    m = _INT_RE.match(s)
    if m:
        uns = m.group(1) if m.group(2) else m.group(3)
        w = int(m.group(2) or m.group(4))
        try:
            return FixedType(w, w, not uns)
        except PrecisionError as exc:
            raise PrecisionError(f"'{text}': {exc}") from None
    raise PrecisionError(f"'{text}' is not a fixed-point precision (expected e.g. ap_fixed<16,6>, "
                         "ap_fixed<8,3,AP_RND,AP_SAT>, ap_ufixed<8,0>, int8)")


# ---------------------------------------------------------------------- quantization core

def _round_up(q_mode: str, qb, r, neg, lsb_odd):
    """Whether to add one LSB to the floor, given the dropped bits (see module docstring)."""
    if q_mode == "AP_TRN":
        return None
    if q_mode == "AP_RND":
        return qb
    if q_mode == "AP_RND_ZERO":
        return qb & (neg | r)
    if q_mode == "AP_RND_MIN_INF":
        return qb & r
    if q_mode == "AP_RND_INF":
        return qb & (~neg | r)
    if q_mode == "AP_RND_CONV":
        return qb & (lsb_odd | r)
    if q_mode == "AP_TRN_ZERO":
        return neg & (qb | r)
    raise PrecisionError(q_mode)  # pragma: no cover - validated in FixedType


def _overflow(n: np.ndarray, t: FixedType, neg: np.ndarray, floor_n: np.ndarray | None = None) -> np.ndarray:
    """Apply the overflow mode to quantized integers ``n``; ``floor_n`` is the value before the rounding
    increment (AP_WRAP_SM reads its first deleted bit there, as the HLS header does)."""
    lo, hi = t.min_int, t.max_int
    over = n > hi
    under = n < lo
    if t.o_mode == "AP_SAT_SYM" and t.signed:
        under = under | (n == lo)
    if not (over.any() or under.any()):
        return n
    bad = over | under
    o = t.o_mode
    if o == "AP_SAT":
        return np.clip(n, lo, hi)
    if o == "AP_SAT_SYM":
        return np.clip(n, -hi if t.signed else lo, hi)
    if o == "AP_SAT_ZERO":
        return np.where(bad, 0, n)
    w = t.width
    mask = (1 << w) - 1
    bits = n & mask  # low W bits, as a non-negative pattern
    if o == "AP_WRAP":
        if t.sat_bits:
            nb = t.sat_bits
            if t.signed:
                sign_bit = 1 << (w - 1)
                forced = np.where(neg, bits | sign_bit, bits & ~sign_bit)
                if nb > 1:
                    rng = ((1 << (nb - 1)) - 1) << (w - nb)  # bits W-N .. W-2
                    forced = np.where(neg, forced & ~rng, forced | rng)
            else:
                rng = ((1 << nb) - 1) << (w - nb)
                forced = bits | rng
            bits = np.where(bad, forced, bits)
    elif o == "AP_WRAP_SM":
        ro = (bits >> (w - 1)) & 1
        ld = ((n if floor_n is None else floor_n) >> w) & 1
        flip = bad & (ld != ro)
        comp = (~bits) & mask
        comp = np.where(ld == 1, comp | (1 << (w - 1)), comp & ~(1 << (w - 1)))
        bits = np.where(flip, comp, bits)
    if t.signed:
        bits = np.where(bits >= (1 << (w - 1)), bits - (1 << w), bits)
    return bits


def quantize_float(x: np.ndarray, t: FixedType) -> np.ndarray:
    """Exact conversion of float values (float64, as HLS converts a double) to mantissas of ``t``."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("non-finite value converted to fixed point")
    scaled = np.ldexp(x, t.frac)  # exact: a power-of-two scaling
    fl = np.floor(scaled)
    rem = scaled - fl  # exact, in [0, 1)
    if np.abs(fl).max(initial=0) >= 2.0 ** 62:
        # far out of range for any supported type: clip before the int cast, keeping the sign
        fl = np.clip(fl, -(2.0 ** 62), 2.0 ** 62)
    n = fl.astype(np.int64)
    neg = x < 0
    up = _round_up(t.q_mode, rem >= 0.5, (rem != 0.0) & (rem != 0.5), neg, (n & 1).astype(bool))
    fl_n = n
    if up is not None:
        n = n + up.astype(np.int64)
    return _overflow(n, t, neg, fl_n)


def requantize(m: np.ndarray, frac_src: int, t: FixedType) -> np.ndarray:
    """Mantissas ``m`` with ``frac_src`` fractional bits converted to type ``t`` (exact integer ops)."""
    m = np.asarray(m, dtype=np.int64)
    shift = frac_src - t.frac
    neg = m < 0
    if shift <= 0:
        if -shift > 62:
            raise OverflowError("shift too large")
        n = m << (-shift)
        if m.size and (np.abs(m).max() >= (1 << max(0, 62 + shift))):
            raise OverflowError(f"value too wide to convert to {t.name}")
        return _overflow(n, t, neg)
    if shift >= 63:  # every bit dropped; |m| < 2**62 <= 2**(shift-1)
        n = np.where(neg, -1, 0).astype(np.int64)
        up = _round_up(t.q_mode, neg, m != 0, neg, np.zeros_like(neg))
        if up is not None:
            n = n + up.astype(np.int64)
        return _overflow(n, t, neg)
    n = m >> shift  # arithmetic shift = floor
    rem = m & ((1 << shift) - 1)
    qb = ((rem >> (shift - 1)) & 1).astype(bool)
    r = (rem & ((1 << (shift - 1)) - 1)) != 0
    up = _round_up(t.q_mode, qb, r, neg, (n & 1).astype(bool))
    fl_n = n
    if up is not None:
        n = n + up.astype(np.int64)
    return _overflow(n, t, neg, fl_n)


def quantize_ratio(num: np.ndarray, den: int, frac_src: int, t: FixedType) -> np.ndarray:
    """Mantissas of ``(num * 2**-frac_src) / den`` in type ``t`` (exact: integer division, then the
    quantization and overflow rules). Used by average pooling (a sum divided by the window size)."""
    num = np.asarray(num, dtype=np.int64)
    shift = t.frac - frac_src
    if shift >= 0:
        if num.size and np.abs(num).max() >= (1 << max(0, 61 - shift)):
            raise OverflowError(f"value too wide to convert to {t.name}")
        num = num << shift
    else:
        den = den << (-shift)
    q = num // den  # floor
    rem = num - q * den  # in [0, den)
    neg = num < 0
    qb = 2 * rem >= den
    r = (rem != 0) & (2 * rem != den)
    up = _round_up(t.q_mode, qb, r, neg, (q & 1).astype(bool))
    fl_n = q
    if up is not None:
        q = q + up.astype(np.int64)
    return _overflow(q, t, neg, fl_n)


@dataclass
class FixedTensor:
    """Mantissas plus their type: ``value = m * 2**-t.frac``."""

    m: np.ndarray
    t: FixedType

    @property
    def shape(self):
        return self.m.shape

    def to_float(self) -> np.ndarray:
        return self.t.to_float(self.m)

    def cast(self, t: FixedType) -> "FixedTensor":
        return FixedTensor(requantize(self.m, self.t.frac, t), t)

    @classmethod
    def from_float(cls, x, t: FixedType) -> "FixedTensor":
        return cls(t.quantize(x), t)


def sum_type(a: FixedType, b: FixedType) -> FixedType:
    """The exact type of ``a + b`` (HLS's ``RType::plus``): one more integer bit, the finer fraction."""
    frac = max(a.frac, b.frac)
    integer = max(a.integer + (0 if a.signed or not b.signed else 1),
                  b.integer + (0 if b.signed or not a.signed else 1)) + 1
    return FixedType(min(integer + frac, MAX_WIDTH), integer, a.signed or b.signed)


def auto_accum_type(x: FixedType, w: FixedType, n_ops: int, bias: FixedType | None) -> FixedType:
    """The accumulator hls4ml infers for Dense/Conv (``infer_precision.py``, ``_infer_common_precision``):
    wide enough that the sum of ``n_ops`` products plus the bias never overflows nor rounds."""
    lg = int(np.ceil(np.log2(max(n_ops, 1)))) if n_ops > 1 else 0
    width = w.width + x.width + lg
    integer = w.integer + x.integer + lg
    signed = w.signed or x.signed
    frac = width - integer
    if bias is not None:
        integer = max(integer + (bias.signed and not signed), bias.integer + (signed and not bias.signed)) + 1
        width = integer + max(frac, bias.frac)
        signed = signed or bias.signed
    if width > MAX_WIDTH:
        raise PrecisionError(f"accumulator needs {width} bits (> {MAX_WIDTH}); give accum_precision explicitly")
    return FixedType(width, integer, signed)
