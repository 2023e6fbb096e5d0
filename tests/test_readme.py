"""The README's two commands are the contract with a newcomer and with CI: keep them in sync."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_readme_starts_with_the_main_job_and_the_test_command():
    blocks = sh_blocks((ROOT / "README.md").read_text())
    main_job, tests = blocks[0], blocks[1]
    assert "bench run --suite quant --backend cpu" in main_job and "bench report" in main_job
    assert "-c .ci/constraints.txt" in main_job and "-c .ci/constraints.txt" in tests
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    tests = sh_blocks((ROOT / "README.md").read_text())[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must appear verbatim as a line of .ci/run"
