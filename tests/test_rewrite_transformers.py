"""Local causal-LM backend with tiny GPT-2 models built and saved in the test (no download).

A randomly initialised model answers garbage: that exercises validation and the offline
fallback. Rigged models (final LayerNorm weight 0, bias along one axis, that axis set only in one
token's embedding row) make greedy decoding always emit one whole-line token holding a given
answer (a valid Video line, or phantom prose): that exercises the success path through real
`generate`, and the check of the answer against the chosen style guide.
"""
from __future__ import annotations

import pytest
import torch

from libragen_core.errors import CheckpointError
from libragen_core.rewrite import rewrite
from libragen_core.spriteworld.captions import caption_facts

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

ANSWER = "Video: Ref 1[the blue star] spins clockwise on a sky blue gradient.\n"
PROSE = "A blue star with orange stripes spins clockwise in front of a sky blue gradient.\n\n"
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def build(folder, rigged: bool, answer: str = ANSWER):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "<eos>", "Video", ":", "Ref", "1", "[", "]", "the", "a", "star", "spins", "blue",
             "moves", "on", "clockwise", ".", "dog", "runs", "hello", "world"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="<eos>")
    fast.add_tokens([answer])
    fast.chat_template = TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(fast), n_positions=4096, n_embd=16, n_layer=1, n_head=2,
                        eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id)
    model = GPT2LMHeadModel(config)
    if rigged:
        target = fast.convert_tokens_to_ids(answer)
        with torch.no_grad():
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.zero_()
            model.transformer.ln_f.bias[0] = 10.0
            model.transformer.wte.weight[:, 0] = 0.0
            model.transformer.wte.weight[target, 0] = 1.0
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def garbage_lm(tmp_path_factory):
    return build(tmp_path_factory.mktemp("garbage_lm"), rigged=False)


@pytest.fixture(scope="module")
def rigged_lm(tmp_path_factory):
    return build(tmp_path_factory.mktemp("rigged_lm"), rigged=True)


@pytest.fixture(scope="module")
def prose_lm(tmp_path_factory):
    return build(tmp_path_factory.mktemp("prose_lm"), rigged=True, answer=PROSE)


def test_garbage_answer_falls_back_to_offline_with_a_warning(garbage_lm):
    r = rewrite(["the blue star"], "please have the star rotate clockwise", backend="transformers",
                model_dir=garbage_lm, style_guide="spriteworld")
    assert r.backend_used == "offline (fallback)"
    assert any("transformers rewrite backend failed" in w for w in r.warnings)
    assert caption_facts(r.prompt)["motions"] == {0: "spin_cw"}


def test_valid_answer_is_taken_and_cached(rigged_lm, tmp_path):
    r = rewrite(["the blue star"], "please have the star rotate clockwise", backend="transformers",
                model_dir=rigged_lm, style_guide="spriteworld", cache=tmp_path)
    assert r.backend_used == "transformers" and r.warnings == ()
    assert r.prompt == "Ref 1: a blue star.\n" + ANSWER.strip()
    assert len(list(tmp_path.rglob("*.json"))) == 1
    # an answer with the wrong number of bound subjects is rejected: two references, one bound
    r2 = rewrite(["the blue star", "the red circle"], "the star spins and the red one bounces",
                 backend="transformers", model_dir=rigged_lm, style_guide="spriteworld")
    assert r2.backend_used == "offline (fallback)" and any("never appear" in w for w in r2.warnings)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a transformers model folder"):
        rewrite(["the dog"], "the dog runs", backend="transformers", model_dir=tmp_path / "nothing")


def test_phantom_guide_takes_prose_and_rejects_ref_lines(prose_lm, rigged_lm, garbage_lm):
    """The phantom guide's system prompt goes to the model; its answer must be prose naming every subject."""
    from libragen_core.rewrite import phantom_style_guide
    from libragen_core.rewrite.prompting import system_prompt
    from libragen_core.rewrite.transformers_backend import TransformersBackend

    assert "plain English prose" in system_prompt(phantom_style_guide())
    r = rewrite(["the blue star"], "please have the star rotate clockwise", TransformersBackend(prose_lm),
                style_guide="phantom")
    assert r.backend_used == "transformers" and r.style == "phantom" and r.warnings == ()
    assert r.prompt == PROSE.strip() and r.ref_lines == ()
    # the same question answered in the Ref format: not phantom's style, so the offline prose is used
    r = rewrite(["the blue star"], "please have the star rotate clockwise", TransformersBackend(rigged_lm),
                style_guide="phantom")
    assert r.backend_used == "offline (fallback)" and r.prompt == "A blue star rotates clockwise."
    assert any("not valid phantom prose" in w and "Ref tags" in w for w in r.warnings)
    # prose that never names the second subject
    r = rewrite(["the blue star", "the red circle"], "the star spins and the circle bounces",
                TransformersBackend(prose_lm), style_guide="phantom")
    assert r.backend_used == "offline (fallback)" and any("never names subject(s) [2]" in w for w in r.warnings)
    assert r.prompt == "A blue star spins and a red circle bounces."
    r = rewrite(["the blue star"], "the star spins", backend="transformers", model_dir=garbage_lm,
                style_guide="phantom")
    assert r.backend_used == "offline (fallback)" and r.prompt == "A blue star spins."
