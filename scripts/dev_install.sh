#!/usr/bin/env bash
# (Re)installs trainforge into .venv in strict editable mode: only trainforge.* is importable, and a
# new module appears after rerunning this (strict mode links files, it does not add folders to sys.path).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip install -q --no-deps -e . --config-settings editable_mode=strict 2>&1 \
  | grep -vE "is ignored|^\s*$|\*\*\*\*|!!|editable|Please|to import|WheelFile|strategy" || true
