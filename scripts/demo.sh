#!/usr/bin/env bash
# Set up ./.venv if needed, then run the main job on the embedded default model (no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
mkdir -p out
.venv/bin/libragen inspect --preset tiny
