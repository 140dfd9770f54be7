"""benchmarks/dit_forward.py still runs end to end against ComfyUI (tiny sizes, one repeat)."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_SCRIPT = """
import runpy, sys
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def test_benchmark_runs_and_agrees(comfyui, tmp_path):
    out = tmp_path / "bench.json"
    comfyui.run(RUN_SCRIPT, str(REPO / "benchmarks" / "dit_forward.py"), "--sizes", "3x8x8", "--refs", "0,1",
                "--repeats", "1", "--warmup", "0", "--threads", "1", "--text-len", "32", "--json", str(out))
    result = json.loads(out.read_text())
    assert [(r["size"], r["refs"]) for r in result["forward"]] == [("3x8x8", 0), ("3x8x8", 1)]
    for row in result["forward"]:
        assert row["max_abs_diff"] < 1e-4
        assert row["ours_ms"] > 0 and row["comfy_ms"] > 0
        assert row["ours_peak_mib"] >= 0 and row["comfy_peak_mib"] >= 0
    assert {g["model"] for g in result["guidance"]} == {"ours", "ComfyUI"}
