"""The Prompt Rewrite node outside ComfyUI: labels from subjects or text, ui text for display,
clear errors, and the models/LLM folder listing."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from libragen_core.conditioning.subjects import Subjects
from libragen_core.errors import ConfigError, InputError
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


def test_registered_with_the_pack_contract():
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["LibraGenPromptRewrite"] == "LibraGen Prompt Rewrite"
    assert Node.CATEGORY.startswith("LibraGen/")
    for section in Node.INPUT_TYPES().values():
        for name, spec in section.items():
            assert spec[1].get("tooltip"), name
            assert "key" not in name or name == "api_key_env"


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


def test_validation_never_echoes_a_pasted_key():
    msg = Node.VALIDATE_INPUTS(backend="http", api_key_env="sk-live-abc123", endpoint_model="m")
    assert isinstance(msg, str) and "NAME of an environment variable" in msg and "sk-live" not in msg
    with pytest.raises(ConfigError) as e:
        Node().rewrite("x", "http", "generic", labels="a", endpoint_model="m", api_key_env="sk-live-abc123")
    assert "sk-live" not in str(e.value)
    assert "models/LLM" in Node.VALIDATE_INPUTS(backend="transformers", llm="(none)")
    assert "endpoint_model" in Node.VALIDATE_INPUTS(backend="http", endpoint_model=" ")
    assert Node.VALIDATE_INPUTS(backend="offline") is True


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
