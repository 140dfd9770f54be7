"""The SpriteWorld small text encoder: word tokenizer, features, save/load through load_text_encoder."""
import json

import pytest
import torch

from libragen_core.errors import CheckpointError
from libragen_core.models.text_encoders import (
    SmallTextConfig,
    SmallTextEncoder,
    TextEncoder,
    WordTokenizer,
    load_text_encoder,
)
from libragen_core.models.text_small import vocab_path_for

CAPTIONS = [
    "Ref 1: a blue star with white stripes.",
    "Video: Ref 1[the blue star] spins slowly while the camera pans right.",
    "Ref 2: a small red circle. Video: Ref 2[the circle] bounces.",
]


def _encoder(max_length=16, seed=0):
    torch.manual_seed(seed)
    tok = WordTokenizer.from_texts(CAPTIONS)
    return SmallTextEncoder(SmallTextConfig(vocab_size=tok.vocab_size + 4, text_dim=32, num_layers=2, num_heads=4,
                                            max_length=max_length), tok)


def test_word_tokenizer_splits_and_maps():
    tok = WordTokenizer.from_texts(CAPTIONS)
    assert WordTokenizer.split("Ref 1[the blue star]") == ["ref", "1", "[", "the", "blue", "star", "]"]
    assert WordTokenizer.split("Ref 12:  The STAR's, ok.") == ["ref", "12", ":", "the", "star", "'", "s", ",", "ok", "."]
    assert tok.words[:3] == ["<pad>", "<unk>", "<eos>"]
    assert tok.words[3:] == sorted(tok.words[3:])  # reproducible order
    ids = tok.ids("Ref 1[the purple star]")
    assert ids[-1] == tok.eos_id and ids[4] == tok.unk_id  # "purple" is not in the vocabulary
    assert [tok.words[i] for i in ids] == ["ref", "1", "[", "the", "<unk>", "star", "]", "<eos>"]
    assert tok.ids("") == [tok.eos_id]
    assert WordTokenizer.from_texts(CAPTIONS, extra_words=["Purple"]).ids("purple")[0] != tok.unk_id


def test_vocab_json_round_trip_and_errors(tmp_path):
    tok = WordTokenizer.from_texts(CAPTIONS)
    tok.save(tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text())["words"] == tok.words
    assert WordTokenizer.load(tmp_path / "v.json").words == tok.words
    with pytest.raises(CheckpointError, match=r"vocabulary file not found: .*nope\.json.*<weights name>\.vocab\.json"):
        WordTokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"words": [1, 2]}')
    with pytest.raises(CheckpointError, match=r"bad\.json is not a valid vocabulary file"):
        WordTokenizer.load(tmp_path / "bad.json")


def test_features_are_zero_padded_and_batch_independent():
    enc = _encoder().eval()
    assert isinstance(enc, TextEncoder)
    prompts = ["Ref 1[the blue star] spins", "a red circle bounces slowly while the camera pans right", ""]
    with torch.no_grad():
        out = enc.encode(prompts)
        alone = enc.encode(prompts[:1])
    assert out.shape == (3, 16, 32) and out.dtype == torch.float32
    lengths = enc.tokenize(prompts)[1].sum(1).tolist()
    assert lengths == [9, 11, 1]
    for i, n in enumerate(lengths):
        assert out[i, :n].abs().sum(-1).min() > 0 and torch.all(out[i, n:] == 0)
    assert torch.allclose(alone, out[:1], atol=1e-6)


def test_truncation_keeps_eos_and_gradients_flow():
    enc = _encoder(max_length=6)
    ids, mask = enc.tokenize([CAPTIONS[1]])
    assert ids.shape == (1, 6) and ids[0, -1] == enc.tokenizer.eos_id
    enc.encode([CAPTIONS[1], "star"]).pow(2).sum().backward()  # trained jointly with the DiT later
    assert enc.token_embed.weight.grad is not None and enc.token_embed.weight.grad.abs().sum() > 0
    assert enc.layers[0].qkv.weight.grad.abs().sum() > 0


def test_save_and_load_through_the_common_loader(tmp_path):
    enc = _encoder().eval()
    path = enc.save(tmp_path / "sprite_text.safetensors")
    assert vocab_path_for(path) == tmp_path / "sprite_text.vocab.json" and vocab_path_for(path).is_file()
    loaded = load_text_encoder(path)
    assert isinstance(loaded, SmallTextEncoder) and loaded.config == enc.config
    with torch.no_grad():
        assert torch.equal(loaded.encode(CAPTIONS), enc.encode(CAPTIONS))
    assert load_text_encoder(path, dtype=torch.bfloat16).token_embed.weight.dtype == torch.bfloat16
    # an explicit vocabulary path wins over the one beside the weights
    (tmp_path / "elsewhere").mkdir()
    vocab_path_for(path).rename(tmp_path / "elsewhere" / "words.json")
    with pytest.raises(CheckpointError, match=r"vocabulary file not found: .*sprite_text\.vocab\.json"):
        load_text_encoder(path)
    assert load_text_encoder(path, tokenizer=tmp_path / "elsewhere" / "words.json").tokenizer.words == enc.tokenizer.words


def test_vocabulary_larger_than_the_model_is_refused(tmp_path):
    enc = _encoder()
    path = enc.save(tmp_path / "m.safetensors")
    WordTokenizer(enc.tokenizer.words + [f"w{i}" for i in range(10)]).save(vocab_path_for(path))
    with pytest.raises(CheckpointError, match=r"has \d+ words but .*m\.safetensors was built for \d+"):
        load_text_encoder(path)


def test_prompt_list_errors():
    from libragen_core.errors import InputError

    enc = _encoder()
    with pytest.raises(InputError, match="non-empty list of prompts"):
        enc.encode([])
    with pytest.raises(InputError, match="prompt 2 is a int, not text"):
        enc.encode(["a star", 3])
    assert enc.encode("a star").shape == (1, 16, 32)  # a single string is one prompt
