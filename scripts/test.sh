#!/usr/bin/env bash
# Set up ./.venv if needed, then run the test suite. Extra arguments go to pytest.
# tests/integration runs only when COMFYUI_DIR and COMFYUI_PYTHON point at a real ComfyUI
# (see ../shared/tools/comfyui-harness); otherwise those tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest -q "$@"
