#!/usr/bin/env python
"""End-to-end greedy decode tokens/s of an int8 model against the same bf16 model, one card, one run.

    python benchmarks/gpu/bench_decode.py [--out PATH] [--budget-s 120] [--backends eager,compiled]
    python benchmarks/gpu/bench_decode.py --dry-run      # on a CPU: tiny Llama, Triton interpreter

Model: a Llama built from a LlamaConfig with random weights (the box is offline; decode speed does
not depend on the values): hidden 4096, MLP 14336, 32 heads / 8 KV heads, vocabulary 32000, 8
layers, untied head, bf16, SDPA attention. The layer is Llama-3-8B's: 218 M parameters in its
seven nn.Linear (436 MB in bf16, 218 MB in int8). Why this size:
- decode is weight-bandwidth bound: a step reads 8 x 436 MB = 3.5 GB of bf16 Linear weights plus
  the 262 MB head, ~1.25 ms at the ~3.0 TB/s an H100 copies (4.3 TB/s on an H200); even batch
  16 does 2 x 16 FLOPs per weight read, 56 GFLOP a step, 0.07 ms at 790 TFLOP/s. The KV cache
  (8 layers x 2 x 8 heads x 128 x 160 positions x 2 B = 5 MB per sequence) is small beside it.
- 8 layers rather than Llama-3-8B's 32 keep building and torch.compile to seconds (compile time
  grows with the layer count, the bytes per layer do not change) and memory at ~9 GB for the
  three models: the bf16 one (4.0 GB), and a w8a16 and a w8a8_dynamic copy (2.3 GB each).
- by bytes alone int8 could be (3.49 + 0.26) / (1.75 + 0.26) = 1.87x faster; per-step work that
  is not a weight read (norms, RoPE, attention, sampling, launches) lowers what is measured.

int8 models: copies of the bf16 model through trainforge.core.compression.convert.quantize_model
(mode "w8a16" and "w8a8_dynamic"; lm_head and embed_tokens stay bf16, as DEFAULT_SKIP says).

What is timed, per (backend, model, batch): `model.generate` of --new-tokens (128) greedy tokens
after a random --prompt-len (32) prompt, with cache_implementation="static" and no EOS (every row
runs to the end). A LogitsProcessor synchronizes and reads the clock when the prefill's logits
arrive, so one call gives prefill_ms (generate's start to the first logits) and decode time (first
logits to the end: the remaining new_tokens - 1 forwards; on CUDA, transformers' deferred stop
check may add one more, whose token it drops -- the same for every model, < 1 %). tokens/s =
batch x (new_tokens - 1) / decode seconds; p20/p50/p80 over --reps (5) calls after the warm-up.
- backend "eager": generate(disable_compile=True).
- backend "compiled": generate's own compilation of the decode step, which a static cache turns
  on (CompileConfig(mode="reduce-overhead", dynamic=False): inductor + CUDA graphs); the prefill
  stays eager in both. A compile failure is recorded with its error and the run goes on.
Cells run most wanted first (per batch, 1 then 16: eager then compiled bf16 and w8a16; then
w8a8_dynamic); a cell that would not end within --budget-s (120 s) of the start is recorded as
skipped, so the whole run stays near 2 min whatever torch.compile and autotuning cost on the box.

Agreement (random weights: reported, never failed): for each int8 model, greedy tokens against
the bf16 model's (first token, common prefix, positions equal) per backend and batch, and the
teacher-forced top-1 agreement: the bf16 model's eager sequences of the largest batch fed through
each model in one forward, argmax compared position by position (no divergence cascade); it runs
last, when the budget leaves ~20 s for it.

Writes JSON (benchmark, card, versions, date, config, metrics, ratios, ratio_backends) to --out,
or $OUT/bench_decode.json, or ./bench_decode.json. ratios: decode_tokens_per_s_<mode>_vs_bf16_b<B>
(the compiled backend's when both sides measured, else eager's: ratio_backends says which), the
same with _eager / _compiled suffixes, and prefill_<mode>_vs_bf16_b<B> (bf16 prefill ms / int8's).
Exit codes: 0 done (compile failures included), 1 an eager cell failed or the run was
interrupted (the JSON is written either way), 2 bad arguments, 3 no CUDA device with
--require-cuda, 4 skipped: transformers or trainforge.core.compression is missing.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import collect_versions, output_path, percentiles

MODES = ("bf16", "w8a16", "w8a8_dynamic")
BACKENDS = ("eager", "compiled")
FULL = {"hidden": 4096, "intermediate": 14336, "layers": 8, "heads": 32, "kv_heads": 8, "vocab": 32000,
        "prompt_len": 32, "new_tokens": 128, "batches": (1, 16), "reps": 5}
DRY = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2, "vocab": 256,
       "prompt_len": 8, "new_tokens": 6, "batches": (1, 4), "reps": 2}
EXIT_FAILED, EXIT_ARGS, EXIT_NO_CUDA, EXIT_SKIPPED = 1, 2, 3, 4
COMPILE_ESTIMATE_S = 30.0  # assumed cost of a first compiled cell, until one has been measured


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (or existing directory) to write; default $OUT/bench_decode.json")  # fmt: skip
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default 8; dry run 2)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated per call (default 128)")
    parser.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 32)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,16; dry run 1,4)")
    parser.add_argument("--reps", type=int, default=None, help="timed generate calls per cell (default 5)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated among {', '.join(MODES)}")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated among eager, compiled")
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        help="torch.compile mode of the decode step (default reduce-overhead: CUDA graphs)")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=None,
                        help="no cell starts when it would end past this many seconds from the start "
                             "(default 120; dry run 400)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="on a CPU: tiny Llama, a few tokens; proves the code path, numbers mean nothing")  # fmt: skip
    parser.add_argument("--dry-run-backend", choices=("interpret", "reference"), default="interpret",
                        help="dry run: Triton interpreter (default) or the pure-torch reference ops")  # fmt: skip
    parser.add_argument("--require-cuda", action="store_true", help="exit 3 instead of 0 without a CUDA device")
    args = parser.parse_args(argv)
    preset = DRY if args.dry_run else FULL
    args.layers = args.layers or preset["layers"]
    args.new_tokens = args.new_tokens or preset["new_tokens"]
    args.prompt_len = args.prompt_len or preset["prompt_len"]
    args.reps = args.reps or preset["reps"]
    args.budget_s = args.budget_s if args.budget_s is not None else (400.0 if args.dry_run else 120.0)
    try:
        args.batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else preset["batches"]
    except ValueError:
        parser.error(f"--batches: expected comma-separated integers, got {args.batches!r}")
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    args.backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    problems = []
    if "bf16" not in args.modes or any(m not in MODES for m in args.modes):
        problems.append(f"--modes must include bf16 (the reference) and only {', '.join(MODES)}")
    if not args.backends or any(b not in BACKENDS for b in args.backends):
        problems.append(f"--backends must be among {', '.join(BACKENDS)}")
    if args.new_tokens < 2 or args.prompt_len < 1 or args.reps < 1 or args.layers < 1:
        problems.append("need --new-tokens >= 2, --prompt-len >= 1, --reps >= 1, --layers >= 1")
    if any(b < 1 for b in args.batches):
        problems.append("batch sizes must be positive")
    if problems:
        parser.error("; ".join(problems))
    return args


def missing_packages() -> list[str]:
    missing = [name for name in ("transformers", "safetensors") if importlib.util.find_spec(name) is None]
    try:
        import trainforge.core.compression.convert  # noqa: F401
    except ImportError as exc:
        missing.append(f"trainforge.core.compression ({exc})")
    return missing


def _error_text(exc: BaseException, limit: int = 1500) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + " ...[truncated]"


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------
def build_models(args: argparse.Namespace, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """{mode: model} (bf16 first) and a description of the model: sizes and bytes per step."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from trainforge.core.compression.convert import parameter_count, quantize_model

    dims = DRY if args.dry_run else FULL
    config = LlamaConfig(
        vocab_size=dims["vocab"], hidden_size=dims["hidden"], intermediate_size=dims["intermediate"],
        num_hidden_layers=args.layers, num_attention_heads=dims["heads"], num_key_value_heads=dims["kv_heads"],
        max_position_embeddings=max(2048, args.prompt_len + args.new_tokens), tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,  # no EOS: every row decodes new_tokens
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):  # initialised on the card: seconds; 2.0 B values on the CPU take longer
        bf16 = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    bf16.to(device).eval()  # a no-op unless from_config ignored the device context
    bf16.generation_config.eos_token_id = None
    bf16.generation_config.pad_token_id = 0
    models: dict[str, Any] = {"bf16": bf16}
    for mode in args.modes:
        if mode != "bf16":
            models[mode] = quantize_model(copy.deepcopy(bf16), mode=mode)
    description = {
        **{k: dims[k] for k in ("hidden", "intermediate", "heads", "kv_heads", "vocab")},
        "layers": args.layers, "dtype": "bfloat16", "attention": "sdpa", "tie_word_embeddings": False,
        "parameters": parameter_count(bf16),
        "bytes_read_per_step": {mode: _bytes_per_step(m) for mode, m in models.items()},
    }  # fmt: skip
    return models, description


def _bytes_per_step(model) -> int:
    """Bytes of weights (parameters and buffers) a decode step reads: everything but the input
    embedding table, of which it reads one row per sequence."""
    embed = model.get_input_embeddings().weight
    seen, total = {embed.data_ptr()}, 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, args: argparse.Namespace, device: str) -> None:
        import torch
        from transformers import LogitsProcessor

        self.args, self.device, self.torch = args, device, torch
        runner = self

        class FirstLogitsClock(LogitsProcessor):
            """Reads the clock (after a synchronize) when the prefill's logits arrive; a no-op after."""

            def __init__(self) -> None:
                self.t_first: float | None = None

            def __call__(self, input_ids, scores):
                if self.t_first is None:
                    runner.sync()
                    self.t_first = time.perf_counter()
                return scores

        self.clock_cls = FirstLogitsClock
        self.compile_config = self._compile_config()

    def _compile_config(self):
        from transformers import CompileConfig

        config = CompileConfig(fullgraph=False, dynamic=False, mode=self.args.compile_mode)
        if self.device != "cuda":
            # generate compiles on CUDA only, unless told otherwise: the dry run checks the path.
            config._compile_all_devices = True
        return config

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def prompt(self, batch: int):
        gen = self.torch.Generator().manual_seed(1234)
        vocab = DRY["vocab"] if self.args.dry_run else FULL["vocab"]
        ids = self.torch.randint(1, vocab, (batch, self.args.prompt_len), generator=gen)  # (B, P), no pad id 0
        return ids.to(self.device)

    def generate(self, model, input_ids, backend: str) -> dict[str, Any]:
        from transformers import LogitsProcessorList

        clock = self.clock_cls()
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.args.new_tokens, "do_sample": False, "cache_implementation": "static",
            "logits_processor": LogitsProcessorList([clock]), "disable_compile": backend == "eager",
            "pad_token_id": 0,
        }  # fmt: skip
        if backend == "compiled":
            kwargs["compile_config"] = self.compile_config
        attention_mask = self.torch.ones_like(input_ids)
        self.sync()
        t0 = time.perf_counter()
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)  # no_grad inside
        self.sync()
        t1 = time.perf_counter()
        new = out[:, input_ids.shape[1]:]  # (B, new_tokens)
        if new.shape[1] != self.args.new_tokens:
            raise RuntimeError(f"generate returned {new.shape[1]} new tokens, expected {self.args.new_tokens}")
        return {"t0": t0, "t_first": clock.t_first, "t1": t1, "tokens": new.cpu()}

    def cell(self, model, batch: int, backend: str) -> dict[str, Any]:
        """Warm-up call(s), then --reps timed calls: the cell's metrics and its last tokens."""
        input_ids = self.prompt(batch)
        warm_start = time.perf_counter()
        for _ in range(2 if backend == "compiled" else 1):  # compiled: compile, then CUDA-graph recording
            self.generate(model, input_ids, backend)
        warmup_s = time.perf_counter() - warm_start
        runs = [self.generate(model, input_ids, backend) for _ in range(self.args.reps)]
        steps = self.args.new_tokens - 1
        decode_s = [r["t1"] - r["t_first"] for r in runs]
        prefill_ms = [(r["t_first"] - r["t0"]) * 1e3 for r in runs]
        tps = [batch * steps / s for s in decode_s]
        e2e = [batch * self.args.new_tokens / (r["t1"] - r["t0"]) for r in runs]
        metrics = {
            "batch": batch, "backend": backend, "reps": self.args.reps, "warmup_s": warmup_s,
            "decode_tokens_per_s": percentiles(tps),
            "decode_ms_per_step": percentiles([s / steps * 1e3 for s in decode_s]),
            "prefill_ms": percentiles(prefill_ms),
            "end_to_end_tokens_per_s": percentiles(e2e),
        }  # fmt: skip
        return {"metrics": metrics, "tokens": runs[-1]["tokens"]}


# ------------------------------------------------------------------------------------------
# Agreement
# ------------------------------------------------------------------------------------------
def token_agreement(ref, other) -> dict[str, float]:
    """Greedy tokens (B, N) of a model against the reference's."""
    equal = ref == other  # (B, N)
    prefix = equal.long().cumprod(dim=1).sum(dim=1).float()  # (B,) common prefix length per row
    return {
        "first_token_match": equal[:, 0].float().mean().item(),
        "common_prefix_tokens_mean": prefix.mean().item(),
        "positions_equal_fraction": equal.float().mean().item(),
    }


def teacher_forced(models: dict[str, Any], prompt, tokens, device: str) -> dict[str, Any]:
    """The bf16 model's sequences (prompt + its greedy tokens) through every model in one forward:
    top-1 of each int8 model against bf16's, at the positions that predicted a generated token."""
    import torch

    seq = torch.cat([prompt.cpu(), tokens], dim=1).to(device)  # (B, P + N)
    p = prompt.shape[1]
    with torch.no_grad():
        top1 = {mode: model(input_ids=seq).logits[:, p - 1:-1].argmax(-1).cpu() for mode, model in models.items()}
    ref = top1["bf16"]
    out: dict[str, Any] = {"bf16_top1_equals_its_greedy_tokens": (ref == tokens).float().mean().item()}
    for mode, t in top1.items():
        if mode != "bf16":
            out[f"{mode}_top1_agreement"] = (t == ref).float().mean().item()
    return out


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------
def plan_cells(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(backend, mode, batch) in the order they run, most wanted first, so that a short budget
    still gives the headline ratios: per batch, eager then compiled, bf16 and w8a16 (the decode
    mode); then w8a8_dynamic. An eager cell comes before the compiled cell of the same model and
    batch: it autotunes the kernels for those shapes outside the compiled warm-up."""
    first = [m for m in args.modes if m != "w8a8_dynamic"]
    cells = [(backend, mode, b) for b in args.batches for backend in BACKENDS if backend in args.backends
             for mode in first]  # fmt: skip
    if "w8a8_dynamic" in args.modes:
        cells += [(backend, "w8a8_dynamic", b) for b in args.batches for backend in BACKENDS
                  if backend in args.backends]  # fmt: skip
    return cells


def compute_ratios(cells: dict, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, str]]:
    def tps(backend: str, mode: str, batch: int) -> float | None:
        cell = cells.get(backend, {}).get(mode, {}).get(f"b{batch}", {})
        return cell.get("decode_tokens_per_s", {}).get("p50")

    def prefill(mode: str, batch: int) -> float | None:
        cell = cells.get("eager", {}).get(mode, {}).get(f"b{batch}", {})
        return cell.get("prefill_ms", {}).get("p50")

    ratios: dict[str, float] = {}
    sources: dict[str, str] = {}
    for mode in args.modes:
        if mode == "bf16":
            continue
        for batch in args.batches:
            key = f"decode_tokens_per_s_{mode}_vs_bf16_b{batch}"
            for backend in BACKENDS:
                ours, ref = tps(backend, mode, batch), tps(backend, "bf16", batch)
                if ours and ref:
                    ratios[f"{key}_{backend}"] = ours / ref
            for backend in ("compiled", "eager"):  # the headline: compiled when both sides have it
                if f"{key}_{backend}" in ratios:
                    ratios[key] = ratios[f"{key}_{backend}"]
                    sources[key] = backend
                    break
            ours_ms, ref_ms = prefill(mode, batch), prefill("bf16", batch)
            if ours_ms and ref_ms:
                ratios[f"prefill_{mode}_vs_bf16_b{batch}"] = ref_ms / ours_ms
    return ratios, sources


def run(args: argparse.Namespace, device: str) -> int:
    import torch

    started = time.perf_counter()
    for name in ("recompile_limit", "cache_size_limit"):  # 3 models x batches x graph breaks per code object
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
            break
    out_path = output_path(args.out, "bench_decode.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name() if device == "cuda" else f"cpu (--dry-run, {args.dry_run_backend})"
    document: dict[str, Any] = {
        "benchmark": "decode-e2e: greedy decode tokens/s, int8 (trainforge Int8Linear) vs bf16, random Llama, "
                     "HF generate with a static cache" + (" (DRY RUN: tiny model on a CPU, numbers meaningless)"
                                                          if args.dry_run else ""),  # fmt: skip
        "card": card,
        "versions": collect_versions(("transformers", "triton", "trainforge")),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
    }
    status = 0
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    tokens: dict[tuple[str, str, int], Any] = {}
    skipped: list[str] = []
    errors: dict[str, str] = {}
    agreement: dict[str, Any] = {}
    compile_failed: dict[str, str] = {}
    model_info: dict[str, Any] = {}
    interrupted = False

    def write() -> None:
        ratios, sources = compute_ratios(cells, args)
        document.update({
            "config": {"prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "batches": list(args.batches),
                       "reps": args.reps, "modes": list(args.modes), "backends": list(args.backends),
                       "compile": {"mode": args.compile_mode, "dynamic": False, "fullgraph": False},
                       "budget_s": args.budget_s, "model": model_info,
                       "kernel_backend": "triton" if device == "cuda" else args.dry_run_backend},
            "metrics": {"cells": cells, "agreement": agreement, "skipped": skipped, "errors": errors,
                        "compile_failures": compile_failed, "interrupted": interrupted,
                        "elapsed_s": time.perf_counter() - started},
            "ratios": ratios,
            "ratio_backends": sources,
            "ratio_definitions": "decode_tokens_per_s_<mode>_vs_bf16_b<B>: int8 p50 decode tokens/s / bf16's, same "
                                 "backend and batch (>1: int8 faster); prefill_<mode>_vs_bf16_b<B>: bf16 p50 "
                                 "prefill ms / int8's (eager)",
        })  # fmt: skip
        out_path.write_text(json.dumps(document, indent=2) + "\n")

    runner = Runner(args, device)
    try:
        models, model_info = build_models(args, device)
        build_s = time.perf_counter() - started
        model_info["build_s"] = build_s
        print(f"bench_decode: {card}; {model_info['parameters']:,} parameters, {args.layers} layers; "
              f"built {len(models)} models in {build_s:.1f} s", flush=True)  # fmt: skip
        last_eager_s = 0.0
        compile_estimate = COMPILE_ESTIMATE_S
        for backend, mode, batch in plan_cells(args):
            name = f"{backend}/{mode}/b{batch}"
            if backend == "compiled" and mode in compile_failed:
                skipped.append(f"{name}: compile failed for {mode} at an earlier batch")
                continue
            expected = last_eager_s * (3 if backend == "eager" else 2) + (compile_estimate if backend == "compiled" else 0)
            elapsed = time.perf_counter() - started
            if elapsed + expected > args.budget_s:
                skipped.append(f"{name}: time budget ({elapsed:.0f} s elapsed + ~{expected:.0f} s > {args.budget_s:.0f} s)")
                print(f"  {name}: SKIPPED (time budget)", flush=True)
                continue
            t_cell = time.perf_counter()
            try:
                result = runner.cell(models[mode], batch, backend)
            except Exception as exc:  # noqa: BLE001 - recorded; the other cells still run
                errors[name] = _error_text(exc)
                print(f"  {name}: FAILED {errors[name][:300]}", flush=True)
                if backend == "compiled":
                    compile_failed[mode] = errors[name]
                else:
                    status = EXIT_FAILED
                write()
                continue
            cell_s = time.perf_counter() - t_cell
            if backend == "eager":
                last_eager_s = max(last_eager_s, cell_s / (args.reps + 1))
            else:
                compile_estimate = max(result["metrics"]["warmup_s"], 1.0)
            # Weight bytes a step reads / its time: how close the step is to the card's bandwidth.
            step_s = result["metrics"]["decode_ms_per_step"]["p50"] * 1e-3
            result["metrics"]["weight_read_GBps_p50"] = model_info["bytes_read_per_step"][mode] / step_s / 1e9
            cells.setdefault(backend, {}).setdefault(mode, {})[f"b{batch}"] = result["metrics"]
            tokens[(backend, mode, batch)] = result["tokens"]
            m = result["metrics"]
            print(f"  {name}: {m['decode_tokens_per_s']['p50']:,.1f} tokens/s (p50), "
                  f"{m['decode_ms_per_step']['p50']:.3f} ms/step, prefill {m['prefill_ms']['p50']:.2f} ms, "
                  f"warm-up {m['warmup_s']:.1f} s", flush=True)  # fmt: skip
            write()
        agreement.update(_greedy_agreement(tokens, args))
        # Last, as it autotunes the int8 kernels for new shapes (B x (P + N) rows): ~20 s on a card.
        elapsed = time.perf_counter() - started
        if elapsed + 20 + 3 * last_eager_s <= args.budget_s:
            agreement.update(_agreement(models, runner, tokens, args, device))
        else:
            agreement["teacher_forced"] = {"skipped": f"time budget ({elapsed:.0f} s elapsed)"}
    except KeyboardInterrupt:  # run_all.sh's time limit sends SIGINT first: keep what was measured
        interrupted = True
        status = EXIT_FAILED
        print("bench_decode: interrupted; writing what was measured", flush=True)
    except Exception as exc:  # noqa: BLE001 - e.g. building the models: the JSON says why
        errors["run"] = _error_text(exc, 3000)
        status = EXIT_FAILED
        print(f"bench_decode: FAILED {errors['run']}", flush=True)
    write()
    print(json.dumps({"card": card, "ratios": document["ratios"], "ratio_backends": document["ratio_backends"]},
                     indent=2))  # fmt: skip
    print(f"bench_decode: wrote {out_path} in {time.perf_counter() - started:.1f} s")
    return status


def _agreement(models, runner: Runner, tokens: dict, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Teacher-forced top-1 agreement on the bf16 eager sequences of the largest batch measured."""
    measured = [b for b in args.batches if ("eager", "bf16", b) in tokens]
    if not measured:
        return {"teacher_forced": {"skipped": "no eager bf16 cell was measured"}}
    batch = max(measured)
    ref = tokens[("eager", "bf16", batch)]
    try:
        return {"teacher_forced": {"batch": batch, **teacher_forced(models, runner.prompt(batch), ref, device)}}
    except Exception as exc:  # noqa: BLE001
        return {"teacher_forced": {"error": _error_text(exc)}}


def _greedy_agreement(tokens: dict, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (backend, mode, batch), toks in tokens.items():
        ref = tokens.get((backend, "bf16", batch))
        if mode != "bf16" and ref is not None:
            out.setdefault("greedy_vs_bf16", {})[f"{backend}/{mode}/b{batch}"] = token_agreement(ref, toks)
        eager = tokens.get(("eager", mode, batch))
        if backend == "compiled" and eager is not None:
            out.setdefault("compiled_vs_eager_same_model", {})[f"{mode}/b{batch}"] = token_agreement(eager, toks)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:  # before anything imports trainforge.kernels (triton.jit reads it at import)
        if args.dry_run_backend == "interpret":
            os.environ["TRITON_INTERPRET"] = "1"
        else:
            os.environ["TRAINFORGE_KERNEL_BACKEND"] = "reference"
    elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("bench_decode: unset TRITON_INTERPRET: the benchmark times compiled kernels", file=sys.stderr)
        return EXIT_ARGS
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("bench_decode: SKIPPED: no CUDA device (use --dry-run to check the script on a CPU)")
        return EXIT_NO_CUDA if args.require_cuda else 0
    missing = missing_packages()
    if missing:
        print(f"bench_decode: SKIPPED: missing {', '.join(missing)}")
        return EXIT_SKIPPED
    if cuda and args.dry_run:
        print("bench_decode: --dry-run on a machine with a GPU: still the tiny model on the CPU")
    return run(args, "cpu" if args.dry_run else "cuda")


if __name__ == "__main__":
    sys.exit(main())
