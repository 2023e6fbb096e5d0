"""The artifact cache's upkeep: what it holds, when each entry was last used, what can go.

Place in the data path: plan (:mod:`harness.plan.artifacts` builds and reads entries) -> **cache
upkeep** (``bench cache list`` / ``bench cache prune``). Nothing here runs during a measurement.

Layout it reads (written by :func:`harness.plan.artifacts.get_or_build` and
:meth:`~harness.plan.artifacts.Artifact.side_cache`)::

    <root>/<model>/<variant>-<key>/meta.json ...    an artifact (key: 16 hex of a sha256)
    <root>/<model>/.<variant>-<key>.used            touched on every build and cache hit
    <root>/<model>/.build-<variant>-XXXX/           a build in progress (or killed mid-way)
    <root>/<kind>/<model>-<variant>-<key>/          a side cache derived from that artifact
                                                    (kind: accuracy passes, engines, ...)

An artifact's key hashes its builder's source, its recipe's parameters, its data and package
versions: any change to one of them builds a new entry beside the old one, which is never read
again by that code. So the cache only grows; ``prune`` removes

* ``superseded`` entries: every entry of a (model, variant) but the most recently used one
  (after a code change the new build is the one used; switching back to the old checkout
  rebuilds its entry);
* entries unused for longer than a given age;

each with its side caches; and always side caches whose artifact is gone and build folders
left by a killed build (older than :data:`STALE_BUILD_S`). Last use is the ``.used`` stamp's
mtime, else (entries built before stamps existed) the entry's ``meta.json`` mtime.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

#: a build folder older than this is a killed build's leftover, not a build in progress
STALE_BUILD_S = 3600.0
_KEY = re.compile(r"^(?P<stem>.+)-(?P<key>[0-9a-f]{16})$")


@dataclass
class Entry:
    """One cached artifact and what hangs off it."""

    model: str
    variant: str
    key: str
    path: Path
    bytes: int
    last_used: float
    side: list[Path] = field(default_factory=list)
    side_bytes: int = 0
    superseded: bool = False

    @property
    def total_bytes(self) -> int:
        """The artifact's bytes and its side caches'."""
        return self.bytes + self.side_bytes

    def to_dict(self) -> dict:
        return {"model": self.model, "variant": self.variant, "key": self.key, "path": str(self.path),
                "bytes": self.bytes, "last_used": self.last_used, "side_caches": [str(p) for p in self.side],
                "side_bytes": self.side_bytes, "superseded": self.superseded}


@dataclass
class Scan:
    """Everything under a cache root: artifact entries, orphaned side caches, leftover build folders."""

    root: Path
    entries: list[Entry]
    orphans: list[Path]
    stale_builds: list[Path]
    #: ``.used`` stamps whose artifact folder is gone
    orphan_stamps: list[Path] = field(default_factory=list)


def stamp_path(artifact_dir: Path) -> Path:
    """The last-use stamp of the artifact at ``artifact_dir`` (a hidden sibling file)."""
    artifact_dir = Path(artifact_dir)
    return artifact_dir.parent / f".{artifact_dir.name}.used"


def touch(artifact_dir: Path) -> None:
    """Record a use of the artifact at ``artifact_dir`` now; a failure to record is not an error."""
    try:
        stamp_path(artifact_dir).touch()
    except OSError:
        pass


def _files(path: Path) -> list[tuple[int, int, int, int]]:
    """``(device, inode, bytes, links)`` of the regular files under ``path`` (links not followed)."""
    out = []
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((st.st_dev, st.st_ino, st.st_size, max(1, st.st_nlink)))
    return out


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``, a file with n hard links counted 1/n here (variants
    hard-link their base's data files: the sizes of all entries then add up to the disk used)."""
    return int(round(sum(size / links for _d, _i, size, links in _files(path))))


def freed_bytes(paths: list[Path]) -> int:
    """Bytes deleting ``paths`` gives back: a file counts once all its hard links are among them."""
    seen: dict[tuple[int, int], list[int]] = {}
    for p in paths:
        for dev, ino, size, links in _files(p):
            n = seen.setdefault((dev, ino), [0, size, links])
            n[0] += 1
    return sum(size for count, size, links in seen.values() if count >= links)


def _mtime(p: Path) -> float | None:
    try:
        return p.stat().st_mtime
    except OSError:
        return None


def scan(root: Path, *, now: float | None = None) -> Scan:
    """Read the cache at ``root`` (see the module docstring); a missing root is an empty cache."""
    root = Path(root)
    now = time.time() if now is None else now
    entries: list[Entry] = []
    side_dirs: list[tuple[Path, str]] = []  # (path, key)
    stale: list[Path] = []
    stamps: list[Path] = []
    if not root.is_dir():
        return Scan(root, [], [], [])
    for top in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        stamps += [p for p in top.glob(".*.used") if not (top / p.name[1:-len(".used")]).is_dir()]
        for d in sorted(p for p in top.iterdir() if p.is_dir() and not p.is_symlink()):
            if d.name.startswith(".build-"):
                t = _mtime(d)
                if t is not None and now - t > STALE_BUILD_S:
                    stale.append(d)
                continue
            m = _KEY.match(d.name)
            if not m:
                continue
            meta_path = d / "meta.json"
            if meta_path.is_file():
                try:
                    meta = json.loads(meta_path.read_text())
                except (OSError, json.JSONDecodeError):
                    meta = {}
                used = _mtime(stamp_path(d)) or _mtime(meta_path) or 0.0
                entries.append(Entry(model=str(meta.get("model") or top.name),
                                     variant=str(meta.get("variant") or m.group("stem")), key=m.group("key"),
                                     path=d, bytes=tree_bytes(d), last_used=used))
            else:
                side_dirs.append((d, m.group("key")))
    by_key = {e.key: e for e in entries}
    orphans = []
    for d, key in side_dirs:
        e = by_key.get(key)
        if e is None:
            orphans.append(d)
        else:
            e.side.append(d)
            e.side_bytes += tree_bytes(d)
    latest: dict[tuple[str, str], Entry] = {}
    for e in entries:
        k = (e.model, e.variant)
        if k not in latest or e.last_used > latest[k].last_used:
            latest[k] = e
    for e in entries:
        e.superseded = latest[(e.model, e.variant)] is not e
    return Scan(root, entries, orphans, stale, sorted(stamps))


def select(s: Scan, *, superseded: bool = False, unused_for_s: float | None = None,
           now: float | None = None) -> list[Entry]:
    """The entries a prune removes: superseded ones (when asked) and those last used more than
    ``unused_for_s`` seconds before ``now`` (when given)."""
    now = time.time() if now is None else now
    return [e for e in s.entries
            if (superseded and e.superseded) or (unused_for_s is not None and now - e.last_used > unused_for_s)]


def _remove_tree(path: Path, root: Path) -> None:
    """Delete ``path``, which must lie inside ``root`` and not be a link (never follows one out)."""
    path, root = Path(path), Path(root).resolve()
    if path.is_symlink() or not path.resolve().is_relative_to(root):
        raise ValueError(f"refusing to delete {path}: not a folder inside the cache {root}")
    shutil.rmtree(path)


def doomed(s: Scan, chosen: list[Entry]) -> list[Path]:
    """Every folder :func:`prune` deletes for ``chosen``: their side caches and themselves, the
    orphaned side caches and the stale build folders (``freed_bytes`` of it is what a prune frees)."""
    return [p for e in chosen for p in (*e.side, e.path)] + s.orphans + s.stale_builds


def prune(s: Scan, chosen: list[Entry]) -> dict:
    """Delete ``chosen`` entries (side caches first, then the artifact, then its stamp), the
    orphaned side caches and the stale build folders. Returns counts and bytes freed."""
    freed = {"artifacts": 0, "side_caches": 0, "orphans": 0, "stale_builds": 0,
             "bytes": freed_bytes(doomed(s, chosen))}
    for e in chosen:
        for d in e.side:
            _remove_tree(d, s.root)
            freed["side_caches"] += 1
        _remove_tree(e.path, s.root)
        try:
            stamp_path(e.path).unlink()
        except OSError:
            pass
        freed["artifacts"] += 1
    for d in s.orphans:
        _remove_tree(d, s.root)
        freed["orphans"] += 1
    for d in s.stale_builds:
        _remove_tree(d, s.root)
        freed["stale_builds"] += 1
    for p in s.orphan_stamps:
        try:
            p.unlink()
        except OSError:
            pass
    # a model folder left empty goes too (never the root)
    for top in {e.path.parent for e in chosen} | {d.parent for d in s.orphans + s.stale_builds}:
        try:
            if top != s.root:
                top.rmdir()  # only when empty
        except OSError:
            pass
    return freed


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or a bare number of days -> seconds (ValueError if not)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*", str(text))
    if not m:
        raise ValueError(f"not an age: {text!r} (use e.g. 30d, 12h, 90m)")
    value = float(m.group(1))
    return value * {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "": 86400.0}[m.group(2)]
