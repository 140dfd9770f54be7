"""Prompt Rewrite inside ComfyUI's own Python: the pack loads with ComfyUI's modules, models/LLM is
registered in folder_paths (so extra_model_paths entries work), the cache lives in ComfyUI's user
folder, as does the server owner's endpoint list, and the node returns its prompt as ui text the way
core's Preview Any does."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.util, json, os, sys, tempfile
import comfy.cli_args
comfy.cli_args.args.cpu = True  # no GPU here; keeps model_management from probing CUDA
import folder_paths
root = tempfile.mkdtemp()
folder_paths.set_user_directory(os.path.join(root, "user"))
folder_paths.add_model_folder_path("LLM", os.path.join(root, "LLM"))  # as an extra_model_paths entry would
os.makedirs(os.path.join(root, "LLM", "tiny-chat"))
open(os.path.join(root, "LLM", "tiny-chat", "config.json"), "w").write("{}")
spec = importlib.util.spec_from_file_location("libragen_pack", os.path.join(sys.argv[1], "__init__.py"),
                                              submodule_search_locations=[sys.argv[1]])
pack = importlib.util.module_from_spec(spec); sys.modules["libragen_pack"] = pack; spec.loader.exec_module(pack)
from libragen_pack.nodes import adapter, rewrite_nodes
node = pack.NODE_CLASS_MAPPINGS["LibraGenPromptRewrite"]
out = node().rewrite("I want the red one to hop in place, camera panning left", "offline", "spriteworld",
                     labels="the red circle")
os.makedirs(os.path.join(root, "user", "libragen"))
open(os.path.join(root, "user", "libragen", "rewrite_endpoints.json"), "w").write(
    '{"endpoints": {"lab": {"url": "http://127.0.0.1:9/v1", "model": "m"}}}')
print(json.dumps({"in_comfyui": adapter.in_comfyui(), "llms": rewrite_nodes.list_llms(),
                  "endpoints": node.INPUT_TYPES()["optional"]["endpoint"][0],
                  "endpoints_file": str(rewrite_nodes.endpoints_file()),
                  "roots": [str(p) for p in rewrite_nodes.llm_roots()], "cache": str(rewrite_nodes.cache_folder()),
                  "user": folder_paths.get_user_directory(), "out": out,
                  "choices": node.INPUT_TYPES()["optional"]["llm"][0]}))
"""


def test_node_in_comfyui_python(comfyui):
    from libragen_core.spriteworld.captions import caption_facts

    info = json.loads(comfyui.run(SCRIPT, str(REPO)).stdout.strip().splitlines()[-1])
    assert info["in_comfyui"]
    assert info["llms"] == ["tiny-chat"] and "tiny-chat" in info["choices"]
    assert any(r.endswith("/models/LLM") for r in info["roots"]) and len(info["roots"]) == 2
    assert info["cache"].startswith(info["user"])
    # the server owner's endpoint list, read from ComfyUI's user folder
    assert info["endpoints_file"] == info["user"] + "/libragen/rewrite_endpoints.json"
    assert info["endpoints"] == ["(none)", "lab"]
    prompt, report = info["out"]["result"]
    assert info["out"]["ui"] == {"text": [prompt, report]}
    facts = caption_facts(prompt)
    assert facts["motions"] == {0: "bounce"} and facts["camera"] == "left"
