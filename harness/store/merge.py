"""Gather run files from several machines into one directory: content-addressed, no loss, no duplicates.

Every input record is read and checked against the schema, then written to the output
directory under the name ``<run_id>.<digest>.json`` where ``digest`` is the first 16 hex
digits of the SHA-256 of the record's canonical JSON (keys sorted, no whitespace). So:

* two different records never share a name, even when their run ids collide;
* the same record met twice (in two inputs, or already in the output directory, under
  any file name or formatting) is written once and counted as a duplicate;
* a record's bytes are copied as they are (records are never rewritten).

Machines are told apart by ``environment.machine_id`` (the hardware fingerprint), never
by host name; the report lists every machine with its host names, CPU, GPUs and runs.
Nothing is written unless every input is readable (or ``skip_invalid`` is set).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from harness.errors import BenchError

__all__ = ["record_digest", "merged_name", "MergeReport", "merge_runs", "expand_inputs"]

DIGEST_CHARS = 16


def record_digest(record: dict) -> str:
    """SHA-256 (hex) of the record's canonical JSON: sorted keys, compact separators, UTF-8."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def merged_name(record: dict, digest: str | None = None) -> str:
    """``<run_id>.<digest16>.json``: sorts by start time, unique by content."""
    digest = digest or record_digest(record)
    return f"{record['run_id']}.{digest[:DIGEST_CHARS]}.json"


@dataclass
class MachineSummary:
    machine_id: str
    hostnames: set = field(default_factory=set)
    cpu: str | None = None
    gpus: list = field(default_factory=list)
    runs: int = 0
    first: str | None = None
    last: str | None = None

    def to_dict(self) -> dict:
        return {"machine_id": self.machine_id, "hostnames": sorted(self.hostnames), "cpu": self.cpu,
                "gpus": self.gpus, "runs": self.runs, "first": self.first, "last": self.last}


@dataclass
class MergeReport:
    out_dir: str
    inputs: int = 0  # record files read
    written: list = field(default_factory=list)  # new file names
    already_present: list = field(default_factory=list)  # (input path, existing name)
    duplicate_inputs: list = field(default_factory=list)  # (input path, same-as input path)
    invalid: list = field(default_factory=list)  # (path, reason) skipped with skip_invalid
    run_id_conflicts: list = field(default_factory=list)  # (run_id, [names]): same id, different content
    machines: dict = field(default_factory=dict)  # machine_id -> MachineSummary (all runs in out_dir)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "dry_run": self.dry_run, "inputs": self.inputs, "written": self.written,
                "already_present": [list(x) for x in self.already_present],
                "duplicate_inputs": [list(x) for x in self.duplicate_inputs],
                "invalid": [list(x) for x in self.invalid],
                "run_id_conflicts": [[rid, names] for rid, names in self.run_id_conflicts],
                "machines": [m.to_dict() for m in sorted(self.machines.values(), key=lambda m: m.machine_id)]}

    def lines(self) -> list[str]:
        verb = "would write" if self.dry_run else "wrote"
        out = [f"{self.inputs} record file(s) read: {verb} {len(self.written)} new, "
               f"{len(self.already_present)} already in {self.out_dir}, {len(self.duplicate_inputs)} duplicate input(s)"
               + (f", {len(self.invalid)} invalid skipped" if self.invalid else "")]
        for rid, names in self.run_id_conflicts:
            out.append(f"warning: run id {rid} has {len(names)} different records (kept all): {', '.join(names)}")
        for path, why in self.invalid:
            out.append(f"skipped {path}: {why}")
        total = sum(m.runs for m in self.machines.values())
        out.append(f"{self.out_dir}: {total} run(s) from {len(self.machines)} machine(s)")
        for m in sorted(self.machines.values(), key=lambda m: (-m.runs, m.machine_id)):
            gpus = ", ".join(sorted({g.get("name", "?") for g in m.gpus})) or "no GPU"
            out.append(f"  {m.machine_id}  {m.runs:>4} run(s)  {m.first or '?'} .. {m.last or '?'}  "
                       f"host(s) {', '.join(sorted(m.hostnames))}  {m.cpu or '?'}; {gpus}")
        hosts: dict[str, set] = {}
        for m in self.machines.values():
            for h in m.hostnames:
                hosts.setdefault(h, set()).add(m.machine_id)
        for h, ids in sorted(hosts.items()):
            if len(ids) > 1:
                out.append(f"note: host name {h} belongs to {len(ids)} machines (different hardware): "
                           f"{', '.join(sorted(ids))}")
        return out


def expand_inputs(items: Iterable[str | Path], *, recursive: bool = True) -> list[Path]:
    """Record files under ``items`` (files, directories, globs); directories recursively."""
    from harness.store.records import iter_record_paths

    expanded: list[str | Path] = []
    for item in items:
        p = Path(item)
        expanded.append(item)
        if recursive and p.is_dir():
            for root, dirs, _files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                expanded.extend(Path(root) / d for d in dirs)
    return list(iter_record_paths(expanded, journals=True))


def _summarise(machines: dict, record: dict) -> None:
    env = record.get("environment") or {}
    mid = env.get("machine_id") or "unknown"
    m = machines.setdefault(mid, MachineSummary(mid))
    m.hostnames.add(env.get("hostname") or "?")
    m.cpu = m.cpu or (env.get("cpu") or {}).get("model")
    if not m.gpus:
        m.gpus = [{"name": g.get("name"), "memory_bytes": g.get("memory_bytes")} for g in env.get("gpus") or []]
    m.runs += 1
    t = record.get("started_at")
    if t:
        m.first = min(m.first or t, t)
        m.last = max(m.last or t, t)


def merge_runs(items: Iterable[str | Path], out_dir: str | Path, *, skip_invalid: bool = False,
               dry_run: bool = False, recursive: bool = True, check: bool = True) -> MergeReport:
    """Copy every run record under ``items`` into ``out_dir`` (see the module doc).

    Returns a :class:`MergeReport`. Raises :class:`BenchError` (nothing written) when an
    input cannot be read or breaks the schema, unless ``skip_invalid``.
    """
    from harness.store.records import JOURNAL_SUFFIX, check_writable_dir, dumps, encode_record, read_record, write_atomic

    out = Path(out_dir)
    report = MergeReport(str(out), dry_run=dry_run)
    inputs = expand_inputs(items, recursive=recursive)
    out_resolved = out.resolve() if out.exists() else None

    # What the output directory already holds, by content.
    present: dict[str, str] = {}  # digest -> file name
    by_run: dict[str, dict[str, str]] = {}  # run_id -> {digest: name}
    if out.is_dir():
        for p in expand_inputs([out], recursive=False):
            try:
                rec = read_record(p)
            except BenchError as exc:
                report.invalid.append((str(p), f"in the output directory, left alone: {exc}"))
                continue
            d = record_digest(rec)
            present.setdefault(d, p.name)
            by_run.setdefault(str(rec.get("run_id")), {})[d] = p.name
            _summarise(report.machines, rec)

    # Read and check every input before writing anything.
    todo: list[tuple[Path, dict, str, str]] = []  # path, record, digest, text
    errors: list[tuple[str, str]] = []
    for p in inputs:
        if out_resolved is not None and p.resolve().parent == out_resolved:
            continue  # already indexed above
        try:
            if p.name.endswith(JOURNAL_SUFFIX):  # a run killed before its record: merged as interrupted
                rec = encode_record(read_record(p, check=check))
                text = dumps(rec)
            else:
                text = p.read_text(encoding="utf-8")
                rec = read_record(p, check=check)
        except (BenchError, OSError, UnicodeDecodeError) as exc:
            errors.append((str(p), str(exc)))
            continue
        todo.append((p, rec, record_digest(rec), text))
    if errors and not skip_invalid:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BenchError(f"cannot merge {errors[0][0]}: {errors[0][1]}{more}; nothing written "
                         "(--skip-invalid leaves such files out)")
    report.invalid.extend(errors)
    report.inputs = len(todo)

    if todo and not dry_run:
        check_writable_dir(out)
    first_seen: dict[str, str] = {}  # digest -> the input that brought it, in this merge
    for p, rec, digest, text in todo:
        if digest in first_seen:
            report.duplicate_inputs.append((str(p), first_seen[digest]))
            continue
        first_seen[digest] = str(p)
        if digest in present:
            report.already_present.append((str(p), present[digest]))
            continue
        name = merged_name(rec, digest)
        if not dry_run:
            write_atomic(out / name, text if text.endswith("\n") else text + "\n")
        present[digest] = name
        by_run.setdefault(str(rec.get("run_id")), {})[digest] = name
        report.written.append(name)
        _summarise(report.machines, rec)
    report.run_id_conflicts = [(rid, sorted(d.values())) for rid, d in sorted(by_run.items()) if len(d) > 1]
    return report
