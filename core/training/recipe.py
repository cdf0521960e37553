"""The fine-tuning recipe: one function that reads top to bottom.

    runtime -> seed -> model & tokenizer (+ LoRA) -> data -> optimizer -> scheduler
    -> DeepSpeed engine (distributed) or the model itself -> resume -> loop -> save

The loop is explicit (no HF Trainer): gradient accumulation, clipping at 1.0 with the norm before
clipping reported, tokens/s, evaluation every `eval_steps` (or once per epoch) with early stopping,
a checkpoint every `save_steps` (older ones pruned per `checkpointing`), pause, cancel and release
(checkpoint now, resume elsewhere) between optimiser steps, TensorBoard scalars.

Measured on 2 CPU cores (this repository's CI machine), float32:
- tiny Llama (hidden 32, 2 layers, 20k parameters), batch 4 x ~30 tokens: ~25 ms a step, 25 steps
  with 6 evaluations and 2 checkpoints in 0.65 s;
- SmolLM2-135M, batch 4 x ~48 tokens: 7.6 s for the first step (AdamW allocates its state), then
  2.6-3.5 s a step (~70 tokens/s); DESIGN.md measured ~6 s a step at 4 x 256 tokens;
- two DeepSpeed ZeRO-2 processes over gloo on the tiny model: ~16 s a launch, of which ~6 s is
  imports and ~2 s deepspeed.initialize; the first launch on a machine adds ~25 s building
  DeepSpeed's shared-memory comm op (cached under TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import copy
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

from trainforge.core.training import checkpoint as ckpt
from trainforge.core.training.batching import BatchPlan
from trainforge.core.training.config import Checkpointing, ResolvedConfig, TrainConfig, to_dict
from trainforge.core.training.data import IGNORE_INDEX, PaddingCollator, PreparedData, prepare_data
from trainforge.core.training.distributed import (
    MAX_GRAD_NORM,
    Runtime,
    all_reduce_sum,
    barrier,
    broadcast_object,
    deepspeed_config,
    setup_runtime,
)
from trainforge.core.training.model_loading import load_model_and_tokenizer, resolve_base_model
from trainforge.core.training.process_contract import TrainResult
from trainforge.core.training.reporting import NullReporter, Reporter

# Generation metrics (accuracy, f1_score, bleu) after training run on at most this many held-out
# rows: 3 rows at 48 new tokens took 8 s for SmolLM2-135M on 2 CPU cores.
FINAL_EVAL_MAX_SAMPLES = 32
FINAL_EVAL_MAX_NEW_TOKENS = 48
EVAL_BATCH_SIZE = 8


def train(config: ResolvedConfig, output_dir: Path, reporter: Reporter, resume_from: Path | None = None, *,
          resolve_registry_ref=None, model_cache_dir: Path | None = None) -> TrainResult:
    import torch

    cfg: TrainConfig = config.config
    hp = cfg.hyperparameters
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # -- where we run --------------------------------------------------------------------------
    runtime = setup_runtime(cfg.uses_deepspeed)
    report: Reporter = reporter if runtime.is_main else NullReporter()
    resume_dir = ckpt.find_checkpoint(resume_from) if resume_from else None
    resume_meta = ckpt.read_state(resume_dir) if resume_dir else None
    _seed_everything(hp.seed)  # same seed on every rank: identical initial weights (LoRA)

    # -- model and tokenizer ---------------------------------------------------------------------
    model_dir = config.model_path or resolve_base_model(cfg.model, config.models_root, model_cache_dir,
                                                        resolve_registry_ref)
    model, tokenizer = load_model_and_tokenizer(model_dir, for_training=True)
    if cfg.method == "lora":
        model = _wrap_lora(model, cfg)
    model.to(runtime.device)
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.log(f"loaded {cfg.model} from {model_dir}: {parameters:,} parameters, {trainable:,} trainable "
               f"({cfg.method}); {runtime.world_size} process(es) on {runtime.device.type}")

    # -- data ----------------------------------------------------------------------------------
    data: PreparedData = prepare_data(
        config.data_path, cfg.training_data.format, tokenizer, max_seq_length=hp.max_seq_length,
        validation_split=cfg.training_data.validation_split, seed=hp.seed,
        cache_dir=output_dir / ".datasets-cache")
    plan = BatchPlan(examples=len(data.train), batch_size=hp.batch_size, world_size=runtime.world_size,
                     accumulation=hp.gradient_accumulation, seed=hp.seed)
    collate = PaddingCollator(tokenizer.pad_token_id)
    total_steps = hp.max_steps or plan.steps_per_epoch * hp.epochs
    total_epochs = math.ceil(total_steps / plan.steps_per_epoch)
    report.log(f"data {config.data_path.name} sha256 {data.sha256[:12]}: {data.rows} rows, {len(data.train)} train, "
               f"{len(data.validation)} validation, {data.dropped} dropped (no completion token within "
               f"max_seq_length); {plan.steps_per_epoch} steps per epoch, {total_steps} steps")

    # -- optimizer and scheduler ---------------------------------------------------------------
    optimizer = _build_optimizer(model, cfg, fused=runtime.device.type == "cuda" and not runtime.deepspeed)
    scheduler = _build_scheduler(optimizer, cfg, total_steps)

    # -- DeepSpeed engine, or the model itself -----------------------------------------------------
    engine = None
    zero_stage = cfg.distributed.zero_stage
    if runtime.deepspeed:
        import deepspeed

        universal = ckpt.needs_universal(resume_meta, runtime)
        if universal:  # another world size: DeepSpeed's universal checkpoint re-partitions ZeRO state
            ckpt.convert_to_universal(resume_dir, runtime)
        ds_config = deepspeed_config(zero_stage, micro_batch=hp.batch_size, accumulation=hp.gradient_accumulation,
                                     world_size=runtime.world_size, bf16=runtime.device.type == "cuda",
                                     load_universal=universal)
        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=ds_config)
        if runtime.is_main:
            (output_dir / "deepspeed_config.json").write_text(_json(ds_config))
    forward = engine if engine is not None else _maybe_compile(model, cfg, runtime, report)
    autocast = _autocast(runtime, engine)

    # -- resume ----------------------------------------------------------------------------------
    state = ckpt.TrainingState()
    if resume_dir is not None:
        state = ckpt.load_checkpoint(resume_dir, runtime, model=model, optimizer=optimizer, scheduler=scheduler,
                                     engine=engine)
        ckpt.restore_rng(resume_dir, runtime)
        report.log(f"resumed from {resume_dir} at step {state.global_step} (epoch {state.epoch + 1}, "
                   f"written by {resume_meta['world_size']} process(es))")

    writer = _tensorboard(output_dir, runtime)
    result = TrainResult(status="succeeded", global_step=state.global_step, epoch=state.epoch + 1,
                         total_steps=total_steps, dataset_sha256=data.sha256, parameter_count=parameters,
                         trainable_parameters=trainable, best_metric=state.best_metric, best_step=state.best_step,
                         world_size=runtime.world_size)
    watched = "eval_loss" if cfg.optimization.early_stopping.metric == "validation_loss" else "perplexity"
    stop_reason: str | None = None

    def evaluate_now() -> bool:
        """Evaluates, tracks the best model; True when early stopping says stop."""
        metrics = _evaluate_loss(forward, data, collate, runtime, autocast)
        result.metrics.update(metrics)
        result.eval_history.append({"step": state.global_step, **metrics})
        report.evaluation(state.global_step, metrics)
        _scalars(writer, "eval", metrics, state.global_step)
        value = metrics[watched]
        improved = state.best_metric is None or value < state.best_metric
        if improved:
            state.best_metric, state.best_step, state.bad_evals = value, state.global_step, 0
            result.best_metric, result.best_step = value, state.global_step
            if cfg.evaluation.save_best_model:
                _save_model(output_dir / "best-model", model, tokenizer, engine, runtime)
        else:
            state.bad_evals += 1
        es = cfg.optimization.early_stopping
        return es.enabled and state.bad_evals >= es.patience

    # A baseline evaluation before the first step: the curve starts at the base model.
    if data.validation and state.global_step == 0:
        if evaluate_now():
            stop_reason = "early_stopped"

    # -- the loop --------------------------------------------------------------------------------
    forward.train()
    last_checkpoint: Path | None = resume_dir
    eval_every = hp.eval_steps or 0
    while stop_reason is None and state.global_step < total_steps:
        order = plan.order(state.epoch)
        micro = plan.resume_micro_step(state.samples_in_epoch)
        while stop_reason is None and micro < plan.micro_steps_per_epoch and state.global_step < total_steps:
            started = time.perf_counter()
            # The step's numbers stay on the device until one transfer at its end: each .item()
            # would make the host wait for the GPU and leave it idle while the next step launches.
            loss_total, tokens = torch.zeros((), device=runtime.device), 0
            for _ in range(hp.gradient_accumulation):  # one optimiser step
                batch = collate([data.train[i] for i in plan.micro_batch(order, micro, runtime.rank)])
                tokens += int(batch["attention_mask"].sum())  # counted on the host, before the copy
                batch = {k: v.to(runtime.device, non_blocking=True) for k, v in batch.items()}
                with autocast:
                    loss = forward(**batch).loss
                if engine is not None:
                    engine.backward(loss)  # scales by 1/gradient_accumulation itself
                    engine.step()  # steps optimizer and scheduler at the accumulation boundary
                else:
                    (loss / hp.gradient_accumulation).backward()
                loss_total += loss.detach().float()
                micro += 1
            if engine is not None:
                norm = engine.get_global_grad_norm()
                norm = torch.tensor(float(norm) if norm is not None else float("nan"))
            else:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            mean_loss, grad_norm = torch.stack([loss_total / hp.gradient_accumulation,
                                                norm.to(loss_total.device).float()]).tolist()  # the one sync
            state.global_step += 1
            state.samples_in_epoch = micro * plan.samples_per_micro_step
            loss_sum, token_sum = all_reduce_sum(runtime, [mean_loss, float(tokens)])
            train_loss = loss_sum / runtime.world_size
            state.tokens_seen += int(token_sum)
            elapsed = time.perf_counter() - started
            metrics = {"train_loss": train_loss, "learning_rate": _current_lr(optimizer, scheduler),
                       "grad_norm": grad_norm, "tokens_per_sec": token_sum / elapsed if elapsed > 0 else 0.0,
                       "epoch": state.epoch + 1}
            result.losses.append(train_loss)
            result.metrics.update(metrics)
            report.progress(state.global_step, total_steps, state.epoch + 1, total_epochs, metrics)
            _scalars(writer, "train", metrics, state.global_step)

            end_of_epoch = micro >= plan.micro_steps_per_epoch
            if data.validation and ((eval_every and state.global_step % eval_every == 0)
                                    or (not eval_every and end_of_epoch)):
                if evaluate_now():
                    stop_reason = "early_stopped"
                forward.train()
            if state.global_step % hp.save_steps == 0:
                last_checkpoint = _checkpoint(output_dir, runtime, state, model, optimizer, scheduler, engine,
                                              config, result, report, zero_stage, resume_dir)
            asked = broadcast_object(runtime, report.should_stop())
            if asked in ("pause", "cancel", "release") and stop_reason is None:
                stop_reason = asked
        if micro >= plan.micro_steps_per_epoch:
            state.epoch += 1
            state.samples_in_epoch = 0

    # -- finish ----------------------------------------------------------------------------------
    result.global_step, result.epoch = state.global_step, min(state.epoch + 1, total_epochs)
    if stop_reason in ("pause", "release"):
        # Both resume later from this checkpoint: paused by its owner, or released by a worker
        # that is shutting down (another worker claims it and goes on from this step).
        if last_checkpoint is None or ckpt.read_state(last_checkpoint)["global_step"] != state.global_step:
            last_checkpoint = _checkpoint(output_dir, runtime, state, model, optimizer, scheduler, engine, config,
                                          result, report, zero_stage, resume_dir)
        result.status = "paused" if stop_reason == "pause" else "released"
        result.checkpoint_dir = last_checkpoint
        report.log(f"{result.status} at step {state.global_step}; checkpoint {last_checkpoint}")
        return _close(result, writer)
    if stop_reason == "cancel":
        result.status, result.checkpoint_dir = "cancelled", last_checkpoint
        report.log(f"cancelled at step {state.global_step}")
        return _close(result, writer)
    if stop_reason == "early_stopped":
        result.status = "early_stopped"
        report.log(f"early stopping at step {state.global_step}: {watched} did not improve in "
                   f"{state.bad_evals} evaluations (best {state.best_metric:.4f} at step {state.best_step})")
    if data.validation and (not result.eval_history or result.eval_history[-1]["step"] != state.global_step):
        evaluate_now()  # the final metrics are those of the final weights

    final = output_dir / "model"
    best = output_dir / "best-model"
    # Rank 0 wrote best-model (on its node): its view decides for every rank.
    use_best = broadcast_object(runtime, cfg.evaluation.save_best_model and best.is_dir())
    if use_best:
        if runtime.is_main:
            shutil.rmtree(final, ignore_errors=True)
            shutil.copytree(best, final)
        report.log(f"saved the best model (step {state.best_step}, {watched} {state.best_metric:.4f}) to {final}")
    else:
        _save_model(final, model, tokenizer, engine, runtime)
        report.log(f"saved the model at step {state.global_step} to {final}")
    barrier(runtime)
    result.model_dir, result.checkpoint_dir = final, last_checkpoint

    wanted = [m for m in cfg.evaluation.metrics if m != "perplexity"]
    if runtime.is_main and wanted and data.validation_rows:
        from trainforge.core.training.evaluate import evaluate_rows

        final_model, final_tokenizer = load_model_and_tokenizer(final)
        scores = evaluate_rows(final_model.to(runtime.device), final_tokenizer, data.validation_rows, wanted,
                               max_samples=FINAL_EVAL_MAX_SAMPLES, max_new_tokens=FINAL_EVAL_MAX_NEW_TOKENS,
                               batch_size=EVAL_BATCH_SIZE)
        result.metrics.update(scores)
        report.evaluation(state.global_step, scores)
        _scalars(writer, "eval", scores, state.global_step)
    barrier(runtime)
    return _close(result, writer)


# -- components the recipe calls -----------------------------------------------------------------

def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def _wrap_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _build_optimizer(model: Any, cfg: TrainConfig, fused: bool = False) -> Any:
    """AdamW and SGD from torch, Adafactor from transformers; no weight decay on biases and norms."""
    import torch

    hp = cfg.hyperparameters
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    name = cfg.optimization.optimizer
    if name == "adamw":
        # fused: one kernel for all parameters on a GPU instead of a foreach chain of them.
        # (DeepSpeed's ZeRO steps its own flattened partitions: left to its defaults.)
        return torch.optim.AdamW(groups, lr=hp.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=hp.learning_rate, momentum=0.9)
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=hp.learning_rate, scale_parameter=False, relative_step=False, warmup_init=False)


def _build_scheduler(optimizer: Any, cfg: TrainConfig, total_steps: int) -> Any:
    from transformers import get_scheduler

    hp = cfg.hyperparameters
    name = cfg.optimization.scheduler
    if name == "constant":
        name = "constant_with_warmup" if hp.warmup_steps else "constant"
    return get_scheduler(name, optimizer, num_warmup_steps=hp.warmup_steps, num_training_steps=total_steps)


def _maybe_compile(model: Any, cfg: TrainConfig, runtime: Runtime, report: Reporter) -> Any:
    """torch.compile of the model for the plain loop (`optimization.torch_compile`). Graphs that
    fail to compile run eagerly (dynamo's suppress_errors) rather than failing the job; padded
    batches of another length recompile once, then dynamo marks the length dynamic."""
    import torch

    choice = cfg.optimization.torch_compile
    if choice == "off" or (choice == "auto" and runtime.device.type != "cuda"):
        return model
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    report.log(f"torch.compile of the model ({choice}); the first steps include compilation")
    return torch.compile(model)


def _autocast(runtime: Runtime, engine: Any) -> Any:
    """bf16 autocast for the plain loop on GPUs (DeepSpeed's bf16 section handles its own)."""
    import contextlib

    import torch

    if runtime.device.type == "cuda" and engine is None and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _current_lr(optimizer: Any, scheduler: Any) -> float:
    try:
        return float(scheduler.get_last_lr()[0])
    except Exception:  # noqa: BLE001 - some wrapped schedulers have no last lr before the first step
        return float(optimizer.param_groups[0]["lr"])


def _evaluate_loss(forward: Any, data: PreparedData, collate: PaddingCollator, runtime: Runtime,
                   autocast: Any) -> dict[str, float]:
    """Mean cross-entropy per completion token over the validation split, and its exp (perplexity).

    Ranks take every world_size-th example; the list is wrapped so each rank runs the same number
    of batches (ZeRO-3 gathers weights collectively), and the wrapped duplicates are not counted."""
    import torch
    import torch.nn.functional as F

    n, world = len(data.validation), runtime.world_size
    padded = math.ceil(n / world) * world
    mine = list(range(runtime.rank, padded, world))
    total_loss, total_tokens = 0.0, 0.0
    forward.eval()
    with torch.no_grad():
        for start in range(0, len(mine), EVAL_BATCH_SIZE):
            chunk = mine[start:start + EVAL_BATCH_SIZE]
            batch = collate([data.validation[i % n] for i in chunk])
            batch = {k: v.to(runtime.device) for k, v in batch.items()}
            with autocast:
                logits = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
            labels = batch["labels"][:, 1:].clone()  # (B, T-1)
            counted = torch.tensor([i < n for i in chunk], device=labels.device)
            labels[~counted] = IGNORE_INDEX
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
            total_loss += float(loss)
            total_tokens += float((labels != IGNORE_INDEX).sum())
    total_loss, total_tokens = all_reduce_sum(runtime, [total_loss, total_tokens])
    eval_loss = total_loss / max(total_tokens, 1.0)
    return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 50.0))}


def _checkpoint(output_dir: Path, runtime: Runtime, state: ckpt.TrainingState, model: Any, optimizer: Any,
                scheduler: Any, engine: Any, config: ResolvedConfig, result: TrainResult, report: Reporter,
                zero_stage: int, resume_dir: Path | None) -> Path:
    folder = ckpt.save_checkpoint(output_dir, runtime, state, model=model, optimizer=optimizer, scheduler=scheduler,
                                  engine=engine, config=to_dict(config), metrics=dict(result.metrics),
                                  zero_stage=zero_stage)
    is_best = state.best_step is not None and state.best_step == state.global_step
    report.checkpoint(state.global_step, state.epoch + 1, str(folder), dict(result.metrics), is_best)
    result.checkpoint_dir = folder
    if runtime.is_main:  # every rank's files sit in the one folder; save_checkpoint ended with a barrier
        _prune_checkpoints(output_dir, config.config.checkpointing, state, resume_dir, report)
    return folder


def _prune_checkpoints(output_dir: Path, policy: Checkpointing, state: ckpt.TrainingState,
                       resume_dir: Path | None, report: Reporter) -> None:
    """Deletes the checkpoints `checkpointing` does not keep. The job's records go first, so the
    API never lists a folder that is gone; a folder is renamed before it is deleted, so a crash
    midway leaves `step-N.deleting` (swept by the next prune), never a half-deleted `step-N`."""
    found = ckpt.complete_checkpoints(output_dir)
    protected = {step for step, folder in found.items()
                 if resume_dir is not None and folder.resolve() == Path(resume_dir).resolve()}
    removed = ckpt.prunable(set(found), policy.keep_last, state.best_step if policy.keep_best else None, protected)
    if removed:
        report.checkpoints_removed(removed)
    doomed = [found[step].rename(found[step].with_name(found[step].name + ".deleting")) for step in removed]
    doomed += [p for p in (Path(output_dir) / "checkpoints").glob("step-*.deleting") if p not in doomed]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)


def _save_model(folder: Path, model: Any, tokenizer: Any, engine: Any, runtime: Runtime) -> None:
    """A standalone transformers folder: safetensors weights, config, tokenizer and chat template.

    LoRA adapters are merged into a copy of the model (the training model keeps its adapters).
    Under DeepSpeed every rank calls `engine.save_16bit_model`, which gathers the partitioned
    weights under ZeRO-3 (`stage3_gather_16bit_weights_on_model_save`); rank 0 then writes them
    as safetensors, so the saved model is never the empty ZeRO-3 shell."""
    import torch

    folder = Path(folder)
    staging = folder.with_name(folder.name + ".tmp")
    if runtime.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier(runtime)
    state_dict = None
    if engine is not None:
        if not engine.save_16bit_model(str(staging), "consolidated.bin"):
            raise RuntimeError("DeepSpeed did not gather the ZeRO-3 weights; "
                               "stage3_gather_16bit_weights_on_model_save must be true")
        barrier(runtime)
        if runtime.is_main:
            state_dict = torch.load(staging / "consolidated.bin", map_location="cpu", weights_only=True)
            (staging / "consolidated.bin").unlink()
    if runtime.is_main:
        target = model
        if hasattr(model, "merge_and_unload"):  # a peft model
            target = copy.deepcopy(model)
            if state_dict is not None:
                target.load_state_dict(state_dict)
                state_dict = None
            target = target.merge_and_unload()
        if state_dict is not None:
            # save_16bit_model keeps only one of two tied tensors; the model re-ties lm_head on load.
            target.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
        else:
            target.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    barrier(runtime)


def _tensorboard(output_dir: Path, runtime: Runtime) -> Any:
    if not runtime.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


def _scalars(writer: Any, prefix: str, metrics: dict[str, Any], step: int) -> None:
    if writer is None:
        return
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(f"{prefix}/{key}", value, step)


def _close(result: TrainResult, writer: Any) -> TrainResult:
    if writer is not None:
        writer.flush()
        writer.close()
    return result


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2)
