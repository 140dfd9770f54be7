#!/usr/bin/env bash
# Create or refresh ./.venv with the CPU build of torch and this package (editable) plus its extras.
# Safe to rerun: it reinstalls only when pyproject.toml changed since the last successful setup.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=.venv/.libragen-setup
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # pinned first: an unpinned torch (or one pulled in by peft/kornia) would fetch CUDA wheels
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[text,train,eval,curate,test]"
  echo "$want" >"$stamp"
fi
