#!/usr/bin/env bash
# GPU checks for trainforge.kernels, in one go on one card:
#   1. the parity tests of tests/kernels, run natively (compiled kernels, no interpreter);
#   2. benchmarks/gpu/bench_kernels.py (timings + correctness checks, JSON);
#   3. benchmarks/gpu/bench_training.py (GPT-2 124M: the trainforge recipe vs HF Trainer +
#      torch.compile, JSON; ~3 min on an H100/H200). SKIP_TRAINING=1 leaves it out; it is
#      reported as skipped, not failed, when the box lacks transformers/datasets/tensorboard.
# Logs and JSON go to $OUT (default: ./gpu-out). Extra arguments go to bench_kernels.py
# (e.g. --quick); TRAINING_ARGS to bench_training.py (e.g. "--steps 60"). Exits 0 when all pass,
# 1 when any fails; without a CUDA device it says so and exits 0 (3 with REQUIRE_GPU=1).
# PYTHON selects the interpreter (default: python).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/gpu-out}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
cd "$ROOT" || exit 1
unset TRITON_INTERPRET  # the point is to run the compiled kernels

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "run_all.sh: SKIPPED: no CUDA device visible to $PYTHON; no GPU test or benchmark ran" \
        | tee "$OUT/SKIPPED.txt"
    if [[ "${REQUIRE_GPU:-0}" == "1" ]]; then exit 3; fi
    exit 0
fi

# trainforge not installed (a bare GPU box with torch + triton): import it through a shim,
# the same package-dir mapping pyproject.toml declares (trainforge.kernels -> kernels/).
if ! "$PYTHON" -c 'import trainforge.kernels' >/dev/null 2>&1; then
    SHIM="$(mktemp -d)"
    mkdir -p "$SHIM/trainforge"
    ln -s "$ROOT/kernels" "$SHIM/trainforge/kernels"
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PYTHON" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, torch.cuda.get_device_name())'
} >"$OUT/environment.txt" 2>&1

status=0
# -o addopts="": the project's addopts name plugins (pytest-benchmark, pytest-asyncio) that a
# GPU box may lack; the kernel tests need only importlib mode.
"$PYTHON" -m pytest tests/kernels -o addopts="" --import-mode=importlib -p no:cacheprovider -q \
    -ra --junitxml="$OUT/kernels-tests.xml" 2>&1 | tee "$OUT/kernels-tests.log"
test_status=${PIPESTATUS[0]}
[[ $test_status -eq 0 ]] || { echo "run_all.sh: GPU parity tests FAILED ($test_status)"; status=1; }

"$PYTHON" benchmarks/gpu/bench_kernels.py --require-cuda --out "$OUT/bench_kernels.json" "$@" 2>&1 \
    | tee "$OUT/bench_kernels.log"
bench_status=${PIPESTATUS[0]}
[[ $bench_status -eq 0 ]] || { echo "run_all.sh: benchmark FAILED ($bench_status)"; status=1; }

training_status=skipped
if [[ "${SKIP_TRAINING:-0}" != "1" ]]; then
    # The recipe imports trainforge.core (not only trainforge.kernels): map it the same way when
    # trainforge is not installed. No __init__.py in the shim: trainforge stays a namespace
    # package, so this merges with the kernels shim above.
    if ! "$PYTHON" -c 'import trainforge.core.training.recipe' >/dev/null 2>&1; then
        TF_SHIM="$(mktemp -d)"
        mkdir -p "$TF_SHIM/trainforge"
        ln -s "$ROOT/core" "$TF_SHIM/trainforge/core"
        ln -s "$ROOT/configs" "$TF_SHIM/trainforge/configs"
        export PYTHONPATH="$TF_SHIM${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # shellcheck disable=SC2086  # TRAINING_ARGS is a list of flags
    "$PYTHON" benchmarks/gpu/bench_training.py --require-cuda --out "$OUT/bench_training.json" \
        ${TRAINING_ARGS:-} 2>&1 | tee "$OUT/bench_training.log"
    training_status=${PIPESTATUS[0]}
    if [[ $training_status -eq 4 ]]; then
        echo "run_all.sh: training benchmark SKIPPED (missing packages, see bench_training.log)"
    elif [[ $training_status -ne 0 ]]; then
        echo "run_all.sh: training benchmark FAILED ($training_status)"; status=1
    fi
fi

echo "run_all.sh: tests $test_status, benchmark $bench_status, training $training_status; logs and JSON in $OUT"
exit $status
