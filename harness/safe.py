"""Untrusted data at the edges: one helper per hazard, used by every reader and renderer.

Where it sits in the data path: loose (like :mod:`harness.errors`); every room may import it,
it imports nothing of bench but :mod:`harness.errors`.

- Text from outside (model names, file paths, failure reasons, tags, worker output) is data, never
  markup: :func:`term` for rich (terminal), :func:`md` for Markdown, :func:`html_text` for HTML,
  :func:`csv_cell` / :func:`csv_frame` for CSV (formula injection: a cell starting with
  ``= + - @``, tab or CR gets a leading ``'``, OWASP's advice).
- Non-finite numbers (NaN, ±Infinity) are not JSON: :func:`encode_non_finite` replaces each by
  ``null`` and lists where it was and what it was (``{"path": "cases/0/accuracy/value",
  "value": "NaN"}``); the record keeps that list as ``non_finite`` (declared in the schema).
- Files bench writes: :func:`write_atomic` (temp file in the same directory, fsync, rename; any
  OSError — full disk, no permission, missing directory — becomes one line naming the path).
- Files bench reads that a user names: :func:`check_input_file` (exists, a regular file — not a
  FIFO, a device or a directory — and not larger than a cap) before anything opens it.
"""
from __future__ import annotations

import errno
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import BenchError

# C0/C1 control characters except tab/newline; ESC among them (ANSI escape injection).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: Any) -> str:
    """``str(text)`` without control characters (no terminal escape sequences get through)."""
    return _CONTROL.sub("\ufffd", str(text))


def short(text: Any, limit: int = 60) -> str:
    """One line of at most ``limit`` characters of ``text`` (an error that quotes a value from a
    file never echoes the file's other lines)."""
    s = " ".join(printable(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def unknown_keys(where: str, unknown, allowed) -> str:
    """The one message for unknown keys in a user's file: at most 3 keys, each :func:`short`
    (a key may be any YAML scalar, even a multi-line one: never the file's other lines)."""
    keys = sorted(short(k, 40) for k in unknown)
    more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
    return (f"{where}: unknown key(s) {', '.join(keys[:3])}{more} "
            f"(expected: {', '.join(sorted(map(str, allowed)))})")


def term(text: Any) -> str:
    """Text safe to embed in a rich markup string: control characters replaced, ``[`` escaped."""
    from rich.markup import escape

    return escape(printable(text))


def plain(text: Any):
    """A :class:`rich.text.Text` of ``text``: rendered verbatim, never parsed as markup."""
    from rich.text import Text

    return Text(printable(text))


def data_table(*args, **kwargs):
    """A :class:`rich.table.Table` whose ``add_row`` takes text cells as data: every ``str`` cell
    (and a str title) becomes :func:`plain` text, never parsed as markup; pass a
    :class:`rich.text.Text` for a styled cell. The one table every terminal renderer uses."""
    from rich.table import Table

    class DataTable(Table):
        def add_row(self, *cells, **kw):
            super().add_row(*[plain(c) if isinstance(c, str) else c for c in cells], **kw)

    if isinstance(kwargs.get("title"), str):
        kwargs["title"] = plain(kwargs["title"])
    return DataTable(*args, **kwargs)


_MD_SPECIAL = re.compile(r"([\\`*_|\[\]])")


def md(text: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph (GitHub flavour): ``< >`` as entities
    (no raw HTML), ``\\ ` * _ | [ ]`` backslash-escaped (no emphasis, links, code or cell breaks),
    whitespace runs and newlines folded into one space."""
    s = " ".join(printable(text).split())
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("<", "&lt;").replace(">", "&gt;")


def html_text(text: Any) -> str:
    """Text safe in HTML element content and quoted attribute values."""
    import html

    return html.escape(printable(text), quote=True)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: strings starting with ``= + - @``, tab or
    CR get a leading ``'``; numbers (also negative ones) are left as numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_frame(df):
    """A copy of a pandas DataFrame whose text cells (and column names) pass :func:`csv_cell`."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].map(csv_cell)
    out.columns = [csv_cell(str(c)) for c in out.columns]
    return out


def is_non_finite(x: Any) -> bool:
    return isinstance(x, float) and not math.isfinite(x)


def _name(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def encode_non_finite(obj: Any, path: str = "") -> tuple[Any, list[dict]]:
    """``(copy, where)``: ``obj`` with every NaN/±Infinity float (numpy scalars too) replaced by
    None, and one ``{"path": "a/0/b", "value": "NaN"|"Infinity"|"-Infinity"}`` per replacement."""
    where: list[dict] = []

    def walk(o, p):
        if isinstance(o, dict):
            return {k: walk(v, f"{p}/{k}" if p else str(k)) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            if len(o) > 64 and set(map(type, o)) == {int}:
                return list(o)  # raw samples (integer ns): nothing to replace; skip the per-item walk
            return [walk(v, f"{p}/{i}" if p else str(i)) for i, v in enumerate(o)]
        if hasattr(o, "item") and not isinstance(o, (str, bytes)) and getattr(o, "ndim", 0) == 0:
            try:
                o = o.item()  # numpy scalar
            except Exception:
                return o
        if isinstance(o, float) and not math.isfinite(o):
            where.append({"path": p, "value": _name(o)})
            return None
        return o

    return walk(obj, path), where


def os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno == errno.EFBIG:
        return "file too large (file size limit reached)"
    return exc.strerror or str(exc)


def write_atomic(path: str | os.PathLike, data: str | bytes, *, what: str = "output",
                 overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` all-or-nothing: a temp file in the same directory, fsync, then a
    rename (``overwrite=False``: a hard link, which refuses an existing file). Never leaves a
    partial file; any OSError becomes one :class:`BenchError` naming ``what`` and the path."""
    p = Path(path)
    if p.is_dir():
        raise BenchError(f"cannot write {what} {p}: it is a directory")
    if not overwrite and p.exists():
        raise BenchError(f"refusing to overwrite existing {what} {p}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, p)
            tmp = None
        else:
            os.link(tmp, p)
    except FileExistsError:
        raise BenchError(f"refusing to overwrite existing {what} {p}") from None
    except OSError as exc:
        raise BenchError(f"cannot write {what} {p}: {os_reason(exc)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return p


def check_input_file(path: str | os.PathLike, *, what: str, max_bytes: int | None = None) -> Path:
    """``path`` as a :class:`Path` once it is known to be an existing regular file of at most
    ``max_bytes``; otherwise one :class:`BenchError` naming it (a FIFO, ``/dev/zero`` or a
    directory is refused before anything opens it: no hang, no unbounded read)."""
    import stat

    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise BenchError(f"{what} {p}: no such file") from None
    except OSError as exc:
        raise BenchError(f"{what} {p}: cannot read ({os_reason(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise BenchError(f"{what} {p}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if (stat.S_ISCHR(st.st_mode) or
                                                                          stat.S_ISBLK(st.st_mode)) else "not a regular file"
        raise BenchError(f"{what} {p}: is {kind}, not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise BenchError(f"{what} {p}: {st.st_size} bytes is larger than the limit of {max_bytes} bytes")
    if not os.access(p, os.R_OK):
        raise BenchError(f"{what} {p}: permission denied")
    return p
