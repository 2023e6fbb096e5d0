"""Run records: one JSON file per run, schema-versioned, written atomically, never rewritten.

The run files are the source of truth; everything else (tables, reports, history) is
derived from them. While a run is in progress every finished case is also appended to
a journal (``.<run_id>.partial.jsonl`` beside the record) so that even a hard kill of
the parent loses nothing already measured; the journal is removed once the record is in
place. ``bench show`` and ``load_results`` read journals of runs that never finished.
"""
from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import BenchError
from harness.store.flatten import case_rows  # noqa: F401  (public here since v0.1: export, notebooks)

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("schema") / "run-v1.schema.json"
RECORD_SUFFIX = ".json"
JOURNAL_SUFFIX = ".partial.jsonl"


@lru_cache(maxsize=1)
def schema() -> dict:
    with open(SCHEMA_FILE, encoding="utf-8") as fh:
        return json.load(fh)


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def isoformat(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id(now: _dt.datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxxxx``: sortable by time, unique by 32 random bits."""
    now = now or utcnow()
    return now.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def validation_errors(record: dict) -> list[str]:
    """Every way ``record`` breaks the schema, as ``path: message`` lines (empty when valid)."""
    validator = _validator()
    errors = []
    for err in sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{where}: {err.message}")
    return errors


def validate(record: dict) -> None:
    """Raise :class:`BenchError` naming the first schema violation."""
    errors = validation_errors(record)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BenchError(f"record does not match schema v{SCHEMA_VERSION}: {errors[0]}{more}")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays sneak in from measurements; store them as plain JSON.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(record: dict) -> str:
    return json.dumps(record, indent=1, sort_keys=False, default=_json_default, allow_nan=False)


def record_filename(record: dict) -> str:
    return f"{record['run_id']}{RECORD_SUFFIX}"


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same directory and a rename.

    Refuses to replace an existing file: records are never rewritten.
    """
    path = Path(path)
    if path.exists():
        raise BenchError(f"refusing to overwrite existing record {path}")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # os.link fails if the target exists (no silent overwrite race), then drop the temp name.
        os.link(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return path


def write_record(record: dict, out_dir: Path | str) -> Path:
    """Validate and write ``record`` into ``out_dir``; returns the file's path."""
    text = dumps(record)
    validate(json.loads(text))  # validate exactly what lands on disk (numpy scalars become JSON)
    out = Path(out_dir)
    return write_atomic(out / record_filename(record), text + "\n")


def check_writable_dir(out_dir: Path | str) -> Path:
    """Create ``out_dir`` if needed and prove it is writable, or raise one clear line."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BenchError(f"output directory {out} is not writable: {exc.strerror or exc}") from None
    return out


class Journal:
    """Append-only JSON-lines file of finished cases for a run in progress."""

    def __init__(self, out_dir: Path | str, header: dict):
        self.path = Path(out_dir) / f".{header['run_id']}{JOURNAL_SUFFIX}"
        with open(self.path, "x", encoding="utf-8") as fh:
            fh.write(json.dumps({"header": header}, default=_json_default) + "\n")

    def append(self, case: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case}, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append_repeat(self, index: int, repeat: int, result: dict) -> None:
        """One finished repeat of case ``index`` (``--repeat K``), before the case is combined:
        what a process measured is on disk as soon as it ends (``read_journal`` skips these lines)."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"repeat": {"case_index": index, "repeat": repeat, "result": result}},
                                default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def read_journal(path: Path | str) -> dict:
    """Rebuild a (partial, unfinished) record from a journal file."""
    header: dict | None = None
    cases = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from a hard kill: keep what came before
            if "header" in item:
                header = item["header"]
            elif "case" in item:
                cases.append(item["case"])
    if header is None:
        raise BenchError(f"{path}: not a bench journal")
    record = dict(header)
    record["cases"] = cases
    record["interrupted"] = True  # a journal is what is left of a run that never finished
    if "finished_at" not in record:
        record["finished_at"] = isoformat(_dt.datetime.fromtimestamp(Path(path).stat().st_mtime, _dt.timezone.utc))
    return record


def migrate(record: dict, source: str = "record") -> dict:
    """Bring a record of an older schema version up to the current one, or refuse clearly.

    Only version 1 exists so far; the function is the single place future migrations go.
    """
    if not isinstance(record, dict) or "schema_version" not in record:
        raise BenchError(f"{source}: not a bench run record (no schema_version)")
    version = record["schema_version"]
    if version == SCHEMA_VERSION:
        return record
    raise BenchError(
        f"{source}: record schema version {version!r} is not supported "
        f"(this bench reads version {SCHEMA_VERSION})"
    )


def read_record(path: Path | str, *, check: bool = False) -> dict:
    """Read one record (or journal) file; one clear :class:`BenchError` on any problem."""
    p = Path(path)
    if not p.exists():
        raise BenchError(f"no such file: {p}")
    if p.name.endswith(JOURNAL_SUFFIX):
        return read_journal(p)
    try:
        with open(p, encoding="utf-8") as fh:
            record = json.load(fh)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{p}: cannot read ({exc})") from None
    record = migrate(record, str(p))
    if check:
        errors = validation_errors(record)
        if errors:
            raise BenchError(f"{p}: does not match schema v{SCHEMA_VERSION}: {errors[0]}")
    return record


def iter_record_paths(items: Iterable[str | Path], *, journals: bool = False) -> Iterator[Path]:
    """Expand files, directories and globs into record paths, sorted, without duplicates.

    A directory contributes its ``*.json`` files (not recursively into hidden files);
    a glob that matches nothing and a missing path raise :class:`BenchError`.
    """
    seen: set[Path] = set()
    out: list[Path] = []
    for item in items:
        s = str(item)
        if any(ch in s for ch in "*?["):
            matches = [Path(m) for m in glob.glob(s)]
            if not matches:
                raise BenchError(f"no files match {s}")
        else:
            matches = [Path(s)]
        for m in matches:
            if m.is_dir():
                found = sorted(p for p in m.iterdir() if p.suffix == RECORD_SUFFIX and not p.name.startswith("."))
                if journals:
                    found += sorted(m.glob(f".*{JOURNAL_SUFFIX}"))
                out.extend(found)
            elif m.exists():
                out.append(m)
            else:
                raise BenchError(f"no such file or directory: {m}")
    for p in out:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            yield p


def read_records(items: Iterable[str | Path], *, journals: bool = False) -> list[dict]:
    paths = list(iter_record_paths(items, journals=journals))
    if not paths:
        raise BenchError("no run records found in " + ", ".join(str(i) for i in items))
    return [read_record(p) for p in paths]


def load_results(path_or_glob: str | Path | Iterable[str | Path], *, samples: bool = False):
    """Load run records into a pandas DataFrame: one row per case, flat dotted columns.

    ``path_or_glob`` is a record file, a directory of records, a glob, or a list of those.
    Columns include ``run_id``, ``model``, ``variant``, ``backend``, ``status``,
    ``latency_ns.p50`` ... ``throughput.samples_per_s``, ``accuracy.value`` and
    ``env.machine_id``. Raw samples are included as a list column with ``samples=True``.
    """
    import pandas as pd

    items = [path_or_glob] if isinstance(path_or_glob, (str, Path)) else list(path_or_glob)
    rows: list[dict] = []
    for record in read_records(items):
        rows.extend(case_rows(record, samples=samples))
    return pd.DataFrame(rows)
