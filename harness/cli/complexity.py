"""``bench complexity``: parameters, MACs, size, sparsity and bit-widths of an ONNX model.

MODEL is an ONNX file, a zoo model name (its cached fp32 artifact, or ``--variant``),
one of the vision architectures of :mod:`suites.zoo.vision` (``resnet18``,
``mobilenet_v2``) or ``torchvision:NAME`` / ``timm:NAME`` where those libraries import;
the last two are exported to a temporary ONNX file first. See docs/complexity.md.
"""
from __future__ import annotations

import json
import os
import tempfile

import click

from harness.errors import BenchError


@click.command("complexity")
@click.argument("model", metavar="MODEL_OR_ONNX_FILE")
@click.option("--input-shape", "-s", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Fix an input's shape (repeatable). Without it a symbolic batch dim is set to 1.")
@click.option("--per-op", is_flag=True, help="Also print the per-operator breakdown.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("--variant", default="fp32", show_default=True, help="Variant of a zoo model (ignored for files).")
@click.option("--context", type=int, default=512, show_default=True,
              help="LLM: context length (tokens in the KV cache) for FLOPs per generated token.")
@click.option("--train-tokens", type=float, default=None,
              help="LLM: training tokens D for 6ND (default: 2e12, SmolLM2-135M's stated training set).")
@click.option("--peak-tflops", type=float, default=None,
              help="LLM: peak throughput for the training-time estimate (default: fp32 GEMM measured here).")
def command(model: str, input_shapes: tuple[str, ...], per_op: bool, as_json: bool, variant: str, context: int,
            train_tokens: float | None, peak_tflops: float | None) -> None:
    """Count parameters, MACs (1 multiply-accumulate = 1; conv and matrix products only),
    size on disk, weight sparsity and bit-widths of MODEL_OR_ONNX_FILE.

    For a generative LLM (zoo model smollm2-135m, or a local checkpoint directory): parameters
    (embedding tied or not), FLOPs per generated token at --context, KV-cache bytes per token per
    precision and the training compute 6ND with its time at a peak throughput."""
    from harness.plan import complexity
    from harness.plan.shapes import parse_shapes

    facts = _llm_facts(model)
    if facts is not None:
        _llm_complexity(model, facts, context, train_tokens, peak_tflops, as_json)
        return

    shapes: dict = parse_shapes(input_shapes)

    with tempfile.TemporaryDirectory(prefix="bench-complexity-") as tmp:
        path, source = _resolve(model, variant, shapes, tmp)
        result = complexity.count(path, shapes or None)
    result = {"model": source, **result}

    if as_json:
        if not per_op:
            result.pop("per_op", None)
        click.echo(json.dumps(result, indent=2, default=str))
        return
    _print_tables(result, per_op)


DEFAULT_TRAIN_TOKENS = 2e12  # SmolLM2-135M's model card: trained on 2 trillion tokens


def _llm_facts(model: str) -> dict | None:
    """Model facts of a generative LLM (zoo LLM or checkpoint directory), else None."""
    from harness.plan.models import llm_facts

    return llm_facts(model)


def measured_peak_flops(n: int = 1024, reps: int = 5) -> float:
    """fp32 GEMM FLOP/s measured here (best of ``reps`` n x n x n products, 2 n^3 FLOPs each)."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def _llm_complexity(model, facts, context, train_tokens, peak_tflops, as_json) -> None:
    from harness.plan.complexity_llm import llm_counts

    if context < 0 or context > facts["max_context"]:
        raise BenchError(f"--context {context}: must be within the model's context window (0..{facts['max_context']})")
    if train_tokens is not None and train_tokens <= 0:
        raise BenchError("--train-tokens must be > 0")
    if peak_tflops is not None and peak_tflops <= 0:
        raise BenchError("--peak-tflops must be > 0")
    tokens = train_tokens or DEFAULT_TRAIN_TOKENS
    peak, peak_src = (peak_tflops * 1e12, "stated") if peak_tflops else (measured_peak_flops(), "measured fp32 GEMM here")
    c = llm_counts(facts, context, train_tokens=tokens, peak_flops=peak)
    c["training"]["peak_source"] = peak_src
    c["training"]["tokens_source"] = "given" if train_tokens else "SmolLM2-135M model card (2 T tokens)"
    c = {"model": model, "facts": facts, **c}
    if as_json:
        click.echo(json.dumps(c, indent=2, default=str))
        return
    from harness.plan.complexity import format_count

    p, f, t = c["param_counts"], c["flops"], c["training"]
    lines = [
        f"complexity of {model} (decoder-only LLM, {facts['layers']} layers, d_model {facts['d_model']}, "
        f"{facts['heads']} heads / {facts['kv_heads']} KV heads of {facts['head_dim']})",
        f"  parameters          {p['total']:,} ({format_count(p['total'])}); embedding {p['embedding']:,} "
        f"{'tied to the LM head (counted once)' if p['tied_embedding'] else '+ separate LM head ' + format(p['lm_head'], ',')}",
        f"  non-embedding N     {p['non_embedding']:,} ({format_count(p['non_embedding'])})",
        f"  FLOPs / token @{context:<5} {f['flops_per_token']:,} ({format_count(f['flops_per_token'])}) = "
        f"2N {f['dense']:,} + attention {f['attention']:,}",
        f"  ... with LM head    {f['flops_per_token_with_head']:,} ({format_count(f['flops_per_token_with_head'])})",
        "  KV cache / token    " + ", ".join(f"{k} {v:,} B" for k, v in c["kv_bytes_per_token"].items()),
        f"  training 6ND        {t['flops']:.3e} FLOPs for D = {t['tokens']:.3g} tokens ({t['tokens_source']}); "
        f"{t['seconds_at_peak'] / 86400:,.1f} days at {t['peak_flops'] / 1e12:,.3g} TFLOP/s ({t['peak_source']})",
        f"  convention: {c['convention']}",
    ]
    click.echo("\n".join(lines))


def _resolve(model: str, variant: str, shapes: dict, tmp: str) -> tuple[str, str]:
    """-> (path of an ONNX file, description of where it came from)."""
    if os.path.exists(model):
        return model, model
    looks_like_path = os.sep in model or "/" in model or model.lower().endswith((".onnx", ".ort", ".pb"))
    if looks_like_path and not model.startswith(("torchvision:", "timm:")):
        raise BenchError(f"no such file: {model}")

    from harness.plan import models as registry

    zoo_names: list[str] = []
    try:
        zoo_names = list(registry.zoo_models())
    except Exception:
        pass
    if model in zoo_names:
        try:
            artifact, _ = registry.artifact_for(model, variant)
        except ImportError as exc:
            raise BenchError(f"zoo model '{model}': cannot build artifacts here ({type(exc).__name__}: {exc})") \
                from None
        return str(artifact.onnx_path), f"{model} ({variant}, {artifact.onnx_path})"

    if registry.is_architecture(model):
        input_shape = (1, 3, 224, 224)
        if shapes:
            if len(shapes) != 1:
                raise BenchError(f"'{model}' has one input; give at most one --input-shape")
            input_shape = tuple(next(iter(shapes.values())))
            shapes.clear()
            shapes["input"] = input_shape
        path = os.path.join(tmp, "model.onnx")
        try:
            registry.export_architecture(model, path, input_shape)
        except BenchError:
            raise
        except Exception as exc:
            raise BenchError(f"exporting '{model}' to ONNX failed: {type(exc).__name__}: {exc}") from None
        return path, f"{model} (exported at {'x'.join(map(str, input_shape))})"

    known = ", ".join(zoo_names + list(registry.architectures()))
    raise BenchError(f"no such file or model: '{model}' (models: {known}; or torchvision:NAME / timm:NAME)")


def _print_tables(result: dict, per_op: bool) -> None:
    from rich.console import Console
    from harness.safe import data_table as Table

    from harness.plan.complexity import format_count

    console = Console(soft_wrap=False)
    table = Table(title=f"complexity of {result['model']}", show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("", justify="right")
    wb, ab = result["weight_bits"], result["activation_bits"]

    def dtypes(d: dict) -> str:
        return ", ".join(f"{k}: {format_count(v)}" for k, v in d.items()) or "-"

    shapes = ", ".join(f"{k}={'x'.join(str(d) if d is not None else '?' for d in v)}" if v else f"{k}=?"
                       for k, v in result["input_shapes"].items())
    rows = [
        ("params", f"{result['params']:,}", format_count(result["params"])),
        ("MACs", f"{result['macs']:,}", format_count(result["macs"])),
        ("non-zero MACs", f"{result['nonzero_macs']:,}", format_count(result["nonzero_macs"])),
        ("model size", f"{result['model_bytes']:,} B", format_count(result["model_bytes"], "B")),
        ("weight sparsity", f"{100 * result['weight_sparsity']:.2f} %",
         f"{result['zero_weight_elements']:,} / {result['weight_elements']:,} zero"),
        ("weight bits", str(wb["bits"]) if wb["bits"] else "-", dtypes(wb["by_dtype"])),
        ("activation bits", str(ab["bits"]) if ab["bits"] else "-", dtypes(ab["by_dtype"]) + " MACs"),
        ("opset", str(result["opset"]), ""),
        ("input shapes", shapes, ""),
    ]
    if result.get("uncounted_ops"):
        rows.append(("not counted", ", ".join(f"{k} x{v}" for k, v in result["uncounted_ops"].items()), ""))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"[dim]{result['convention']}[/dim]")
    if per_op:
        ops = Table(title="per operator", show_header=True, header_style="bold")
        ops.add_column("name", overflow="fold", ratio=1)
        for col in ("op", "MACs", "non-zero", "params", "output"):
            ops.add_column(col, justify="left" if col in ("op", "output") else "right", no_wrap=True)
        for row in result["per_op"]:
            shape = "?" if row["output_shape"] is None else "x".join(
                "?" if d is None else str(d) for d in row["output_shape"])
            ops.add_row(row["name"], row["op_type"], format_count(row["macs"]), format_count(row["nonzero_macs"]),
                        format_count(row["params"]), shape)
        console.print(ops)
