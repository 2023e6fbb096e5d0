"""``bench env``: the machine fingerprint recorded with every run."""
from __future__ import annotations

import click


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON fingerprint.")
def command(as_json):
    """Print this machine's fingerprint (CPU, memory, OS, packages, GPUs, load, machine id)."""
    import json

    from harness.run.env import fingerprint

    fp = fingerprint()
    if as_json:
        click.echo(json.dumps(fp, indent=1, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False, title=f"machine {fp['machine_id']}", title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    cpu = fp["cpu"]
    t.add_row("cpu", f"{cpu.get('model')} · {cpu.get('physical_cores')} physical / {cpu.get('logical_cores')} logical"
              f" · governor {cpu.get('governor') or 'n/a'}")
    t.add_row("cpu flags", ", ".join(cpu.get("flags") or []) or "-")
    t.add_row("memory", f"{(fp.get('memory_bytes') or 0) / 2**30:.1f} GiB")
    t.add_row("os", " ".join(str(v) for v in (fp["os"].get("system"), fp["os"].get("release"), fp["os"].get("machine")) if v))
    t.add_row("python", str(fp["python"].get("version")))
    t.add_row("bench", f"{fp.get('bench', {}).get('version')} @ {fp.get('bench', {}).get('git_sha') or 'no git'}")
    t.add_row("packages", ", ".join(f"{k} {v}" for k, v in fp["packages"].items() if v))
    t.add_row("gpus", "; ".join(g.get("name", "?") for g in fp["gpus"]) or "none")
    t.add_row("load avg", " ".join(f"{x:.2f}" for x in fp.get("load_avg") or []))
    Console().print(t)
