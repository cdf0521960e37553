#!/usr/bin/env bash
# Fails if what scripts/gen_protos.sh produces differs from what is committed: generated code,
# descriptor set, OpenAPI and docs page must never go stale.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generated=(protos/trainforge/v1 gateway/trainforge.pb gateway/openapi.json gateway/docs.html)
for path in "${generated[@]}"; do mkdir -p "$tmp/$(dirname "$path")"; cp -r "$path" "$tmp/$path"; done
scripts/gen_protos.sh
if ! diff -r -q "$tmp/protos/trainforge/v1" protos/trainforge/v1 -x __pycache__ >/dev/null \
   || ! cmp -s "$tmp/gateway/trainforge.pb" gateway/trainforge.pb \
   || ! cmp -s "$tmp/gateway/openapi.json" gateway/openapi.json \
   || ! cmp -s "$tmp/gateway/docs.html" gateway/docs.html; then
  echo "generated files are stale: run scripts/gen_protos.sh and commit the result" >&2
  git --no-pager diff --stat -- "${generated[@]}" >&2 || true
  exit 1
fi
echo "generated files are up to date"
