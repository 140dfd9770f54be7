"""The small text encoder's vocabulary for new trainings covers every caption the project writes.

Issue 21: the word list the shipped model was trained with had no digits, punctuation or hyphen
pieces, so "Ref 1", "Ref 2" and "Ref 3" tokenized alike and "zig-zags" was three <unk>s.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from libragen_core.eval.suite import PROMPT_KINDS, build_suite
from libragen_core.models.text_small import WordTokenizer
from libragen_core.rewrite import rewrite, spriteworld_style_guide
from libragen_core.spriteworld.captions import (
    anonymous_caption,
    scene_caption,
    text_vocabulary,
    user_prompts,
)
from libragen_core.spriteworld.scene import sample_scene

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "libragen_core" / "assets" / "libragen-sprite"


@pytest.fixture(scope="module")
def tok() -> WordTokenizer:
    return WordTokenizer(text_vocabulary())


def _unknown(tok: WordTokenizer, text: str) -> list[str]:
    return [w for w in tok.split(text) if w not in tok.index]


def _scenes(n: int):
    for i in range(n):
        rng = np.random.default_rng([21, i])
        yield sample_scene(rng, None, "heldout" if i % 4 == 0 else "train")


def test_every_generated_caption_and_prompt_tokenizes_without_unk(tok):
    kinds = {"caption": 0, "user_seen": 0, "user_heldout": 0, "anonymous": 0}
    for scene in _scenes(400):
        caption = scene_caption(scene)
        texts = {"caption": [caption], "anonymous": [anonymous_caption(caption)],
                 "user_seen": user_prompts(scene, "train"), "user_heldout": user_prompts(scene, "heldout")}
        for kind, items in texts.items():
            for text in items:
                assert not _unknown(tok, text), (kind, text, _unknown(tok, text))
                assert tok.unk_id not in tok.ids(text)
                kinds[kind] += 1
    assert min(kinds.values()) >= 400, kinds


def test_the_eval_suite_prompts_tokenize_without_unk(tok):
    cases = build_suite("full")
    for case in cases:
        assert set(case.prompts) == set(PROMPT_KINDS)
        for kind, text in case.prompts.items():
            assert not _unknown(tok, text), (case.id, kind, text)


def test_the_rewriters_spriteworld_outputs_tokenize_without_unk(tok):
    n = 0
    for scene in _scenes(60):
        idents = [s.identity for s in scene.subjects]
        label_sets = ([x.ref_name for x in idents], [x.name for x in idents], [""] * len(idents))
        for prompt in user_prompts(scene, "train") + user_prompts(scene, "heldout"):
            labels = label_sets[n % len(label_sets)]
            out = rewrite(labels, prompt, style_guide="spriteworld")
            assert not _unknown(tok, out.prompt), (labels, prompt, out.prompt)
            n += 1
    for ex in spriteworld_style_guide().data["examples"]:
        assert not _unknown(tok, rewrite(ex["labels"], ex["prompt"], style_guide="spriteworld").prompt)
        assert not _unknown(tok, ex["rewrite"])
    assert n >= 500


def test_the_readme_main_job_prompt_tokenizes_without_unk(tok):
    demo = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    prompt = re.search(r'--prompt "([^"]+)"', demo).group(1)
    assert "Ref 1" in prompt
    assert not _unknown(tok, prompt)


def test_ref_numbers_brackets_and_hyphenated_words_are_tokens_of_their_own(tok):
    ids = {k: tok.ids(f"Ref {k}") for k in (1, 2, 3, 4)}
    assert len({tuple(v) for v in ids.values()}) == 4, ids
    for mark in "[]:.,?-":
        assert tok.ids(mark)[0] != tok.unk_id, mark
    pieces = tok.split("zig-zags")
    assert pieces == ["zig", "-", "zags"]
    assert tok.unk_id not in tok.ids("zig-zags")
    assert tok.ids("the subject in reference image 3")[-2] == tok.index["3"]


def test_the_shipped_model_keeps_its_own_vocabulary():
    """New trainings use text_vocabulary(); the shipped weights keep the list they were trained with."""
    from libragen_core.models.text_encoders import load_text_encoder

    path = SHIPPED / "text.vocab.json"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert digest == "7593a140993a3542", "libragen-sprite's text.vocab.json changed; the shipped weights need theirs"
    words = json.loads(path.read_text(encoding="utf-8"))["words"]
    enc = load_text_encoder(SHIPPED / "text.safetensors")
    assert enc.tokenizer.words == words
    assert enc.tokenizer.ids("Ref 1") == enc.tokenizer.ids("Ref 2")  # its old list: digits are <unk>
    assert len(text_vocabulary()) > len(words)
