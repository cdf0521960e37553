"""SmoothQuant activation smoothing (Xiao et al. 2023, "SmoothQuant"; llm-compressor's
SmoothQuantModifier): moves the outlier channels of a Linear layer's input into its weights before
W8A8 quantization, exactly in float.

Per-token int8 activations lose most where a few input channels are far larger than the rest (in
Llama-style MLPs, SiLU(gate) * up feeding down_proj): one scale per token is set by the outlier and
rounds every other channel coarsely. For an input channel j of the Linears fed by a module,

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)       (max|W_j| over every fed Linear's column j)

and the preceding module's output is divided by s while the fed Linears' weight columns are
multiplied by it: X diag(1/s) . diag(s) W^T = X W^T, so the float model computes the same logits
(up to float rounding) and the int8 model sees flatter activations and slightly rougher weights.

Mappings, per decoder layer, found by module names (Llama, Mistral, Qwen2, SmolLM2, ...):
    input_layernorm          -> q_proj, k_proj, v_proj
    post_attention_layernorm -> gate_proj, up_proj
    up_proj                  -> down_proj    (down's input is act(gate) * up: linear in up's rows)
v_proj -> o_proj is not used: under grouped-query attention one v head feeds several o_proj column
blocks, so o_proj's columns cannot all be scaled by the same s as v_proj's rows. A model without
these names is left untouched; a mapping kind whose fold changes the float logits (a Gemma-style
norm computing x * (1 + w), a post-norm placed after attention rather than before the MLP) is
undone and reported, so a look-alike architecture is never silently broken.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# Measured on SmolLM2-135M-Instruct, W8A8 per-token, held-out text (docs/compression.md: the sweep).
DEFAULT_ALPHA = 0.5
MIN_SCALE = 1e-5  # SmoothQuant's clamp: no channel is divided by (almost) zero
# Largest relative logit change a fold may cause in float32: rounding gives ~1e-6 on SmolLM2,
# a wrong fold (say a (1 + w) norm) moves logits by percents.
FOLD_TOLERANCE = 1e-3
PROBE_TOKENS = 64  # the logits check runs the first calibration window cut to this many tokens

# (kind, module whose output is scaled down, the Linears it feeds): module names in a decoder layer.
_LAYER_MAPPINGS = (
    ("attention_input", "input_layernorm", ("q_proj", "k_proj", "v_proj")),
    ("mlp_input", "post_attention_layernorm", ("gate_proj", "up_proj")),
)
_MLP_MAPPING = ("mlp_down", "up_proj", ("down_proj",))
KINDS = ("attention_input", "mlp_input", "mlp_down")


@dataclass(frozen=True)
class SmoothingMapping:
    """`smooth`'s output (a norm's weight, or a Linear's output rows) is divided by s; the input
    columns of every Linear in `balance` are multiplied by it."""

    kind: str
    smooth: str
    balance: tuple[str, ...]


@dataclass(frozen=True)
class SmoothingReport:
    """What smooth_model did: the mappings folded, the kinds undone because the float logits moved
    (kind -> relative change), and how many calibration tokens the scales came from."""

    alpha: float
    applied: list[SmoothingMapping] = field(default_factory=list)
    refused: dict[str, float] = field(default_factory=dict)
    calibration_tokens: int = 0

    def record(self) -> dict[str, Any]:
        """The summary kept in lineage.config.compression.smoothing."""
        kinds = sorted({m.kind for m in self.applied}, key=KINDS.index)
        return {"method": "smoothquant", "alpha": self.alpha, "mappings": len(self.applied), "kinds": kinds,
                "refused": dict(self.refused), "calibration_tokens": self.calibration_tokens}


def find_mappings(model: nn.Module) -> list[SmoothingMapping]:
    """The smoothing mappings of every decoder layer, by module names; a mapping is found only when
    each of its Linears is present exactly once in the layer."""
    modules = dict(model.named_modules())
    linears = {name for name, m in modules.items() if isinstance(m, nn.Linear)}
    found: list[SmoothingMapping] = []
    for name in modules:
        prefix, _, leaf = name.rpartition(".")
        for kind, smooth, balance in _LAYER_MAPPINGS:
            if leaf == smooth:
                fed = _unique_linears(linears, prefix, balance)
                if fed:
                    found.append(SmoothingMapping(kind, name, fed))
        kind, smooth, balance = _MLP_MAPPING
        if leaf == smooth and name in linears and f"{prefix}.{balance[0]}" in linears:
            found.append(SmoothingMapping(kind, name, (f"{prefix}.{balance[0]}",)))
    return sorted(found, key=lambda m: KINDS.index(m.kind))


def _unique_linears(linears: set[str], prefix: str, leaves: tuple[str, ...]) -> tuple[str, ...] | None:
    """The full names of the Linears under `prefix` whose last name is in `leaves`, one each, or None."""
    out = []
    for leaf in leaves:
        matches = [n for n in linears if n.startswith(prefix + ".") and n.rpartition(".")[2] == leaf]
        if len(matches) != 1:
            return None
        out.append(matches[0])
    return tuple(out)


def collect_input_absmax(model: nn.Module, names: Sequence[str],
                         batches: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| (float32, (K,)) of the inputs of the modules `names`, over every
    token of `batches` ((1, T) token ids each), with forward pre-hooks and no grad."""
    absmax: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            seen = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).float()  # (K,)
            absmax[name] = seen if name not in absmax else torch.maximum(absmax[name], seen)
        return record

    handles = [model.get_submodule(name).register_forward_pre_hook(hook(name)) for name in names]
    try:
        _run(model, batches)
    finally:
        for handle in handles:
            handle.remove()
    return absmax


def smoothing_scales(act_absmax: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """s (K,) float32 for an input of absmax `act_absmax` (K,) feeding the (N_i, K) `weights`.
    A channel that was zero in every calibration token, or whose weight columns are all zero,
    keeps s = 1: there is nothing to balance, and a tiny s would amplify it on other data."""
    w_absmax = torch.stack([w.detach().abs().amax(dim=0).float() for w in weights]).amax(dim=0)  # (K,)
    a = act_absmax.float()
    live = (a > 0) & (w_absmax > 0)
    s = a.clamp(min=MIN_SCALE).pow(alpha) / w_absmax.clamp(min=MIN_SCALE).pow(1 - alpha)
    return torch.where(live, s.clamp(min=MIN_SCALE), torch.ones_like(s))


def fold_scales(smooth: nn.Module, balance: Sequence[nn.Linear], s: torch.Tensor) -> None:
    """smooth's output / s, balance's input columns * s, computed in float64."""
    s64 = s.double().to(next(smooth.parameters()).device)
    with torch.no_grad():
        if isinstance(smooth, nn.Linear):
            _scale(smooth.weight, 1 / s64[:, None])  # (N, K): output rows
        else:
            _scale(smooth.weight, 1 / s64)  # (K,) norm weight
        if getattr(smooth, "bias", None) is not None:
            _scale(smooth.bias, 1 / s64)
        for linear in balance:
            _scale(linear.weight, s64[None, :])  # (N, K): input columns


def _scale(param: torch.Tensor, factor: torch.Tensor) -> None:
    param.copy_((param.double() * factor).to(param.dtype))


def smooth_model(model: nn.Module, batches: Sequence[torch.Tensor], alpha: float = DEFAULT_ALPHA,
                 *, kinds: Sequence[str] = KINDS) -> SmoothingReport:
    """Folds SmoothQuant scales into a float32/float64 model, in place: activation maxima from
    `batches` ((1, T) token ids each), then, kind by kind, fold every mapping and check that the
    logits of the first batch did not move (more than FOLD_TOLERANCE relative); a kind that moves
    them is undone and reported in `refused`."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"smooth the model in float32 or float64 before casting it, not {dtype}")
    mappings = [m for m in find_mappings(model) if m.kind in kinds]
    tokens = sum(int(b.numel()) for b in batches)
    if not mappings or tokens == 0:
        log.info("smoothing: %s", "no mappings found" if not mappings else "no calibration tokens")
        return SmoothingReport(alpha, calibration_tokens=tokens)
    absmax = collect_input_absmax(model, sorted({m.balance[0] for m in mappings}), batches)
    probe = batches[0][:, :PROBE_TOKENS]
    reference = _logits(model, probe)

    applied: list[SmoothingMapping] = []
    refused: dict[str, float] = {}
    for kind in KINDS:
        group = [m for m in mappings if m.kind == kind]
        if not group:
            continue
        saved = {name: p.detach().clone() for m in group for name, p in _touched(model, m)}
        for m in group:
            balance = [model.get_submodule(n) for n in m.balance]
            fold_scales(model.get_submodule(m.smooth), balance,
                        smoothing_scales(absmax[m.balance[0]], [b.weight for b in balance], alpha))
        drift = float((_logits(model, probe) - reference).abs().max() / reference.abs().max().clamp(min=1e-12))
        if drift > FOLD_TOLERANCE:
            with torch.no_grad():
                for m in group:
                    for name, p in _touched(model, m):
                        p.copy_(saved[name])
            refused[kind] = drift
            log.warning("smoothing: %s folds changed the float logits by %.3g (relative); undone", kind, drift)
        else:
            applied += group
    log.info("smoothing: alpha %s, %d mappings folded from %d calibration tokens", alpha, len(applied), tokens)
    return SmoothingReport(alpha, applied, refused, tokens)


def _touched(model: nn.Module, m: SmoothingMapping) -> list[tuple[str, torch.Tensor]]:
    out = []
    for name in (m.smooth, *m.balance):
        module = model.get_submodule(name)
        out += [(f"{name}.{p_name}", p) for p_name, p in module.named_parameters(recurse=False)]
    return out


def _run(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids.to(device), use_cache=False)
    finally:
        model.train(was_training)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(input_ids=ids.to(device), use_cache=False).logits.double()


def calibration_batches(tokenizer: Any, *, text: str | None = None, rows: Sequence[dict[str, Any]] | None = None,
                        window: int = 512, max_tokens: int = 8192) -> list[torch.Tensor]:
    """(1, T) token-id tensors to calibrate on, at most `max_tokens` in all: `rows` rendered as in
    training (core.training.data.tokenize_row, one row per tensor, at most `window` tokens each),
    or `text` cut into windows of `window` tokens."""
    if rows:
        from trainforge.core.training.data import tokenize_row

        pieces = [tokenize_row(row, tokenizer, window).input_ids for row in rows]
    else:
        ids = tokenizer(text or "", add_special_tokens=False)["input_ids"]
        pieces = [ids[i:i + window] for i in range(0, len(ids), window)]
    out, total = [], 0
    for piece in pieces:
        piece = piece[:max_tokens - total]
        if piece:
            out.append(torch.tensor([piece], dtype=torch.long))
            total += len(piece)
        if total >= max_tokens:
            break
    return out


__all__ = ["DEFAULT_ALPHA", "KINDS", "SmoothingMapping", "SmoothingReport", "calibration_batches",
           "collect_input_absmax", "find_mappings", "fold_scales", "smooth_model", "smoothing_scales"]
