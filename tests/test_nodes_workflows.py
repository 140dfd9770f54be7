"""The example workflows are what workflows/build.py makes from the current node definitions."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build():
    if "libragen_workflows_build" not in sys.modules:
        spec = importlib.util.spec_from_file_location("libragen_workflows_build", REPO / "workflows" / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["libragen_workflows_build"] = module
        spec.loader.exec_module(module)
    return sys.modules["libragen_workflows_build"]


def test_workflow_files_are_up_to_date(capsys):
    assert build().main(["--check"]) == 0, capsys.readouterr().out


def test_api_and_ui_formats_describe_the_same_graph():
    b = build()
    for make in b.EXAMPLES:
        g = make()
        api = json.loads((REPO / "workflows" / "api" / f"{g.name}.json").read_text())
        ui = json.loads((REPO / "workflows" / f"{g.name}.json").read_text())
        ui_nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] != "Note"}
        assert {k: v["class_type"] for k, v in api.items()} == {k: n["type"] for k, n in ui_nodes.items()}
        api_links = {(k, name, tuple(v)) for k, node in api.items() for name, v in node["inputs"].items()
                     if isinstance(v, list)}
        ui_links = {(str(dst), ui_nodes[str(dst)]["inputs"][slot]["name"], (str(src), src_slot))
                    for _, src, src_slot, dst, slot, _ in ui["links"]}
        assert api_links == ui_links
        for node in api.values():
            if node["class_type"].startswith("LibraGen"):
                cls = b.load_pack().NODE_CLASS_MAPPINGS[node["class_type"]]
                required = set(cls.INPUT_TYPES()["required"])
                assert required <= set(node["inputs"]), (g.name, node["class_type"])
        text = json.dumps(api) + json.dumps(ui)
        assert "/work/" not in text and "/tmp/" not in text  # no machine-specific paths


def test_builder_refuses_a_wrong_connection():
    b = build()
    g = b.Graph("bad", "")
    img = g.add("LoadImage", 0, 0)
    g.add("LibraGenDecode", 1, 0, model=img.out(0))
    try:
        g.ui()
    except SystemExit as e:
        assert "gives IMAGE, LibraGenDecode.model takes LIBRAGEN_MODEL" in str(e)
    else:
        raise AssertionError("a wrong link type was accepted")


def test_prompt_rewrite_example_feeds_the_sampler_prompt_in_both_formats():
    api = json.loads((REPO / "workflows" / "api" / "prompt_rewrite.json").read_text())
    ui = json.loads((REPO / "workflows" / "prompt_rewrite.json").read_text())
    rewrite = next(k for k, n in api.items() if n["class_type"] == "LibraGenPromptRewrite")
    sampler = next(k for k, n in api.items() if n["class_type"] == "LibraGenSampler")
    assert api[sampler]["inputs"]["prompt"] == [rewrite, 0]  # the rewrite's "prompt" output, not "report"
    # labels and style guide come from the same references and model the sampler uses
    assert api[rewrite]["inputs"]["subjects"] == api[sampler]["inputs"]["subjects"]
    assert api[rewrite]["inputs"]["model"] == api[sampler]["inputs"]["model"]
    assert api[rewrite]["inputs"]["backend"] == "offline" and api[rewrite]["inputs"]["prompt"]

    nodes = {str(n["id"]): n for n in ui["nodes"]}
    slots = nodes[sampler]["inputs"]
    (slot,) = [i for i, inp in enumerate(slots) if inp["name"] == "prompt"]
    # a widget driven by a link, as the frontend saves it: the widget's name and the link
    assert slots[slot]["widget"] == {"name": "prompt"} and slots[slot]["type"] == "STRING"
    link = next(lk for lk in ui["links"] if lk[0] == slots[slot]["link"])
    assert link == [slots[slot]["link"], int(rewrite), 0, int(sampler), slot, "STRING"]
    assert link[0] in nodes[rewrite]["outputs"][0]["links"]
    # the widget keeps a value while linked, so widgets_values still has one entry per widget
    b = build()
    assert len(nodes[sampler]["widgets_values"]) == len(b.node_spec("LibraGenSampler")[1]) + 1  # + seed control
    assert all("widget" not in inp for n in ui["nodes"] if n["type"] != "LibraGenSampler" for inp in n["inputs"])


def test_builder_refuses_a_wrong_link_into_a_widget():
    b = build()
    g = b.Graph("bad", "")
    model = g.add("LibraGenLoadModel", 0, 0)
    g.add("LibraGenSampler", 1, 0, model=model.out(), prompt=model.out())
    try:
        g.ui()
    except SystemExit as e:
        assert "gives LIBRAGEN_MODEL, LibraGenSampler.prompt takes STRING" in str(e)
    else:
        raise AssertionError("a model was accepted as the sampler's prompt")
