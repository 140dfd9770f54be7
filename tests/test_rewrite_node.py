"""The Prompt Rewrite node outside ComfyUI: labels from subjects or text, ui text for display,
clear errors, the models/LLM folder listing, and endpoints: only the server's configured ones, by
name, with key-shaped text refused without being echoed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from libragen_core.conditioning.subjects import Subjects
from libragen_core.errors import ConfigError, InputError
from libragen_core.rewrite.endpoints import ENDPOINTS_ENV
from libragen_core.spriteworld.captions import caption_facts
from tests.pack import load_pack

REPO = Path(__file__).resolve().parents[1]



pack = load_pack()
Node = pack.NODE_CLASS_MAPPINGS["LibraGenPromptRewrite"]


def subjects(*labels):
    return Subjects(latents=torch.zeros(len(labels), 16, 1, 8, 8), labels=labels)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBRAGEN_REWRITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIBRAGEN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv(ENDPOINTS_ENV, raising=False)


def test_registered_with_the_pack_contract():
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["LibraGenPromptRewrite"] == "LibraGen Prompt Rewrite"
    assert Node.CATEGORY.startswith("LibraGen/")
    for section in Node.INPUT_TYPES().values():
        for name, spec in section.items():
            assert spec[1].get("tooltip"), name
            assert not any(word in name for word in ("key", "url", "env")), name  # nothing names a URL or a variable


def test_offline_rewrite_from_subject_labels_shows_on_the_node():
    out = Node().rewrite("I want the star to weave to the right and the red one to rotate clockwise", "offline",
                         "spriteworld", subjects=subjects("the blue star", "the red circle"))
    prompt, report = out["result"]
    assert out["ui"]["text"] == [prompt, report]
    assert caption_facts(prompt)["motions"] == {0: "zigzag_right", 1: "spin_cw"}
    assert report.startswith("backend: offline") and "warning: no background named" in report


def test_default_subject_labels_count_as_unlabelled_and_label_text_overrides():
    prompt = Node().rewrite("a dog runs on the beach", "offline", "generic", subjects=subjects("Ref 1"))["result"][0]
    assert prompt == "Ref 1: a dog.\nVideo: Ref 1[the dog] runs on the beach."
    prompt = Node().rewrite("the puppy runs", "offline", "generic", subjects=subjects("Ref 1"),
                            labels="the puppy\n")["result"][0]
    assert prompt.startswith("Ref 1: a puppy.")
    with pytest.raises(InputError, match="labels has 2 lines but subjects holds 1"):
        Node().rewrite("x", "offline", "generic", subjects=subjects("a"), labels="a\nb")
    # no subjects: the label lines are the references; no model: auto writes phantom prose
    out = Node().rewrite("the cat watches the dog", "offline", "auto", labels="the dog\nthe cat")
    prompt, report = out["result"]
    assert prompt == "A cat watches a dog."
    assert "style: phantom (auto: " in report
    prompt = Node().rewrite("the cat watches the dog", "offline", "libragen", labels="the dog\nthe cat")["result"][0]
    assert "Ref 2[the cat] watches Ref 1[the dog]" in prompt


def test_style_guide_auto_uses_the_connected_model(tmp_path):
    from libragen_core.models.bundle import ModelBundle, ModelCard
    from libragen_core.rewrite import spriteworld_style_guide

    spriteworld_style_guide().save(tmp_path / "guide.json")
    card = ModelCard(name="m", dit="d", vae="v", text_encoder="t", style_guide="guide.json")
    model = pack.nodes.types.LibraGenModel(bundle=ModelBundle(None, None, None, card, tmp_path), name="m")
    prompt = Node().rewrite("please have the star hop in place", "offline", "auto", model=model,
                            labels="the blue star")["result"][0]
    assert caption_facts(prompt)["motions"] == {0: "bounce"}


PASTED = "sk-live-0123456789abcdefABCDEF"


def configure(monkeypatch, tmp_path, endpoints: dict) -> Path:
    path = tmp_path / "rewrite_endpoints.json"
    path.write_text(json.dumps({"endpoints": endpoints}))
    monkeypatch.setenv(ENDPOINTS_ENV, str(path))
    return path


def test_the_endpoint_list_is_the_servers_configuration(monkeypatch, tmp_path):
    assert Node.INPUT_TYPES()["optional"]["endpoint"][0] == ["(none)"]
    assert "This server offers none yet" in Node.VALIDATE_INPUTS(backend="http")
    configure(monkeypatch, tmp_path, {"lab": {"url": "http://10.0.0.5:8000/v1", "model": "m"},
                                      "cloud": {"url": "https://api.example.com/v1", "model": "m2",
                                                "api_key_env": "CLOUD_KEY"}})
    choices = Node.INPUT_TYPES()["optional"]["endpoint"][0]
    assert choices == ["(none)", "lab", "cloud"]
    assert Node.VALIDATE_INPUTS(backend="http", endpoint="cloud", prompt="the dog runs", labels="the dog") is True
    assert Node.VALIDATE_INPUTS(backend="offline", endpoint="(none)") is True
    # a URL, a variable, a config field, an old-style name: one refusal, quoting none of them
    named = ("http://10.0.0.5:8000/v1", "http://127.0.0.1:1/v1", "CLOUD_KEY", "HOME", "lab ")
    answers = {Node.VALIDATE_INPUTS(backend="http", endpoint=n) for n in named}
    assert len(answers) == 1
    (answer,) = answers
    assert "not one of the endpoints this server offers" in answer
    assert not any(n.strip() in answer for n in named if n != "lab ") and "10.0.0.5" not in answer
    # an old API workflow: no endpoint input at all (its removed inputs never reach validation)
    needs = Node.VALIDATE_INPUTS(backend="http")
    assert "pick one of the endpoints this server offers" in needs and "endpoint_url" in needs
    with pytest.raises(ConfigError, match="pick one of the endpoints"):
        Node().rewrite("x", "http", "generic", labels="a")
    with pytest.raises(ConfigError, match="not one of the endpoints"):
        Node().rewrite("x", "http", "generic", labels="a", endpoint="http://10.0.0.5:8000/v1")


def test_a_broken_configuration_offers_nothing_and_says_where(monkeypatch, tmp_path, caplog):
    path = configure(monkeypatch, tmp_path, {})
    path.write_text('{"endpoints": {"lab": {"url": "http://h/v1", "model": "m", "key": "x"}}}')
    with caplog.at_level("ERROR", logger="libragen.rewrite"):
        assert Node.INPUT_TYPES()["optional"]["endpoint"][0] == ["(none)"]  # the node still loads
    assert str(path) in caplog.text and "unknown field(s) 'key'" in caplog.text
    problem = Node.VALIDATE_INPUTS(backend="http", endpoint="lab")
    assert str(path) in problem and "api_key_env" in problem
    assert Node.VALIDATE_INPUTS(backend="offline") is True  # offline does not need it


def test_key_shaped_text_is_refused_without_being_echoed(monkeypatch, tmp_path):
    configure(monkeypatch, tmp_path, {"lab": {"url": "http://10.0.0.5:8000/v1", "model": "m"}})
    for field in ("prompt", "labels", "endpoint", "llm"):
        msg = Node.VALIDATE_INPUTS(backend="offline", **{field: f"here {PASTED}"})
        assert isinstance(msg, str) and msg.startswith(f"{field} holds what looks like an API key"), msg
        assert PASTED not in msg and "sk-live" not in msg
    with pytest.raises(InputError) as e:  # a linked prompt is only seen at run time
        Node().rewrite(f"the dog runs {PASTED}", "offline", "generic", labels="the dog")
    assert "looks like an API key" in str(e.value) and PASTED not in str(e.value)
    assert "models/LLM" in Node.VALIDATE_INPUTS(backend="transformers", llm="(none)")
    assert "not one of the language model folders" in Node.VALIDATE_INPUTS(backend="offline", llm="elsewhere")


def test_posted_graphs_are_scrubbed_before_comfyui_keeps_them():
    from libragen_pack.nodes.rewrite_nodes import scrub_posted_graph

    posted = {"prompt": {
        "1": {"class_type": "LibraGenPromptRewrite", "inputs": {
            "prompt": "the dog runs", "backend": "http", "endpoint": "(none)", "timeout": PASTED,
            "endpoint_url": "http://attacker:9/v1", "endpoint_model": "m", "api_key_env": PASTED}},
        "2": {"class_type": "LibraGenPromptRewrite", "inputs": {
            "prompt": "the cat sits", "backend": "offline", "endpoint_url": "http://127.0.0.1:11434/v1",
            "endpoint_model": "", "api_key_env": "LIBRAGEN_API_KEY", "subjects": ["3", 0]}},
        "3": {"class_type": "OtherNode", "inputs": {"text": PASTED}},
        "4": "not a node", "5": {"class_type": "LibraGenPromptRewrite", "inputs": None}}}
    out = scrub_posted_graph(posted)
    one, two = out["prompt"]["1"]["inputs"], out["prompt"]["2"]["inputs"]
    assert PASTED not in json.dumps(out["prompt"]["1"]) and "attacker" not in json.dumps(out["prompt"])
    assert one["timeout"] == "[redacted]" and one["endpoint"].startswith("(key-shaped value removed from: ")
    assert two == {"prompt": "the cat sits", "backend": "offline", "subjects": ["3", 0]}  # dropped, not refused
    assert out["prompt"]["3"]["inputs"]["text"] == PASTED  # other nodes are not ours to touch
    msg = Node.VALIDATE_INPUTS(backend="http", endpoint=one["endpoint"])
    assert msg.startswith("timeout, api_key_env held what looks like an API key or token") and PASTED not in msg
    assert scrub_posted_graph(None) is None and scrub_posted_graph({"prompt": []}) == {"prompt": []}


def test_the_report_and_the_log_never_carry_a_key(monkeypatch, tmp_path, caplog):
    from tests.test_rewrite_http import Server, chat_reply

    server = Server()
    try:
        key = "k" * 6 + "plain"  # no key shape: only the exact value of the endpoint's key catches it
        monkeypatch.setenv("LAB_KEY", key)
        configure(monkeypatch, tmp_path, {"lab": {"url": server.url, "model": "m", "api_key_env": "LAB_KEY"}})
        server.script = [(200, chat_reply(f"Video: Ref 1[the dog] runs with {key}."), 0, {})]
        with caplog.at_level("WARNING", logger="libragen.rewrite"):
            out = Node().rewrite("the dog runs", "http", "generic", labels="the dog", endpoint="lab", timeout=5.0,
                                 retries=0, use_cache=False)
            server.script = [(200, f"echo: Bearer {key}".encode(), 0, {})]
            fallback = Node().rewrite("the dog walks", "http", "generic", labels="the dog", endpoint="lab",
                                      timeout=5.0, retries=0, use_cache=False)
        assert server.requests[0]["headers"]["Authorization"] == f"Bearer {key}"
        assert out["result"][0] == "Ref 1: a dog.\nVideo: Ref 1[the dog] runs with [redacted]."
        assert out["result"][1].splitlines()[0] == "backend: http"
        assert "endpoint 'lab' did not answer with JSON" in fallback["result"][1]
        assert key not in json.dumps([out, fallback]) + caplog.text and server.url not in fallback["result"][1]
    finally:
        server.close()


def test_llm_folders_are_listed_from_models_llm(tmp_path):
    from libragen_pack.nodes import rewrite_nodes

    folder = tmp_path / "models" / "LLM" / "tiny-chat"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (tmp_path / "models" / "LLM" / "not-a-model").mkdir()
    assert rewrite_nodes.list_llms() == ["tiny-chat"]
    assert rewrite_nodes.llm_path("tiny-chat") == folder.resolve()
    assert "tiny-chat" in Node.INPUT_TYPES()["optional"]["llm"][0]
    with pytest.raises(ConfigError, match="not found"):
        rewrite_nodes.llm_path("../../etc")


def test_style_guide_choices_keep_generic_for_old_workflows():
    choices = Node.INPUT_TYPES()["required"]["style_guide"][0]
    assert choices[:4] == ["auto", "phantom", "libragen", "spriteworld"] and "generic" in choices
    old = Node().rewrite("the dog runs", "offline", "generic", labels="the dog")["result"][0]
    assert old == Node().rewrite("the dog runs", "offline", "libragen", labels="the dog")["result"][0]
    assert old == "Ref 1: a dog.\nVideo: Ref 1[the dog] runs."


def test_style_guide_auto_reads_the_loras_applied_to_the_model(tmp_path):
    """A LoRA saved by training/ (base_model libragen-sprite) or post-trained with the recipe on another
    base (method sft-...) picks the guide, read back from a real safetensors file."""
    from libragen_core.lora import load_lora, save_lora
    from libragen_core.lora.weights import LoraFactors, LoraWeights
    from libragen_core.models.bundle import ModelBundle, ModelCard

    lora = LoraWeights({"blocks.0.self_attn.q": LoraFactors(torch.zeros(2, 8), torch.zeros(8, 2), 2.0)})
    sprite = load_lora(save_lora(lora, tmp_path / "sft.safetensors", method="sft-in-pair",
                                 base_model="libragen-sprite"))
    real = load_lora(save_lora(lora, tmp_path / "real.safetensors", method="sft-cross-pair", base_model="wan2.1"))
    card = ModelCard(name="Phantom_Wan_1.3B.safetensors", dit="Phantom_Wan_1.3B.safetensors", vae="v",
                     text_encoder="t")
    base = pack.nodes.types.LibraGenModel(bundle=ModelBundle(None, None, None, card, None), name="m")
    patch = pack.nodes.types.LoraPatch
    out = Node().rewrite("the star spins clockwise", "offline", "auto", model=base, labels="the blue star")
    assert out["result"][0] == "A blue star spins clockwise." and "Phantom-Wan" in out["result"][1]
    out = Node().rewrite("the star spins clockwise", "offline", "auto", labels="the blue star",
                         model=base.with_patches(patch(sprite, 1.0, "sft")))
    assert caption_facts(out["result"][0])["motions"] == {0: "spin_cw"}
    assert "style: spriteworld (auto: a LoRA applied" in out["result"][1]
    out = Node().rewrite("the star spins clockwise", "offline", "auto", labels="the blue star",
                         model=base.with_patches(patch(real, 1.0, "real")))
    assert out["result"][0].endswith("Video: Ref 1[the star] spins clockwise.")
    assert "style: libragen" in out["result"][1]
