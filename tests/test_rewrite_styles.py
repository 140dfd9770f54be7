"""The three style guides and how one is chosen: everyday prompts (people, pets, products) in the
libragen and phantom styles, the automatic choice from a model's files, and an OpenAI-compatible
endpoint answering in phantom's prose on a real loopback server."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from libragen_core.errors import InputError
from libragen_core.rewrite import (
    Rewrite,
    choose_style_guide,
    libragen_style_guide,
    phantom_style_guide,
    rewrite,
    spriteworld_style_guide,
)
from libragen_core.rewrite.base import validate_prose
from libragen_core.rewrite.prompting import system_prompt
from libragen_core.spriteworld.captions import caption_facts, parse_caption

EVERYDAY = [json.loads(line) for line in
            (Path(__file__).parent / "data" / "rewrite_everyday.jsonl").read_text().splitlines() if line.strip()]
UNNAMED = {"e29": [1]}  # prompts that never name a subject (the woman of e29): it is added once, with a warning
# what a sentence must never show: a doubled word, an article or possessive before another one or
# before a binding, a dangling joining word, stray spacing or punctuation
BAD = [re.compile(p, re.IGNORECASE) for p in (
    r"\b(\w+) \1\b", r"\b(?:a|an|the|his|her|its|their|my|our|your) (?:a|an|the|Ref \d)\b",
    r"\b(?:and|while|as|but|with|the|a|an|of|to|then)\s*[;.]", r"\s[,.;]", r"[,;]\s*[,;.]", r"\s{2}", r"@\d")]


def _description(label: str) -> str:
    """The label as the Ref line and phantom describe it, without its article."""
    return re.sub(r"^(?:the|a|an)\s+", "", label, flags=re.IGNORECASE)


def _sound(text: str) -> None:
    for rx in BAD:
        assert not rx.search(text), (rx.pattern, text)


@pytest.mark.parametrize("row", EVERYDAY, ids=[r["id"] for r in EVERYDAY])
def test_everyday_prompts_in_the_libragen_style_bind_every_subject_once(row):
    r = rewrite(row["subjects"], row["prompt"], style_guide="libragen")
    parsed = parse_caption(r.prompt)
    assert [d for _, d in sorted(parsed.refs.items())] == [f"{_article(s)}" for s in row["subjects"]]
    for k in range(1, len(row["subjects"]) + 1):
        assert r.video_line.count(f"Ref {k}[") == 1, r.video_line
    assert re.match(r"Video: (?:[A-Z]|Ref \d\[)", r.video_line) and r.video_line.endswith(".")
    for clause in r.video_line[len("Video: "):-1].split("; "):
        assert re.search(r"[a-z]{2}", clause), r.video_line
    _sound(r.video_line)
    # a subject the prompt names (by a pronoun too: "she", "her dog") is bound there, not added apart
    added = [w for w in r.warnings if "does not name" in w]
    assert (" also in the scene" in r.video_line) == bool(added) == (row["id"] in UNNAMED), r.video_line


@pytest.mark.parametrize("row", EVERYDAY, ids=[r["id"] for r in EVERYDAY])
def test_everyday_prompts_in_the_phantom_style_describe_every_subject_once(row):
    r = rewrite(row["subjects"], row["prompt"], style_guide="phantom")
    assert r.style == "phantom" and r.ref_lines == () and r.prompt == r.video_line
    assert not re.search(r"Ref \d|\[|\]|Video:", r.prompt)
    for label in row["subjects"]:
        found = re.findall(rf"\b{re.escape(_description(label))}\b", r.prompt, flags=re.IGNORECASE)
        assert len(found) == 1, (label, r.prompt)
    for sentence in re.split(r"(?<=\.) ", r.prompt):
        assert sentence[0].isupper() and sentence.endswith("."), r.prompt
    _sound(r.prompt)
    assert (" also in the scene" in r.prompt) == (row["id"] in UNNAMED), r.prompt


def _article(label: str) -> str:
    body = _description(label)
    return body if label[:1].isupper() and label.split()[0].lower() not in ("the", "a", "an") else \
        ("an " if body[0].lower() in "aeiou" else "a ") + body


def test_the_issue_example_binds_her_and_the_camera_clause():
    labels = ["the woman in a yellow raincoat", "the small white dog"]
    prompt = "she walks her dog along the pier at sunset, camera follows them"
    assert rewrite(labels, prompt, style_guide="libragen").prompt == (
        "Ref 1: a woman in a yellow raincoat.\nRef 2: a small white dog.\n"
        "Video: Ref 1[the woman in a yellow raincoat] walks Ref 2[her dog] along the pier at sunset; the camera "
        "follows them.")
    assert rewrite(labels, prompt, style_guide="phantom").prompt == (
        "A woman in a yellow raincoat walks her small white dog along the pier at sunset. The camera follows them.")
    r = rewrite(labels, prompt)  # no model: auto is phantom
    assert r.style == "phantom" and r.warnings == ()


def test_a_subject_the_prompt_never_names_is_still_there_once():
    labels = ["a woman in a red dress", "a golden retriever"]
    r = rewrite(labels, "a dog runs along the beach, waves in the background", style_guide="phantom")
    assert r.prompt == ("A golden retriever runs along the beach, waves in the background. A woman in a red dress "
                        "is also in the scene.")
    assert any("does not name Ref 1" in w for w in r.warnings) and any("by order" in w for w in r.warnings)
    # a noun of another kind (a watch is not the man) is not bound by order
    r = rewrite(["a man in a grey suit"], "he checks his watch and hurries across a busy street",
                style_guide="libragen")
    assert r.video_line == "Video: Ref 1[the man in a grey suit] checks his watch and hurries across a busy street."
    assert r.warnings == ()


def test_validate_prose_names_the_defect():
    assert validate_prose("A dog  runs.", ["Ref 1: a small dog."]) == "A dog runs."
    assert validate_prose("Two dogs play.", ["Ref 1: a dog.", "Ref 2: a dog."]) == "Two dogs play."
    with pytest.raises(InputError, match="Ref tags"):
        validate_prose("Video: Ref 1[the dog] runs.", ["Ref 1: a dog."])
    with pytest.raises(InputError, match=r"never names subject\(s\) \[2\] \(cat\)"):
        validate_prose("A dog runs.", ["Ref 1: a dog.", "Ref 2: a cat."])
    with pytest.raises(InputError, match="empty"):
        validate_prose("  ", [])


def test_each_family_sends_its_own_instructions():
    phantom, libragen, sprite = (system_prompt(g()) for g in (phantom_style_guide, libragen_style_guide,
                                                              spriteworld_style_guide))
    assert "plain English prose" in phantom and "no 'Ref' tags" in phantom and "Video: " not in phantom
    assert "Ref k[short name]" in libragen and "Motions:" not in libragen
    assert "Ref k[short name]" in sprite and "zigzag_right: 'zig-zags to the right'" in sprite


def test_rewrite_results_keep_their_style_through_the_cache_format():
    r = rewrite(["the dog"], "the dog runs", style_guide="phantom")
    assert Rewrite.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert Rewrite.from_dict({k: v for k, v in r.to_dict().items() if k != "style"}).style == ""


# ---------------------------------------------------------------------------------------- auto choice

def _file(path: Path, metadata: dict) -> Path:
    from libragen_core.io.safetensors_file import save_state_dict

    return save_state_dict({"head.head.weight": torch.zeros(2, 2)}, path, metadata=metadata)


def test_auto_choice_from_the_model_files(tmp_path):
    from libragen_core.models.bundle import ModelBundle, ModelCard

    guide, why = choose_style_guide("auto")
    assert guide.name == "phantom" and why.startswith("auto: no sign of LibraGen post-training")
    assert choose_style_guide("generic")[0].name == "libragen" and "old name" in choose_style_guide("generic")[1]
    assert choose_style_guide("PHANTOM")[0].name == "phantom"
    # the DiT file: explicit metadata, a libragen-sprite base, our recipe's method, or its name
    tagged = _file(tmp_path / "wan_finetune.safetensors", {"libragen.style_guide": "libragen"})
    assert choose_style_guide(None, dit_file=tagged)[0].name == "libragen"
    sprite = _file(tmp_path / "x.safetensors", {"base_model": "libragen-sprite"})
    assert choose_style_guide(None, dit_file=sprite)[0].name == "spriteworld"
    plain = _file(tmp_path / "Phantom-Wan-1.3B_fp16.safetensors", {"format": "pt"})
    guide, why = choose_style_guide(None, dit_file=plain)
    assert guide.name == "phantom" and "Phantom-Wan" in why
    # a bundle: its own guide file first, then the embedded name, then its DiT file (beside the card)
    spriteworld_style_guide().save(tmp_path / "guide.json")
    card = ModelCard(name="m", dit="wan_finetune.safetensors", vae="v", text_encoder="t", style_guide="guide.json")
    assert choose_style_guide(None, ModelBundle(None, None, None, card, tmp_path))[0].name == "spriteworld"
    card = ModelCard(name="m", dit="wan_finetune.safetensors", vae="v", text_encoder="t")
    assert choose_style_guide("auto", ModelBundle(None, None, None, card, tmp_path))[0].name == "libragen"
    card = ModelCard(name="libragen-sprite", dit="dit.safetensors", vae="v", text_encoder="t")
    assert choose_style_guide(None, ModelBundle(None, None, None, card, None))[0].name == "spriteworld"
    # LoRAs applied on top say more than the base model
    guide, why = choose_style_guide(None, ModelBundle(None, None, None, card, None),
                                    loras=[{"method": "dpo-consis", "base_model": "wan2.1"}])
    assert guide.name == "libragen" and "LoRA" in why
    # a merge made in the LoRA Merge node says nothing about captions
    assert choose_style_guide(None, loras=[{"method": "merge:ties"}])[0].name == "phantom"


# ---------------------------------------------------------------------------------------- http prose

def test_http_endpoint_gets_the_phantom_guide_and_its_prose_is_checked(monkeypatch):
    from tests.test_rewrite_http import Server, chat_reply

    monkeypatch.delenv("LIBRAGEN_API_KEY", raising=False)
    server = Server()
    try:
        labels = ["the woman in a yellow raincoat", "the small white dog"]
        prompt = "she walks her dog along the pier at sunset, camera follows them"
        answer = ("A woman in a yellow raincoat strolls along a wooden pier at sunset, her small white dog trotting "
                  "beside her. The camera follows them.")
        server.script = [(200, chat_reply(f"{answer}\n\nNote: I kept both subjects."), 0, {})]
        r = rewrite(labels, prompt, backend="http", url=server.url, model="m", timeout=2.0, retries=0,
                    style_guide="phantom")
        assert r.backend_used == "http" and r.prompt == answer and r.style == "phantom"
        system = server.requests[0]["body"]["messages"][0]["content"]
        assert "plain English prose" in system and "walks her small white dog" in system
        # an answer in the wrong style (Ref lines) or missing a subject falls back, with the reason
        for bad, reason in (("Video: Ref 1[the woman] walks Ref 2[the dog].", "Ref tags"),
                            ("A woman walks along the pier at sunset.", "never names subject(s) [2]")):
            server.script = [(200, chat_reply(bad), 0, {})]
            r = rewrite(labels, prompt, backend="http", url=server.url, model="m", timeout=2.0, retries=0,
                        style_guide="phantom")
            assert r.backend_used == "offline (fallback)" and any(reason in w for w in r.warnings), r.warnings
            assert r.prompt.startswith("A woman in a yellow raincoat walks her small white dog")
    finally:
        server.close()


def test_http_spriteworld_answer_must_parse_in_the_grammar(monkeypatch):
    from tests.test_rewrite_http import Server, chat_reply

    server = Server()
    try:
        server.script = [(200, chat_reply("Video: Ref 1[the blue star] sinks slowly on a sky blue gradient."), 0, {})]
        r = rewrite(["the blue star"], "the star sinks to the bottom", backend="http", url=server.url, model="m",
                    timeout=2.0, retries=0, style_guide="spriteworld")
        assert r.backend_used == "offline (fallback)" and any("caption grammar" in w for w in r.warnings)
        assert caption_facts(r.prompt)["motions"] == {0: "move_down"}
    finally:
        server.close()
