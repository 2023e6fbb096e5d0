"""The artifact cache's upkeep (harness.plan.cache, `bench cache`): last-use stamps, superseded and
unused entries, side caches going with their artifact, leftovers of killed builds, links never followed."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness.plan import cache as C
from harness.plan.artifacts import get_or_build
from tests.conftest import bench_env, run_bench

NOW = 1_800_000_000.0
DAY = 86400.0


def _entry(root: Path, model: str, variant: str, key: str, *, used: float | None, built: float, size: int = 1000) -> Path:
    d = root / model / f"{variant}-{key}"
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(b"x" * size)
    (d / "meta.json").write_text(json.dumps({"model": model, "variant": variant, "key": key}))
    os.utime(d / "meta.json", (built, built))
    if used is not None:
        C.stamp_path(d).touch()
        os.utime(C.stamp_path(d), (used, used))
    return d


def _side(root: Path, kind: str, model: str, variant: str, key: str, size: int = 500) -> Path:
    d = root / kind / f"{model}-{variant}-{key}" / "sys"
    d.mkdir(parents=True)
    (d / "b1.npz").write_bytes(b"y" * size)
    return d.parent


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "cache"
    old = _entry(root, "cnn", "fp32", "1" * 16, used=NOW - 10 * DAY, built=NOW - 20 * DAY, size=3000)
    new = _entry(root, "cnn", "fp32", "2" * 16, used=NOW - 60, built=NOW - 2 * DAY)
    # no stamp (built before stamps existed): last use = meta.json's mtime
    lone = _entry(root, "cnn", "int8-static", "3" * 16, used=None, built=NOW - 40 * DAY)
    side_old = _side(root, "accuracy", "cnn", "fp32", "1" * 16)
    side_new = _side(root, "accuracy", "cnn", "fp32", "2" * 16)
    orphan = _side(root, "accuracy", "cnn", "fp16", "4" * 16)
    stale = root / "cnn" / ".build-fp16-abc"
    stale.mkdir()
    os.utime(stale, (NOW - 2 * C.STALE_BUILD_S, NOW - 2 * C.STALE_BUILD_S))
    young = root / "cnn" / ".build-fp16-def"
    young.mkdir()
    os.utime(young, (NOW - 60, NOW - 60))
    return dict(root=root, old=old, new=new, lone=lone, side_old=side_old, side_new=side_new, orphan=orphan,
                stale=stale, young=young)


def test_scan_tells_superseded_last_use_sizes_and_leftovers(tree):
    s = C.scan(tree["root"], now=NOW)
    by_key = {e.key: e for e in s.entries}
    assert set(by_key) == {"1" * 16, "2" * 16, "3" * 16}
    old, new, lone = by_key["1" * 16], by_key["2" * 16], by_key["3" * 16]
    assert old.superseded and not new.superseded and not lone.superseded
    assert old.last_used == pytest.approx(NOW - 10 * DAY) and lone.last_used == pytest.approx(NOW - 40 * DAY)
    assert old.bytes > 3000 and old.side == [tree["side_old"]] and old.side_bytes == 500
    assert new.side == [tree["side_new"]]
    assert s.orphans == [tree["orphan"]]
    assert s.stale_builds == [tree["stale"]]  # the young build folder is a build in progress


def test_select_superseded_and_unused(tree):
    s = C.scan(tree["root"], now=NOW)
    keys = lambda es: sorted(e.key for e in es)  # noqa: E731
    assert keys(C.select(s, superseded=True, now=NOW)) == ["1" * 16]
    assert keys(C.select(s, unused_for_s=30 * DAY, now=NOW)) == ["3" * 16]
    assert keys(C.select(s, unused_for_s=5 * DAY, now=NOW)) == ["1" * 16, "3" * 16]
    assert keys(C.select(s, superseded=True, unused_for_s=30 * DAY, now=NOW)) == ["1" * 16, "3" * 16]
    assert C.select(s, now=NOW) == []


def test_prune_removes_entries_with_their_side_caches_and_keeps_the_rest(tree):
    s = C.scan(tree["root"], now=NOW)
    freed = C.prune(s, C.select(s, superseded=True, now=NOW))
    assert freed["artifacts"] == 1 and freed["side_caches"] == 1 and freed["orphans"] == 1
    assert freed["stale_builds"] == 1 and freed["bytes"] >= 3000 + 500 + 500
    assert not tree["old"].exists() and not C.stamp_path(tree["old"]).exists() and not tree["side_old"].exists()
    assert not tree["orphan"].exists() and not tree["stale"].exists()
    for kept in ("new", "lone", "side_new", "young"):
        assert tree[kept].exists(), kept
    assert [e.key for e in C.scan(tree["root"], now=NOW).entries if e.superseded] == []


def test_prune_never_follows_a_link_out_of_the_cache(tree, tmp_path):
    outside = tmp_path / "precious"
    (outside / "sys").mkdir(parents=True)
    (outside / "sys" / "keep.txt").write_text("mine")
    (tree["root"] / "accuracy" / f"cnn-fp32-{'5' * 16}").symlink_to(outside, target_is_directory=True)
    (tree["root"] / "linked").symlink_to(outside, target_is_directory=True)
    s = C.scan(tree["root"], now=NOW)
    assert all(not p.is_symlink() for p in s.orphans)
    C.prune(s, C.select(s, superseded=True, unused_for_s=0, now=NOW))
    assert (outside / "sys" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="refusing"):
        C._remove_tree(tree["root"] / "linked", tree["root"])


def test_get_or_build_stamps_every_use(tmp_path):
    def build(d):
        (d / "model.onnx").write_bytes(b"m")
        return {"inputs": []}

    art, built = get_or_build("tiny", "fp32", "a" * 16, build, root=tmp_path)
    stamp = C.stamp_path(art.dir)
    assert built and stamp.exists()
    day_ago = time.time() - DAY
    os.utime(stamp, (day_ago, day_ago))
    art2, built2 = get_or_build("tiny", "fp32", "a" * 16, build, root=tmp_path)
    assert not built2 and stamp.stat().st_mtime > day_ago + 3600  # a cache hit is a use


@pytest.mark.parametrize("text,seconds", [("30d", 30 * DAY), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2", 2 * DAY)])
def test_parse_age(text, seconds):
    assert C.parse_age(text) == seconds


def test_parse_age_rejects_junk():
    with pytest.raises(ValueError, match="not an age"):
        C.parse_age("soon")


def test_cli_list_and_prune(tree):
    root = str(tree["root"])
    env = bench_env()
    proc = run_bench(["cache", "list", "--cache", root, "--json"], env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert sorted(e["superseded"] for e in listed["entries"]) == [False, False, True]
    proc = run_bench(["cache", "list", "--cache", root], env=env, timeout=60)
    assert proc.returncode == 0 and "superseded" in proc.stdout and "3 artifacts" in proc.stdout, proc.stdout
    proc = run_bench(["cache", "prune", "--cache", root, "--superseded", "--dry-run"], env=env, timeout=60)
    assert proc.returncode == 0 and "would remove cnn/fp32 " + "1" * 16 in proc.stdout, proc.stdout
    assert tree["old"].exists() and tree["orphan"].exists()  # a dry run deletes nothing
    proc = run_bench(["cache", "prune", "--cache", root, "--superseded"], env=env, timeout=60)
    assert proc.returncode == 0 and "removed 1 artifacts" in proc.stdout, proc.stdout
    assert not tree["old"].exists() and tree["new"].exists()


@pytest.mark.parametrize("args,needle", [
    (["cache", "prune"], "say what to prune"),
    (["cache", "prune", "--unused-for", "soon"], "not an age"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    proc = run_bench([*args, "--cache", str(tmp_path)], timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_cli_list_of_a_missing_cache(tmp_path):
    proc = run_bench(["cache", "list", "--cache", str(tmp_path / "nothing")], timeout=60)
    assert proc.returncode == 0 and "empty" in proc.stdout


def test_hard_linked_files_are_split_in_sizes_and_freed_only_with_their_last_link(tmp_path):
    root = tmp_path / "cache"
    base = _entry(root, "cnn", "fp32", "6" * 16, used=NOW - DAY, built=NOW - DAY, size=10)
    (base / "eval.npz").write_bytes(b"e" * 8000)
    old = _entry(root, "cnn", "fp16", "7" * 16, used=NOW - 5 * DAY, built=NOW - 5 * DAY, size=10)
    new = _entry(root, "cnn", "fp16", "8" * 16, used=NOW - 60, built=NOW - 60, size=10)
    for v in (old, new):
        os.link(base / "eval.npz", v / "eval.npz")  # variants hard-link the base's data, as suites.build does
    s = C.scan(root, now=NOW)
    by_key = {e.key: e for e in s.entries}
    assert by_key["7" * 16].bytes < 8000 / 3 + 200  # a third of the shared file, not all of it
    total = sum(e.bytes for e in s.entries)
    assert abs(total - sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and f.name != "eval.npz")
               - 8000) < 5  # the entries' sizes add up to the disk used
    freed = C.prune(s, C.select(s, superseded=True, now=NOW))
    assert freed["artifacts"] == 1 and freed["bytes"] < 200  # eval.npz lives on in two other entries
    assert (base / "eval.npz").read_bytes() == b"e" * 8000
