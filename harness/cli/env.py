"""``bench env``: the machine fingerprint recorded with every run."""
from __future__ import annotations

import click


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON fingerprint.")
@click.option("--check", is_flag=True,
              help="Check whether the machine is quiet enough to measure (governor, turbo, load, busy processes, "
                   "throttling, memory pressure, GPU persistence/clocks/temperature/power); exit 1 on a warning.")
@click.pass_context
def command(ctx, as_json, check):
    """Print this machine's fingerprint (CPU, memory, OS, packages, GPUs, load, machine id)."""
    import json

    if check:
        from harness.run import syscheck

        summary = syscheck.summary(syscheck.snapshot(sample_s=0.5))
        if as_json:
            click.echo(json.dumps(summary, indent=1, default=str))
        else:
            _print_check(summary)
        ctx.exit(1 if summary["warnings"] else 0)
        return

    from harness.run.env import fingerprint

    fp = fingerprint()
    if as_json:
        click.echo(json.dumps(fp, indent=1, default=str))
        return
    from rich.console import Console
    from harness.safe import data_table as Table

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


def _print_check(summary: dict) -> None:
    st = summary["state"]
    cpu, mem = st.get("cpu") or {}, st.get("memory") or {}
    na = "n/a"
    click.echo(f"governor      {'/'.join(cpu.get('governors') or []) or na}")
    click.echo(f"turbo/boost   {na if cpu.get('turbo') is None else ('on' if cpu['turbo'] else 'off')}")
    click.echo(f"throttling    {na if cpu.get('throttle_count') is None else cpu['throttle_count']} events since boot"
               f"{', growing now' if cpu.get('throttling_now') else ''}")
    load = cpu.get("load_avg")
    click.echo(f"load average  {' '.join(f'{x:.2f}' for x in load) if load else na} ({cpu.get('cpus')} CPUs)")
    cp = cpu.get("cpu_pressure_pct")
    click.echo(f"CPU pressure  {na if cp is None else f'{cp:.1f}%'}")
    frac = mem.get("available_fraction")
    click.echo(f"memory        {na if frac is None else f'{100 * frac:.0f}% available'}; pressure "
               f"{na if mem.get('memory_pressure_pct') is None else str(mem['memory_pressure_pct']) + '%'}")
    busy = st.get("busy_processes")
    click.echo(f"busy procs    {na if busy is None else (', '.join(p['name'] + ' ' + str(p['cpu_pct']) + '%' for p in busy) or 'none')}")
    gpus = st.get("gpus")
    if gpus is None:
        click.echo("gpus          no NVML")
    for g in gpus or []:
        click.echo(f"gpu {g['index']}         {g.get('name')}: persistence {g.get('persistence_mode')}, SM "
                   f"{g.get('sm_clock_mhz')}/{g.get('sm_clock_max_mhz')} MHz, {g.get('temperature_c')} C, power limit "
                   f"{g.get('power_limit_w')}/{g.get('power_default_limit_w')} W, {g.get('utilization_pct')}% busy")
    if summary["warnings"]:
        for w in summary["warnings"]:
            click.secho(f"warning: {w}", fg="yellow")
    else:
        click.echo("quiet: nothing found that makes timings noisy")
