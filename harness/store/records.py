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


#: keys whose value is a long raw integer array with no bounds in the schema (checked by a test)
THIN_KEYS = ("samples_ns",)


def _thin_int_arrays(obj):
    """``obj`` with every raw sample array (:data:`THIN_KEYS`) of plain ints cut to one element.

    The schema bounds neither their length nor their values (``tests/test_records.py`` checks
    that it stays so), so one element validates like all of them once a C-speed type scan has
    found nothing but ``int``; jsonschema then does not walk hundreds of thousands of items (4 s
    of a small model's nightly run). An array holding anything else is kept whole, so its
    errors are still found at their own index."""
    if isinstance(obj, dict):
        return {k: (v[:1] if k in THIN_KEYS and isinstance(v, list) and len(v) > 1 and set(map(type, v)) == {int}
                    else _thin_int_arrays(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_thin_int_arrays(v) for v in obj]
    return obj


def validation_errors(record: dict) -> list[str]:
    """Every way ``record`` breaks the schema, as ``path: message`` lines (empty when valid)."""
    validator = _validator()
    errors = []
    for err in sorted(validator.iter_errors(_thin_int_arrays(record)), key=lambda e: list(e.absolute_path)):
        from harness.safe import short

        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{where}: {short(err.message, 160)}")
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
    """Write ``text`` to ``path`` all-or-nothing (see :func:`harness.safe.write_atomic`).

    Refuses to replace an existing file: records are never rewritten.
    """
    from harness.safe import write_atomic as _write

    return _write(path, text, what="record", overwrite=False)


def encode_record(record: dict) -> dict:
    """``record`` with its non-finite floats replaced by null, each listed in ``non_finite``
    (``{"path", "value"}``, declared in the schema): NaN never makes a record unwritable."""
    from harness.safe import encode_non_finite

    out, where = encode_non_finite(record)
    if where:
        out["non_finite"] = list(out.get("non_finite") or []) + where
    return out


def write_record(record: dict, out_dir: Path | str) -> Path:
    """Validate and write ``record`` into ``out_dir``; returns the file's path."""
    record = encode_record(record)
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
    """Append-only JSON-lines file of finished cases for a run in progress.

    Each line goes out in one ``write`` and is fsynced; when a write fails (full disk, file size
    limit) the file is cut back to its last whole line, so a journal never holds a torn line,
    and the error names the journal.
    """

    def __init__(self, out_dir: Path | str, header: dict, *, path: Path | None = None):
        self.path = Path(path) if path is not None else Path(out_dir) / f".{header['run_id']}{JOURNAL_SUFFIX}"
        if path is None:
            try:
                with open(self.path, "x", encoding="utf-8") as fh:
                    fh.write(json.dumps({"header": header}, default=_json_default) + "\n")
            except OSError as exc:
                from harness.safe import os_reason

                raise BenchError(f"cannot write journal {self.path}: {os_reason(exc)}") from None

    @classmethod
    def reopen(cls, path: Path | str) -> "Journal":
        """The journal of an unfinished run, to append to (``bench run --resume``)."""
        return cls(None, {}, path=Path(path))

    def append(self, case: dict) -> None:
        from harness.safe import encode_non_finite

        case, where = encode_non_finite(case)
        if where:
            case["non_finite"] = list(case.get("non_finite") or []) + where
        self._write_line({"case": case})

    def append_repeat(self, index: int, repeat: int, result: dict, case_id: str | None = None) -> None:
        """One finished repeat of case ``index`` (``--repeat K``), before the case is combined:
        what a process measured is on disk as soon as it ends (``read_journal`` skips these lines)."""
        from harness.safe import encode_non_finite

        result, _ = encode_non_finite(result)
        self._write_line({"repeat": {"case_index": index, "repeat": repeat, "result": result,
                                     **({"case_id": case_id} if case_id else {})}})

    def _write_line(self, obj: dict) -> None:
        """One JSON line in one append, fsynced; on any OSError the file is cut back to its last
        whole line and one BenchError names the journal."""
        from harness.safe import os_reason

        line = (json.dumps(obj, default=_json_default, allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)  # no torn line: back to the last whole one
                except OSError:
                    pass
                raise BenchError(f"cannot append to journal {self.path}: {os_reason(exc)} "
                                 "(the cases before this one are kept in it)") from None
        finally:
            os.close(fd)

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def read_journal(path: Path | str, *, check: bool = True) -> dict:
    """Rebuild a (partial, unfinished) record from a journal file; ``interrupted`` is true."""
    from harness.safe import check_input_file

    p = check_input_file(path, what="journal", max_bytes=MAX_RECORD_BYTES)
    header: dict | None = None
    cases = []
    try:
        with open(p, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a hard kill: keep what came before
                if not isinstance(item, dict):
                    break
                if "header" in item:
                    header = item["header"]
                elif "case" in item:
                    cases.append(item["case"])
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{p}: cannot read ({exc})") from None
    if not isinstance(header, dict):
        raise BenchError(f"{p}: not a bench journal (no header line)")
    record = dict(header)
    record["cases"] = cases
    record["interrupted"] = True  # a journal is what is left of a run that never finished
    if "finished_at" not in record:
        record["finished_at"] = isoformat(_dt.datetime.fromtimestamp(p.stat().st_mtime, _dt.timezone.utc))
    record = migrate(record, str(p))
    if check:
        _check(record, p)
    return record


def journal_repeats(path: Path | str) -> dict[str, dict[int, dict]]:
    """The finished repeats of cases that a journal holds no combined case for (``--repeat K``
    killed mid-case): ``{case_id: {repeat index: worker result}}``. ``--resume`` runs only the
    repeats that are missing and combines them with these. A torn last line is ignored; lines
    written before repeats carried their case id are left out (their case is re-measured)."""
    from harness.safe import check_input_file

    p = check_input_file(path, what="journal", max_bytes=MAX_RECORD_BYTES)
    out: dict[str, dict[int, dict]] = {}
    done: set[str] = set()
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(item, dict):
                break
            rep = item.get("repeat")
            if isinstance(rep, dict) and rep.get("case_id") and isinstance(rep.get("result"), dict):
                out.setdefault(rep["case_id"], {})[int(rep["repeat"])] = rep["result"]
            elif isinstance(item.get("case"), dict):
                done.add(item["case"].get("case_id"))
    return {cid: reps for cid, reps in out.items() if cid not in done}


def journal_header(path: Path | str) -> dict:
    """The header line of a journal (what ``bench run --resume`` needs to plan the same run)."""
    rec = read_journal(path)
    return {k: v for k, v in rec.items() if k not in ("cases", "interrupted", "finished_at")}


def _check(record: dict, p: Path) -> None:
    errors = validation_errors(record)
    if errors:
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise BenchError(f"{p}: not a valid bench record: field {errors[0]}{more}")


#: A run record larger than this is refused before it is read (a stray huge file in results/).
MAX_RECORD_BYTES = 512 * 1024 * 1024


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


def read_record(path: Path | str, *, check: bool = True) -> dict:
    """Read one record (or journal) file, checked against the schema; one clear
    :class:`BenchError` naming the file (and the field) on any problem."""
    from harness.safe import check_input_file

    p = Path(path)
    if p.name.endswith(JOURNAL_SUFFIX):
        return read_journal(p, check=check)
    check_input_file(p, what="run record", max_bytes=MAX_RECORD_BYTES)
    try:
        with open(p, encoding="utf-8") as fh:
            record = json.load(fh)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise BenchError(f"{p}: cannot read ({type(exc).__name__})") from None
    record = migrate(record, str(p))
    if check:
        _check(record, p)
    return record


def orphan_journals(directory: Path | str) -> list[Path]:
    """Journals in ``directory`` of runs that have no record: runs killed before they finished."""
    d = Path(directory)
    out = []
    for j in sorted(d.glob(f".*{JOURNAL_SUFFIX}")):
        run_id = j.name[1:-len(JOURNAL_SUFFIX)]
        if not (d / f"{run_id}{RECORD_SUFFIX}").exists():
            out.append(j)
    return out


def find_journal(directory: Path | str, ref: str) -> Path:
    """The journal of the killed run ``ref`` (a run id, a unique prefix, or ``latest``: the one that
    started last) in ``directory``; one line naming the directory when there is none."""
    d = Path(directory)
    if not d.is_dir():
        raise BenchError(f"cannot resume: no results directory {d}")
    journals = orphan_journals(d)
    if ref == "latest":
        if not journals:
            raise BenchError(f"cannot resume: no journal of an unfinished run in {d}")
        heads = []
        for j in journals:
            try:
                h = journal_header(j)
            except BenchError:
                continue
            heads.append((str(h.get("started_at")), str(h.get("run_id")), j))
        if not heads:
            raise BenchError(f"cannot resume: no readable journal in {d}")
        return max(heads)[2]
    matches = [j for j in journals if j.name[1:].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        done = (d / f"{ref}{RECORD_SUFFIX}").exists()
        why = "it finished (its record exists)" if done else "no journal of an unfinished run has that id"
        raise BenchError(f"cannot resume run '{ref}' in {d}: {why}")
    raise BenchError(f"run id '{ref}' is ambiguous in {d}: {', '.join(m.name for m in matches[:5])}")


def latest_run(directory: Path | str) -> Path:
    """The run in ``directory`` that started last, by the records' own ``started_at`` (not by
    file name): among valid records and journals of killed runs; other JSON files are ignored."""
    d = Path(directory)
    best: tuple[str, str, Path] | None = None
    skipped = []
    for p in list(iter_record_paths([d], journals=True)):
        try:
            rec = read_record(p)
        except BenchError:
            skipped.append(p.name)
            continue
        key = (str(rec.get("started_at")), str(rec.get("run_id")), p)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        note = f" ({len(skipped)} file(s) that are not valid records ignored, e.g. {skipped[0]})" if skipped else ""
        raise BenchError(f"no run records in {d}{note}")
    return best[2]


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
                    found += orphan_journals(m)
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


def read_records(items: Iterable[str | Path], *, journals: bool = True) -> list[dict]:
    """Every record under ``items`` (validated); with ``journals`` also the runs that left only a
    journal (killed), as records with ``interrupted: true``."""
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
