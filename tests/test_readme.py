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


def _bench_invocations(script: str) -> list[list[str]]:
    """Every ``bench ...`` command of a shell script (continuation lines joined; a command ends at
    ``||``, ``&&``, ``;``, ``|`` or a comment; quotes respected)."""
    import shlex

    out = []
    for line in script.replace("\\\n", " ").splitlines():
        if not re.search(r"(^|\s)bench\s", line):
            continue
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        segment: list[str] = []
        for tok in [*lex, ";"]:
            if tok in ("||", "&&", ";", "|", "&"):
                if "bench" in segment:
                    out.append(segment[segment.index("bench") + 1:])
                segment = []
            else:
                segment.append(tok)
    return out


def test_nightly_example_runs_real_commands_with_real_options():
    """docs/examples/nightly.yml: every `bench` line parses with bench's own CLI (a renamed command or
    option fails here, not on the user's runner), and the data is installed before a suite runs."""
    import click
    import yaml

    from harness.cli import cli

    wf = yaml.safe_load((ROOT / "docs" / "examples" / "nightly.yml").read_text())
    script = "\n".join(step.get("run", "") for job in wf["jobs"].values() for step in job["steps"])
    # the workflow's variables with their values (loop variables: a suite name)
    values = {**{k: str(v) for k, v in wf.get("env", {}).items()}, "suite": "quant", "GITHUB_SHA": "0" * 40}
    script = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), "x"), script)
    calls = _bench_invocations(script)
    assert [c[:1] for c in calls].index(["data"]) < [c[:1] for c in calls].index(["run"])
    assert any(c[:2] == ["cache", "prune"] for c in calls)
    for args in calls:
        ctx = click.Context(cli, info_name="bench", obj={"argv": list(args)})
        cmd, rest, name = cli, list(args), "bench"
        while isinstance(cmd, click.Group):  # down to the leaf command
            name, rest = rest[0], rest[1:]
            cmd = cmd.get_command(ctx, name)
            assert cmd is not None, f"bench {' '.join(args)}: no command {name!r}"
        cmd.make_context(name, rest, parent=ctx)  # raises on an unknown option or a bad value
