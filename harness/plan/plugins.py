"""Find backends through the entry-point group ``bench.backends`` and import them lazily.

A plugin that fails to import is listed as unavailable with its error and breaks
nothing else.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from harness.errors import BenchError

GROUP = "bench.backends"


def load_object(ref: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the object."""
    module_name, _, attr = ref.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass
class BackendEntry:
    name: str
    ref: str  # "module:Class"
    dist: str | None

    def load(self):
        """Instantiate the backend; raises whatever the plugin's import raises."""
        cls = load_object(self.ref)
        return cls()


def entries() -> dict[str, BackendEntry]:
    """All registered backends by name (metadata only: nothing is imported)."""
    found: dict[str, BackendEntry] = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None)
        found.setdefault(ep.name, BackendEntry(ep.name, ep.value, dist))
    return dict(sorted(found.items()))


def get_backend(name: str):
    """Instantiate backend ``name`` or raise :class:`BenchError` naming the valid choices."""
    all_entries = entries()
    if name not in all_entries:
        choices = ", ".join(all_entries) or "(none installed)"
        raise BenchError(f"unknown backend '{name}' (choose from: {choices})")
    try:
        return all_entries[name].load()
    except Exception as exc:  # a broken plugin is reported, never a traceback
        raise BenchError(f"backend '{name}' failed to load: {type(exc).__name__}: {exc}") from None


def describe_all() -> list[dict]:
    """``[{name, ref, dist, available, reason, runtimes}]`` for ``bench list backends``."""
    rows = []
    for name, entry in entries().items():
        row = {"name": name, "ref": entry.ref, "dist": entry.dist, "runtimes": [], "available": False, "reason": ""}
        try:
            backend = entry.load()
            av = backend.availability()
            row.update(available=av.ok, reason=av.reason, runtimes=list(backend.runtimes),
                       default_runtime=backend.default_runtime, simulated=getattr(backend, "simulated", False))
        except Exception as exc:
            row.update(available=False, reason=f"failed to load: {type(exc).__name__}: {exc}")
        rows.append(row)
    return rows
