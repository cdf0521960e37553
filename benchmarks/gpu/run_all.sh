#!/usr/bin/env bash
# GPU checks and benchmarks for trainforge, in one go on one card, in this order:
#   1. parity_tests    the parity tests of tests/kernels, run natively (compiled kernels, no
#                      interpreter; pytest-xdist workers when the box has it);
#   2. bench_kernels   benchmarks/gpu/bench_kernels.py: do_bench timings + correctness checks, the
#                      issue-5 ratios (bench_kernels.json);
#   3. pytest_kernels  benchmarks/gpu/test_kernels_benchmark.py through pytest-benchmark: the same
#                      cases, host-clock rounds + do_bench quantiles (pytest_kernels.json);
#   4. bench_decode    benchmarks/gpu/bench_decode.py: greedy decode tokens/s of int8 vs bf16
#                      models, eager and compiled (bench_decode.json); SKIPPED without transformers;
#   5. bench_training  benchmarks/gpu/bench_training.py: GPT-2 124M, trainforge vs HF Trainer +
#                      torch.compile (bench_training.json; ~3 min). SKIP_TRAINING=1 leaves it out;
#                      it is SKIPPED when the box lacks its packages or too little of BUDGET_S is left;
#   6. summary         benchmarks/gpu/summarize.py: the ratios of every JSON in one summary.json.
#
# Time: the whole run stays within BUDGET_S seconds (default 480; 900 with DRY_RUN=1): each step
# runs under `timeout` (SIGINT, then SIGKILL 20 s later) with a cap of its own, shortened so that
# the steps after it keep their minimum (at most half of what is left). The JSON writers keep what
# they measured when stopped (bench_kernels.py rewrites its JSON after every case, bench_decode.py
# writes on SIGINT, pytest writes its JSON at the end of an interrupted session).
#
# Output in $OUT (default ./gpu-out), at most 7 files, because a device call returns at most 8:
#   run_all.log (everything printed), summary.json, bench_kernels.json, pytest_kernels.json,
#   bench_decode.json, bench_training.json, details.tar.gz (each step's log, the parity tests'
#   JUnit XML, environment.txt). Without a CUDA device: SKIPPED.txt and run_all.log only.
#
# Environment: PYTHON (default: the first of python3, python that imports torch), OUT, BUDGET_S,
# SKIP_TRAINING=1, TRAINING_ARGS (flags for bench_training.py, e.g. "--steps 60"), DECODE_ARGS
# (flags for bench_decode.py, e.g. "--backends compiled"), PARITY_WORKERS
# (pytest-xdist workers for the parity tests; default 8, 0 for none), REQUIRE_GPU=1 (exit 3
# instead of 0 without a CUDA device), DRY_RUN=1 (every step on the CPU: --dry-run, Triton
# interpreter, tiny shapes; proves the script and its code paths, numbers mean nothing).
# Arguments are passed to bench_kernels.py (e.g. --quick). Exit: 0 when every step that ran
# passed (skips included), 1 when any failed or timed out.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/gpu-out}"
# PYTHON unset: the first of python3, python that imports torch (a GPU box's plain python3 holds it).
if [[ -z "${PYTHON:-}" ]]; then
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' >/dev/null 2>&1; then
            PYTHON=$candidate
            break
        fi
    done
    PYTHON="${PYTHON:-python3}"
fi
DRY_RUN="${DRY_RUN:-0}"
if [[ "$DRY_RUN" == "1" ]]; then BUDGET_S="${BUDGET_S:-900}"; else BUDGET_S="${BUDGET_S:-480}"; fi
mkdir -p "$OUT"
cd "$ROOT" || exit 1

main() {
    if [[ "$DRY_RUN" == "1" ]]; then
        export TRITON_INTERPRET=1  # every kernel through the interpreter, on the CPU
        echo "run_all.sh: DRY RUN: every step on the CPU with tiny shapes; the numbers mean nothing"
    else
        unset TRITON_INTERPRET  # the point is to run the compiled kernels
        if ! "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
            echo "run_all.sh: SKIPPED: $PYTHON cannot import torch (set PYTHON); no GPU test or benchmark ran" \
                | tee "$OUT/SKIPPED.txt"
            if [[ "${REQUIRE_GPU:-0}" == "1" ]]; then return 3; fi
            return 0
        fi
        if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
            echo "run_all.sh: SKIPPED: no CUDA device visible to $PYTHON; no GPU test or benchmark ran" \
                | tee "$OUT/SKIPPED.txt"
            if [[ "${REQUIRE_GPU:-0}" == "1" ]]; then return 3; fi
            return 0
        fi
    fi

    # trainforge not installed (a bare GPU box with torch + triton): import it through a shim, the
    # package-dir mapping pyproject.toml declares (trainforge.kernels -> kernels/, trainforge.core ->
    # core/, trainforge.configs -> configs/). No __init__.py: trainforge stays a namespace package.
    if ! "$PYTHON" -c 'import trainforge.kernels, trainforge.core.compression' >/dev/null 2>&1; then
        local shim
        shim="$(mktemp -d)"
        mkdir -p "$shim/trainforge"
        ln -s "$ROOT/kernels" "$shim/trainforge/kernels"
        ln -s "$ROOT/core" "$shim/trainforge/core"
        ln -s "$ROOT/configs" "$shim/trainforge/configs"
        export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
        echo "run_all.sh: trainforge is not installed for $PYTHON: importing it from $ROOT through $shim"
    fi

    WORK="$(mktemp -d)"  # logs and reports that travel in details.tar.gz
    {
        date -u +"%Y-%m-%dT%H:%M:%SZ"
        command -v nvidia-smi >/dev/null && nvidia-smi
        "$PYTHON" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")'
        "$PYTHON" -c 'import importlib.metadata as m
for d in ("transformers", "pytest", "pytest-benchmark", "pytest-xdist"):
    try: print(d, m.version(d))
    except m.PackageNotFoundError: print(d, "not installed")'
    } >"$WORK/environment.txt" 2>&1
    cat "$WORK/environment.txt"

    local dry_flag=()
    [[ "$DRY_RUN" == "1" ]] && dry_flag=(--dry-run)
    declare -gA STATUS=()
    local order=(parity_tests bench_kernels pytest_kernels bench_decode bench_training)

    # -o addopts="": the project's addopts name plugins (pytest-asyncio) that a GPU box may lack.
    # --confcutdir: tests/conftest.py and benchmarks/conftest.py import the service stack
    # (PostgreSQL, gRPC, Envoy fixtures) that a bare GPU box does not have; these suites need none of it.
    local pytest_common=(-o addopts="" --import-mode=importlib -p no:cacheprovider -p no:randomly)

    # Autotune results on disk (Triton's TRITON_CACHE_AUTOTUNING): the pytest suite reuses the
    # configs bench_kernels.py chose for the same shapes, so both time the same kernels, and skips
    # re-tuning them. The benchmark steps print each autotuning (key, time, config chosen).
    export TRITON_CACHE_AUTOTUNING=1
    local tune_print=(env TRITON_PRINT_AUTOTUNING=1)

    # Parity tests. Kept for the later steps: 130 + 60 + 110 s.
    local xdist=()
    if [[ "$DRY_RUN" != "1" && "${PARITY_WORKERS:-8}" != "0" ]] && "$PYTHON" -c 'import xdist' >/dev/null 2>&1; then
        xdist=(-n "${PARITY_WORKERS:-8}")  # Triton compiles per process: workers compile in parallel
    fi
    run_step parity_tests 150 300 - "$PYTHON" -m pytest tests/kernels "${pytest_common[@]}" --confcutdir=tests/kernels \
        -q -ra "${xdist[@]}" --junitxml="$WORK/kernels-tests.xml"

    run_step bench_kernels 180 170 - "${tune_print[@]}" "$PYTHON" benchmarks/gpu/bench_kernels.py --require-cuda "${dry_flag[@]}" \
        --out "$OUT/bench_kernels.json" "$@"

    if "$PYTHON" -c 'import pytest_benchmark' >/dev/null 2>&1; then
        local bench_env=(TRITON_PRINT_AUTOTUNING=1)
        [[ "$DRY_RUN" == "1" ]] && bench_env+=(TRAINFORGE_BENCH_DRY_RUN=1)
        run_step pytest_kernels 100 110 - env "${bench_env[@]}" "$PYTHON" -m pytest benchmarks/gpu/test_kernels_benchmark.py \
            "${pytest_common[@]}" --confcutdir=benchmarks/gpu -q -rs --benchmark-only \
            --benchmark-json="$OUT/pytest_kernels.json" --benchmark-columns=min,median,iqr,rounds,iterations
    else
        STATUS[pytest_kernels]="skipped (pytest-benchmark is not installed for $PYTHON)"
        echo "run_all.sh: pytest_kernels ${STATUS[pytest_kernels]}"
    fi

    # bench_decode stops starting cells 25 s before its step's limit (imports, the last cell).
    local decode_limit
    decode_limit=$(step_limit 180 0)
    # shellcheck disable=SC2086  # DECODE_ARGS is a list of flags
    run_step bench_decode 180 0 4 "${tune_print[@]}" "$PYTHON" benchmarks/gpu/bench_decode.py --require-cuda "${dry_flag[@]}" \
        --budget-s $((decode_limit > 60 ? decode_limit - 25 : 35)) --out "$OUT/bench_decode.json" ${DECODE_ARGS:-}

    local training_min=200
    [[ "$DRY_RUN" == "1" ]] && training_min=90
    if [[ "${SKIP_TRAINING:-0}" == "1" ]]; then
        STATUS[bench_training]="skipped (SKIP_TRAINING=1)"
        echo "run_all.sh: bench_training ${STATUS[bench_training]}"
    elif ((BUDGET_S - (SECONDS - RUN_START) < training_min)); then
        STATUS[bench_training]="skipped (time budget: $((BUDGET_S - (SECONDS - RUN_START))) s left of BUDGET_S=$BUDGET_S, needs $training_min)"
        echo "run_all.sh: bench_training ${STATUS[bench_training]}"
    else
        # shellcheck disable=SC2086  # TRAINING_ARGS is a list of flags
        run_step bench_training 300 0 4 "$PYTHON" benchmarks/gpu/bench_training.py --require-cuda "${dry_flag[@]}" \
            --out "$OUT/bench_training.json" ${TRAINING_ARGS:-}
    fi

    local status_args=() name failed=0
    for name in "${order[@]}"; do
        status_args+=("$name=${STATUS[$name]:-not run}")
        [[ "${STATUS[$name]:-}" == failed* || "${STATUS[$name]:-}" == "timed out"* ]] && failed=1
    done
    "$PYTHON" benchmarks/gpu/summarize.py --in "$OUT" --junit "$WORK/kernels-tests.xml" \
        --out "$OUT/summary.json" --status "${status_args[@]}" 2>&1 | tee "$WORK/summary.log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "run_all.sh: summary FAILED"; failed=1; }
    tar -czf "$OUT/details.tar.gz" -C "$WORK" . && rm -rf "$WORK"
    echo "run_all.sh: done in $((SECONDS - RUN_START)) s of BUDGET_S=$BUDGET_S; $OUT holds: $(find "$OUT" -maxdepth 1 -type f -printf '%f ')"
    return $failed
}

# step_limit CAP RESERVE: seconds a step may run: its cap, or what is left of BUDGET_S after
# RESERVE seconds kept for the steps after it, whichever is smaller. The reserve is at most half
# of what is left, so that with a small BUDGET_S every step still gets a share, in order.
step_limit() {
    local cap=$1 reserve=$2 left
    left=$((BUDGET_S - (SECONDS - RUN_START)))
    ((reserve > left / 2)) && reserve=$((left / 2))
    left=$((left - reserve))
    if ((left < cap)); then echo "$left"; else echo "$cap"; fi
}

# run_step NAME CAP RESERVE SKIP_RC CMD...: runs CMD under its time limit, tees its output to
# $WORK/NAME.log and sets STATUS[NAME]: passed, skipped (exit SKIP_RC, the scripts' "missing
# packages"; "-" for pytest, whose 4 is a usage error), timed out, or failed (exit code).
run_step() {
    local name=$1 cap=$2 reserve=$3 skip_rc=$4 limit rc
    shift 4
    limit=$(step_limit "$cap" "$reserve")
    if ((limit < 30)); then
        STATUS[$name]="skipped (time budget: ${limit} s left for it)"
        echo "run_all.sh: $name ${STATUS[$name]}"
        return
    fi
    echo "run_all.sh: [$((SECONDS - RUN_START)) s] $name (limit ${limit} s): $*"
    local t0=$SECONDS
    timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    if ((rc == 0)); then
        STATUS[$name]="passed"
    elif [[ "$rc" == "$skip_rc" ]]; then
        STATUS[$name]="skipped (missing packages, see $name.log)"
    elif ((rc == 124 || rc == 137)); then
        STATUS[$name]="timed out after ${limit} s (partial results kept)"
    else
        STATUS[$name]="failed (exit $rc)"
    fi
    echo "run_all.sh: $name ${STATUS[$name]} in $((SECONDS - t0)) s"
}

RUN_START=$SECONDS
main "$@" 2>&1 | tee "$OUT/run_all.log"
exit "${PIPESTATUS[0]}"
