"""Input shapes given by the user (``--input-shape``), in one place for the planner and the counter.

``NAME=1x3x224x224`` (or ``1x3x224x224`` for a model with one input) is parsed by
:func:`parse_input_shape` / :func:`parse_shapes`; :func:`check_given_shape` checks it against
the dims a model declares; :func:`resolve_inputs` turns a model's declared inputs plus the
given shapes into concrete per-input shapes with the batch axis (user models, and
``bench complexity``). Every problem is one :class:`~harness.errors.BenchError` line.
"""
from __future__ import annotations

from harness.errors import BenchError


def parse_input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """``"NAME=1x3x224x224"`` -> ``("NAME", (1, 3, 224, 224))``; ``"1x3x224x224"`` -> ``(None, ...)``.

    Dims may be separated by ``x`` or ``,``; each must be a positive integer.
    """
    name, sep, dims = str(text).rpartition("=")
    name = name.strip() if sep else None
    if sep and not name:
        raise BenchError(f"bad input shape '{text}': expected NAME=1x3x224x224")
    parts = [p.strip() for p in dims.replace(",", "x").replace("X", "x").split("x")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise BenchError(f"bad input shape '{text}': expected NAME=1x3x224x224 (positive integers)") from None
    if not shape or any(d <= 0 for d in shape):
        raise BenchError(f"bad input shape '{text}': every dim must be a positive integer")
    n = 1
    for d in shape:
        n *= d
    if n > MAX_INPUT_ELEMENTS:  # refused before anything is allocated
        raise BenchError(f"bad input shape '{text}': {n:.3g} elements per input is more than the limit of "
                         f"{MAX_INPUT_ELEMENTS:.3g} ({MAX_INPUT_ELEMENTS * 4 / 2**30:.0f} GiB as float32)")
    return name, shape


#: An input of more elements than this is a typo (10^11 elements = 400 GB of float32), refused.
MAX_INPUT_ELEMENTS = 2**31


def parse_shapes(texts) -> dict[str | None, tuple[int, ...]]:
    """``["x=1x3x8x8", ...]`` -> ``{"x": (1, 3, 8, 8)}``; a shape without a name has key None."""
    shapes: dict[str | None, tuple[int, ...]] = {}
    for text in texts or ():
        name, shape = parse_input_shape(text)
        if name in shapes:
            raise BenchError(f"--input-shape given twice for {name or 'the (only) input'}")
        shapes[name] = shape
    return shapes


def fmt_dims(dims: list | None) -> str:
    if dims is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def check_given_shape(label: str, shape: list[int], declared: list | None) -> None:
    """One :class:`BenchError` line when a user-given shape contradicts the model's declared
    dims (``declared``: ints are fixed, str/None dynamic; None = no shape declared)."""
    if declared is None:
        return
    if len(declared) != len(shape):
        raise BenchError(f"{label}: rank {len(shape)} but the model declares {fmt_dims(declared)} "
                         f"(rank {len(declared)})")
    for axis, (d, s) in enumerate(zip(declared, shape)):
        if isinstance(d, int) and d != s:
            raise BenchError(f"{label}: dim {axis} is {s} but the model fixes it to {d} ({fmt_dims(declared)})")


def fmt_shape(dims) -> str:
    return "?" if dims is None else "x".join("?" if not isinstance(d, int) else str(d) for d in dims)


def resolve_inputs(label: str, declared: list[tuple[str, str, list | None]],
                   shapes: dict[str | None, tuple]) -> tuple[list[dict], int | None, int]:
    """Concrete per-input shapes from the model's declarations and the user's ``--input-shape``s.

    ``declared``: ``[(name, numpy dtype name, dims)]`` with dims of int (fixed), str/None
    (dynamic) or None (no shape at all). Returns ``(inputs, fixed_batch, default_batch)``,
    ``inputs = [{"name", "dtype", "shape": [batch or None, ...]}]`` (meta form; ``None``
    marks a dynamic batch axis). One :class:`BenchError` line for anything missing or
    contradictory.
    """
    names = [n for n, _, _ in declared]
    given = dict(shapes)
    if None in given:
        if len(declared) != 1:
            raise BenchError(f"{label}: an --input-shape without NAME= is only allowed for a model with one input "
                             f"(inputs: {', '.join(names)})")
        given[names[0]] = given.pop(None)
    out, fixed, batches = [], set(), set()
    for name, dtype, dims in declared:
        shape = given.get(name)
        if shape is not None:
            check_given_shape(f"{label}: --input-shape {name}={fmt_shape(shape)}", list(shape), dims)
            dims_out = list(shape)
            batches.add(shape[0])
        else:
            if dims is None:
                raise BenchError(f"{label}: input '{name}' has no declared shape: give --input-shape {name}=1x...")
            if not dims:
                raise BenchError(f"{label}: input '{name}' is a scalar (no batch axis); bench needs a batch axis 0")
            dynamic = [i for i, d in enumerate(dims[1:], start=1) if not isinstance(d, int)]
            if dynamic:
                raise BenchError(f"{label}: input '{name}' has dynamic dims ({fmt_shape(dims)}, axis "
                                 f"{', '.join(map(str, dynamic))}): give --input-shape {name}=1x... with every dim")
            dims_out = [dims[0] if isinstance(dims[0], int) else 1, *dims[1:]]
        if dims is not None and dims and isinstance(dims[0], int):
            fixed.add(dims[0])
        out.append({"name": name, "dtype": dtype, "shape": dims_out})
    unknown = [n for n in given if n not in names]
    if unknown:
        raise BenchError(f"{label}: --input-shape names '{unknown[0]}', which is not an input of the model "
                         f"(inputs: {', '.join(names)})")
    if len(fixed) > 1:
        raise BenchError(f"{label}: inputs fix different batch sizes ({sorted(fixed)}); bench needs one batch axis")
    fixed_batch = fixed.pop() if fixed else None
    if len(batches) > 1:
        raise BenchError(f"{label}: the --input-shape batch dims differ ({sorted(batches)})")
    default_batch = fixed_batch or (batches.pop() if batches else 1)
    for inp in out:
        inp["shape"] = [fixed_batch] + inp["shape"][1:]  # None: dynamic batch
    return out, fixed_batch, default_batch
