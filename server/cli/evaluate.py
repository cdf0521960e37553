"""`trainforge evaluate`: evaluates a local model on a local data file in this process, through the
training engine's evaluator (exact-match accuracy, token F1, perplexity, BLEU), and writes the
results as JSON: {model_path, data_path, samples, metrics, duration_seconds}."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from trainforge.core.errors import TrainforgeError
from trainforge.server.cli.common import EXIT_USAGE, JsonOpt, console, fail, print_json, service_error
from trainforge.server.cli.tables import num


def evaluate(
    model_path: Annotated[Path, typer.Option("--model-path", exists=True, help="Model folder (safetensors, tokenizer).")],
    data: Annotated[Path, typer.Option("--data", exists=True, dir_okay=False, help="jsonl, csv or parquet.")],
    output: Annotated[Path, typer.Option("--output", dir_okay=False, help="Where to write the results (JSON).")],
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="accuracy, f1_score, perplexity or bleu; repeatable (default: all).")] = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples", min=1)] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a local model on a data file, here (no server), and write results.json."""
    try:
        # Imported here: it loads the training stack (torch, transformers).
        from trainforge.core.training.evaluate import METRICS
        from trainforge.core.training.evaluate import evaluate as run_evaluation
    except ImportError as exc:
        raise fail(f"cannot evaluate: {exc}",
                   "trainforge.core.training.evaluate (the training engine) is not installed") from None
    options = {k: v for k, v in (("metrics", metric), ("max_samples", max_samples),
                                 ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)) if v}
    started = time.monotonic()
    try:
        scores = run_evaluation(model_path, data, **options)
    except TrainforgeError as exc:
        raise service_error(exc) from None
    except (OSError, ValueError) as exc:
        raise fail(f"evaluation failed: {exc}") from None
    metrics = {k: v for k, v in scores.items() if k in METRICS}
    result = {"model_path": str(model_path.absolute()), "data_path": str(data.absolute()),
              "samples": scores.get("samples", 0), "metrics": metrics,
              "duration_seconds": round(time.monotonic() - started, 3)}
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc}", code=EXIT_USAGE) from None
    if as_json:
        return print_json(result)
    table = Table("metric", "value", title=f"evaluation of {escape(str(model_path))}", title_justify="left",
                  caption=f"{result['samples']} samples in {result['duration_seconds']:.1f} s; "
                          f"written to {escape(str(output))}", caption_justify="left")
    for name in sorted(metrics):
        table.add_row(name, num(metrics[name]))
    console.print(table)
