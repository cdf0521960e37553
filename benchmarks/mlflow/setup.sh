#!/usr/bin/env bash
# Creates benchmarks/mlflow/.venv with the pinned MLflow of requirements.txt. Idempotent: a venv
# that already has exactly these pins is left alone, so a second run costs a `pip freeze`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi

missing=0
frozen="$("$venv/bin/python" -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-')"
while read -r pin; do
  pin="${pin%%#*}"; pin="$(echo "$pin" | tr -d '[:space:]' | tr 'A-Z_' 'a-z-')"
  [ -z "$pin" ] && continue
  grep -qx "$pin" <<<"$frozen" || missing=1
done < "$here/requirements.txt"

if [ "$missing" = 1 ]; then
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
fi
"$venv/bin/mlflow" --version
