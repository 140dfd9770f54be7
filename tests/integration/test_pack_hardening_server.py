"""The pack inside real ComfyUI servers with private base folders: errors that reach workflow
clients (/prompt refusals, /history) name files relative to ComfyUI's folders while the server log
keeps the full paths; LoRA Merge's save_name never replaces a LoRA it did not write; and a second
copy of the pack in custom_nodes is refused with a log line naming both folders while ComfyUI and
the first copy go on working."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration import comfy_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# what a pack folder needs to load (the rest of the repo is docs, tests, training)
PACK_PARTS = ("__init__.py", "pyproject.toml", "nodes", "libragen_core", "web")


def _model_node() -> dict:
    return {"class_type": "LibraGenLoadModel", "inputs": {
        "diffusion_model": "(embedded) libragen-sprite", "vae": "(embedded)", "text_encoder": "(embedded)",
        "weight_dtype": "default", "attention": "auto", "offload": "auto"}}


def _merge_graph(lora_1: str, save_name: str = "", **extra) -> dict:
    return {
        "1": _model_node(),
        "2": {"class_type": "LibraGenLoraMerge", "inputs": {
            "model": ["1", 0], "lora_1": lora_1, "weight_1": 1.0, "lora_2": "None", "weight_2": 0.5,
            "lora_3": "None", "weight_3": 0.5, "lora_4": "None", "weight_4": 0.5, "method": "linear", "rank": 0,
            "strength": 1.0, "ties_density": 0.2, "dare_drop_rate": 0.5, "save_name": save_name, **extra}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


def _errors(entry: dict) -> dict:
    return {m[0]: m[1] for m in entry["status"]["messages"]}


@pytest.fixture(scope="module")
def private(comfyui, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-base")
    loras = base / "models" / "loras"
    loras.mkdir(parents=True)
    comfy_server.write_example_lora(loras / "good.safetensors")
    comfy_server.write_example_lora(loras / "downloaded.safetensors", seed=1)  # a LoRA from elsewhere: no merge stamp
    data = comfy_server.write_example_lora(loras / "broken.safetensors").read_bytes()
    (loras / "broken.safetensors").write_bytes(data[:-64])  # cut short
    (base / "models" / "diffusion_models").mkdir(parents=True)
    (base / "models" / "diffusion_models" / "damaged.safetensors").write_bytes(data[:40])
    server = comfy_server.private_server(comfyui, base, {"libragen": REPO})
    yield server
    server.stop()


def test_history_errors_name_files_relative_to_comfyui_folders(private):
    base = str(private.dir)
    broken = private.run(_merge_graph("broken.safetensors"))
    err = _errors(broken)["execution_error"]
    assert "models/loras/broken.safetensors is truncated" in err["exception_message"], err["exception_message"]
    shown = json.dumps({k: v for k, v in err.items() if k != "traceback"})
    assert base not in shown and "/tmp/" not in shown, shown

    g = _merge_graph("good.safetensors")
    g["1"]["inputs"]["diffusion_model"] = "damaged.safetensors"
    damaged = _errors(private.run(g))["execution_error"]
    assert damaged["node_type"] == "LibraGenLoadModel"
    assert "models/diffusion_models/damaged.safetensors" in damaged["exception_message"], damaged
    assert base not in json.dumps({k: v for k, v in damaged.items() if k != "traceback"})

    ok = private.run(_merge_graph("good.safetensors", save_name="merged here"))
    assert ok["status"]["status_str"] == "success", ok["status"]
    report = json.dumps(ok["outputs"])
    assert "saved to models/loras/merged here.safetensors" in report and base not in report, report

    # the server's own log keeps the full paths
    log = private.log.read_text()
    assert str(private.dir / "models" / "loras" / "broken.safetensors") in log


def test_save_name_refuses_a_lora_it_did_not_write(private):
    downloaded = private.dir / "models" / "loras" / "downloaded.safetensors"
    before = downloaded.read_bytes()
    r = private.submit(_merge_graph("good.safetensors", save_name="downloaded"))
    assert r.status_code == 400, r.text
    assert "models/loras/downloaded.safetensors already exists and was not written by LoRA Merge" in r.text
    assert str(private.dir) not in r.text
    assert downloaded.read_bytes() == before
    # a merge's own file is replaced by the next merge of that name; overwrite replaces the other
    for _ in range(2):
        assert private.run(_merge_graph("good.safetensors", save_name="mine"))["status"]["status_str"] == "success"
    entry = private.run(_merge_graph("good.safetensors", save_name="downloaded", overwrite=True))
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert downloaded.read_bytes() != before


def test_second_copy_of_the_pack_is_refused_and_the_first_works(comfyui, tmp_path_factory):
    root = tmp_path_factory.mktemp("two-copies")
    copy = root / "copy"
    copy.mkdir()
    for part in PACK_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, copy / part)
    (root / "base" / "models" / "loras").mkdir(parents=True)
    comfy_server.write_example_lora(root / "base" / "models" / "loras" / "good.safetensors")
    server = comfy_server.private_server(comfyui, root / "base", {"libragen_a": REPO, "libragen_b": copy})
    try:
        log = server.log.read_text()
        assert "LibraGen is installed twice" in log, log[-4000:]
        line = next(x for x in log.splitlines() if "LibraGen is installed twice" in x)
        # ComfyUI loads custom_nodes in directory order: either copy may come first
        folder = {name: server.dir / "custom_nodes" / name for name in ("libragen_a", "libragen_b")}
        refused = next(n for n, f in folder.items() if f"the pack in {f} was not loaded" in line)
        loaded = next(n for n in folder if n != refused)
        assert f"the copy in {folder[loaded]} already is" in line, line  # both folders named
        info = server.get("/object_info").json()
        assert info["LibraGenLoraMerge"]["python_module"] == f"custom_nodes.{loaded}"
        entry = server.run(_merge_graph("good.safetensors"))
        assert entry["status"]["status_str"] == "success", entry["status"]
        print(f"refused {refused}: {line.strip()}")
    finally:
        server.stop()
    assert not server.dir.exists()
