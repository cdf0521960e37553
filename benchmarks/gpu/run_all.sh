#!/usr/bin/env bash
# GPU checks for trainforge.kernels, in one go on one card:
#   1. the parity tests of tests/kernels, run natively (compiled kernels, no interpreter);
#   2. benchmarks/gpu/bench_kernels.py (timings + correctness checks, JSON).
# Logs and JSON go to $OUT (default: ./gpu-out). Extra arguments go to bench_kernels.py
# (e.g. --quick). Exits 0 when both pass, 1 when either fails; without a CUDA device it says so
# and exits 0 (3 with REQUIRE_GPU=1). PYTHON selects the interpreter (default: python).
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

echo "run_all.sh: tests $test_status, benchmark $bench_status; logs and JSON in $OUT"
exit $status
