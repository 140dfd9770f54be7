#!/usr/bin/env bash
# Set up ./.venv if needed, then run the main job on the embedded default model (no downloads):
# one subject reference + a prompt -> out/demo.mp4.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
mkdir -p out
.venv/bin/libragen generate \
  --ref examples/refs/blue_striped_star.png --label "the blue striped star" \
  --prompt "Ref 1: a blue striped star with a white dot.
Video: Ref 1[the blue striped star] moves to the right on a sky blue background." \
  --seed 7 --out out/demo.mp4 "$@"
