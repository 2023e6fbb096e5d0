"""Snapshot of the Markdown report (the PR-comment format) from fixed synthetic records.

The records come from tests.test_report.rich_records (fixed seeds and dates). After an
intended change of the Markdown, regenerate the expected file and review its diff:

    BENCH_UPDATE_SNAPSHOTS=1 /work/venv/bin/python -m pytest tests/test_report_snapshot.py
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.test_report import PRICES_YAML, rich_records

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "report.md"


def test_markdown_matches_snapshot(tmp_path):
    from harness import report
    from harness.report.markdown import render_markdown

    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES_YAML, encoding="utf-8")
    text = render_markdown(report.build(rich_records(), prices=prices))
    if os.environ.get("BENCH_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    expected = SNAPSHOT.read_text(encoding="utf-8")
    assert text == expected, "Markdown differs from tests/snapshots/report.md (see the module doc to regenerate)"
