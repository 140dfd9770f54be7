"""umT5 loading from real safetensors files in every layout users have, with a tiny random model.

The tokenizer is a real sentencepiece model trained here on a few captions (T5's ids: pad 0,
eos 1, unk 2), embedded in the file the way ComfyUI's umt5_xxl files carry theirs.
"""
import io
import struct

import pytest
import torch
from safetensors.torch import save_file

from libragen_core.errors import CheckpointError
from libragen_core.models.text_encoders import TextEncoder, UMT5TextEncoder, load_text_encoder
from libragen_core.models.text_umt5 import save_umt5_for_tests

sentencepiece = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

CAPTIONS = [
    "Ref 1: a blue star with white stripes.",
    "Ref 2: a small red circle with a dotted pattern.",
    "Video: Ref 1[the star] spins slowly while Ref 2[the circle] bounces to the left.",
    "the green square moves across a sandy background as the camera pans right",
    "two sprites circle each other on a dark blue background",
]
PROMPTS = ["a red circle", "Ref 1[the blue star] spins while the camera pans right", ""]


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS * 10), model_writer=buf, vocab_size=90, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny(spiece):
    torch.manual_seed(0)
    cfg = transformers.UMT5Config(
        vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, use_cache=False, dropout_rate=0.0,
    )
    model = transformers.UMT5EncoderModel(cfg).eval()
    with torch.no_grad():  # HF's init leaves layer norms at 1 and biases at 0; perturb so a wrong mapping shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _reference(model, enc: UMT5TextEncoder, prompts, length=512):
    """Wan's way: pad every prompt to the full length, run with the mask, keep real tokens."""
    ids, mask = enc.tokenize(prompts)
    full_ids = torch.zeros((len(prompts), length), dtype=torch.long)
    full_mask = torch.zeros_like(full_ids)
    full_ids[:, : ids.shape[1]] = ids
    full_mask[:, : ids.shape[1]] = mask
    with torch.no_grad():
        out = model(input_ids=full_ids, attention_mask=full_mask).last_hidden_state
    return out * full_mask[..., None]


def test_comfyui_layout_with_embedded_tokenizer(tmp_path, tiny, spiece):
    path = save_umt5_for_tests(tiny, tmp_path / "umt5_tiny.safetensors", spiece_proto=spiece)
    enc = load_text_encoder(path)
    assert isinstance(enc, TextEncoder) and isinstance(enc, UMT5TextEncoder)
    assert (enc.text_dim, enc.max_length) == (32, 512)
    assert enc.model.config.num_layers == 3 and enc.model.config.num_heads == 4 and enc.model.config.d_ff == 48
    out = enc.encode(PROMPTS)
    assert out.shape == (3, 512, 32) and out.dtype == torch.float32
    ids, mask = enc.tokenize(PROMPTS)
    lengths = mask.sum(1)
    assert ids[0, lengths[0] - 1] == 1 and lengths[2] == 1  # ends with </s>; "" is just </s>
    for i, n in enumerate(lengths.tolist()):
        assert out[i, :n].abs().sum(-1).min() > 0, "every real token has features"
        assert torch.all(out[i, n:] == 0), "zeros after the real tokens"
    assert torch.allclose(out, _reference(tiny, enc, PROMPTS), atol=1e-5)
    # a prompt's features do not depend on what else is in the batch, beyond float rounding: the batch
    # runs to its longest prompt, so its matmuls have other shapes (transformers 5.25: 1.4e-6 apart)
    assert torch.allclose(enc.encode([PROMPTS[0]]), out[:1], atol=1e-5)
    assert torch.equal(enc.tokenize(["a   red\n circle"])[0], enc.tokenize(["a red circle"])[0])


def test_fp8_scaled_file_is_dequantized(tmp_path, tiny, spiece):
    path = save_umt5_for_tests(tiny, tmp_path / "umt5_fp8_e4m3fn_scaled.safetensors", spiece_proto=spiece, fp8=True)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert "scaled_fp8" in f.keys()
        key = "encoder.block.1.layer.1.DenseReluDense.wo.weight"
        w8, scale = f.get_tensor(key), f.get_tensor(key.replace("weight", "scale_weight"))
    assert w8.dtype == torch.float8_e4m3fn
    enc = load_text_encoder(path)
    assert enc.dtype == torch.bfloat16  # fp8 is dequantized, by default to bf16
    loaded = enc.model.encoder.block[1].layer[1].DenseReluDense.wo.weight
    assert torch.equal(loaded, (w8.float() * scale).to(torch.bfloat16))
    enc32 = load_text_encoder(path, dtype=torch.float32)
    ref = _reference(tiny, enc32, PROMPTS)
    rel = (enc32.encode(PROMPTS) - ref).norm() / ref.norm()
    assert rel < 0.08, f"fp8 features drift too far from the full-precision model: {rel:.3f}"


def test_wan_release_layout_with_tokenizer_folder(tmp_path, tiny, spiece):
    path = save_umt5_for_tests(tiny, tmp_path / "models_t5_umt5-xxl-enc-bf16.safetensors", layout="wan")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "token_embedding.weight" in keys and "blocks.2.ffn.gate.0.weight" in keys and "spiece_model" not in keys
    with pytest.raises(CheckpointError, match=r"no tokenizer for .*models_t5_umt5-xxl-enc-bf16\.safetensors.*google/umt5-xxl"):
        load_text_encoder(path)
    (tmp_path / "google" / "umt5-xxl").mkdir(parents=True)
    (tmp_path / "google" / "umt5-xxl" / "spiece.model").write_bytes(spiece)
    enc = load_text_encoder(path)  # found beside the weights, as in the Wan release folder
    hf = load_text_encoder(save_umt5_for_tests(tiny, tmp_path / "hf.safetensors", spiece_proto=spiece))
    assert torch.allclose(enc.encode(PROMPTS), hf.encode(PROMPTS), atol=1e-6)


def _tokenizer_json(spiece: bytes, path):
    """A T5-style tokenizer.json built from the sentencepiece model (Unigram + Metaspace + </s>)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    sp = sentencepiece.SentencePieceProcessor(model_proto=spiece)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tk = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tk.save(str(path))
    return path


def test_explicit_tokenizer_paths_agree(tmp_path, tiny, spiece):
    path = save_umt5_for_tests(tiny, tmp_path / "bare.safetensors")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "spiece.model").write_bytes(spiece)
    json_path = _tokenizer_json(spiece, tmp_path / "tokenizer_json_dir_tokenizer.json")
    by_model = load_text_encoder(path, tokenizer=tmp_path / "tok" / "spiece.model")
    by_folder = load_text_encoder(path, tokenizer=tmp_path / "tok")
    by_json = load_text_encoder(path, tokenizer=json_path)
    for p in CAPTIONS + PROMPTS:
        ids = by_model.tokenize([p])[0]
        assert torch.equal(ids, by_folder.tokenize([p])[0]) and torch.equal(ids, by_json.tokenize([p])[0]), p
    assert torch.allclose(by_json.encode(PROMPTS), by_model.encode(PROMPTS))


def test_truncation_keeps_eos(tmp_path, tiny, spiece):
    path = save_umt5_for_tests(tiny, tmp_path / "t.safetensors", spiece_proto=spiece)
    enc = load_text_encoder(path, max_length=8)
    ids, mask = enc.tokenize([" ".join(CAPTIONS)])
    assert ids.shape == (1, 8) and mask.all() and ids[0, -1] == 1
    assert enc.encode([" ".join(CAPTIONS), "a"]).shape == (2, 8, 32)


def test_fp16_file_defaults_to_bf16_on_cpu(tmp_path, tiny, spiece):
    half = transformers.UMT5EncoderModel(tiny.config)
    half.load_state_dict(tiny.state_dict())
    path = save_umt5_for_tests(half.half(), tmp_path / "umt5_xxl_fp16.safetensors", spiece_proto=spiece)
    assert load_text_encoder(path).dtype == torch.bfloat16
    assert load_text_encoder(path, dtype=torch.float32).dtype == torch.float32


def test_missing_files(tmp_path, tiny, spiece):
    with pytest.raises(CheckpointError, match=r"text encoder file not found: .*nope\.safetensors\. ComfyUI keeps text encoders in ComfyUI/models/text_encoders/"):
        load_text_encoder(tmp_path / "nope.safetensors")
    path = save_umt5_for_tests(tiny, tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match=r"tokenizer file not found: .*missing\.model\. Get the umT5 tokenizer"):
        load_text_encoder(path, tokenizer=tmp_path / "missing.model")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CheckpointError, match="has neither tokenizer.json nor spiece.model"):
        load_text_encoder(path, tokenizer=tmp_path / "emptydir")
    (tmp_path / "junk.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match=r"junk\.model is not a valid sentencepiece model"):
        load_text_encoder(path, tokenizer=tmp_path / "junk.model")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"bad\.json is not a valid tokenizer\.json"):
        load_text_encoder(path, tokenizer=tmp_path / "bad.json")


def test_incomplete_and_mismatched_files(tmp_path, tiny, spiece):
    sd = {k: v for k, v in tiny.state_dict().items() if k != "encoder.embed_tokens.weight"}
    del sd["encoder.block.1.layer.0.SelfAttention.k.weight"]
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"partial\.safetensors is an incomplete umT5 encoder: 1 weights are missing.*block\.1\.layer\.0\.SelfAttention\.k"):
        load_text_encoder(tmp_path / "partial.safetensors", tokenizer=None)
    small = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=16, d_model=8, d_kv=2, d_ff=8, num_layers=1, num_heads=4, feed_forward_proj="gated-gelu"))
    path = save_umt5_for_tests(small, tmp_path / "v16.safetensors", spiece_proto=spiece)
    with pytest.raises(CheckpointError, match=r"tokenizer .* has \d+ tokens but .*v16\.safetensors embeds only 16"):
        load_text_encoder(path)


def test_t5_v11_is_refused_with_a_reason(tmp_path):
    cfg = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                feed_forward_proj="gated-gelu")
    model = transformers.T5EncoderModel(cfg)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(sd, str(tmp_path / "t5xxl_fp16.safetensors"))
    with pytest.raises(CheckpointError, match="T5 v1.1 encoder .*like the t5xxl files of Flux and SD3.*not umT5"):
        load_text_encoder(tmp_path / "t5xxl_fp16.safetensors")


def test_dit_vae_and_unknown_files_are_named(tmp_path):
    d = 128  # one head of Wan's head_dim 128
    dit = {
        "patch_embedding.weight": torch.zeros(d, 16, 1, 2, 2), "head.modulation": torch.zeros(1, 2, d),
        "head.head.weight": torch.zeros(64, d), "text_embedding.0.weight": torch.zeros(d, 4096),
        "time_embedding.0.weight": torch.zeros(d, 256), "blocks.0.ffn.0.weight": torch.zeros(2 * d, d),
        "blocks.0.self_attn.q.weight": torch.zeros(d, d),
    }
    save_file({f"model.diffusion_model.{k}": v for k, v in dit.items()}, str(tmp_path / "wan2.1_t2v.safetensors"))
    with pytest.raises(CheckpointError, match=r"wan2\.1_t2v\.safetensors is not a text encoder: it looks like a Wan2\.1 text-to-video DiT"):
        load_text_encoder(tmp_path / "wan2.1_t2v.safetensors")
    vae = {"encoder.downsamples.0.residual.0.gamma": torch.ones(4), "decoder.upsamples.0.residual.0.gamma": torch.ones(4),
           "encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3)}
    save_file(vae, str(tmp_path / "wan_2.1_vae.safetensors"))
    with pytest.raises(CheckpointError, match=r"wan_2\.1_vae\.safetensors is not a text encoder: it looks like a Wan video VAE"):
        load_text_encoder(tmp_path / "wan_2.1_vae.safetensors")
    save_file({"foo.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match=r"other\.safetensors is not a text encoder: .*foo\.weight"):
        load_text_encoder(tmp_path / "other.safetensors")
    (tmp_path / "umt5.pth").write_bytes(struct.pack("<Q", 2) + b"{}")
    with pytest.raises(CheckpointError, match="pickle-based checkpoint"):
        load_text_encoder(tmp_path / "umt5.pth")


def test_real_umt5_xxl_shapes_build_the_published_model_on_meta():
    """The shapes of ComfyUI's umt5_xxl files give umT5-XXL's published config and exactly its weights."""
    from pathlib import Path

    from libragen_core.models.text_umt5 import UMT5_XXL, config_from_shapes

    d, f, v = 4096, 10240, 256384
    shapes = {"shared.weight": [v, d], "encoder.final_layer_norm.weight": [d]}
    for n in range(24):
        b = f"encoder.block.{n}.layer."
        shapes.update({f"{b}0.SelfAttention.{x}.weight": [d, d] for x in "qkvo"})
        shapes.update({f"{b}0.SelfAttention.relative_attention_bias.weight": [32, 64], f"{b}0.layer_norm.weight": [d],
                       f"{b}1.DenseReluDense.wi_0.weight": [f, d], f"{b}1.DenseReluDense.wi_1.weight": [f, d],
                       f"{b}1.DenseReluDense.wo.weight": [d, f], f"{b}1.layer_norm.weight": [d]})
    args = config_from_shapes(Path("umt5_xxl_fp16.safetensors"), shapes)
    assert args == UMT5_XXL
    with torch.device("meta"):
        model = transformers.UMT5EncoderModel(transformers.UMT5Config(**args, feed_forward_proj="gated-gelu",
                                                                      is_encoder_decoder=False, use_cache=False))
    built = {k: list(t.shape) for k, t in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    assert built == shapes
    assert 5.6e9 < sum(p.numel() for p in model.parameters()) < 5.8e9  # umT5-XXL's encoder: ~5.7 B


def test_prefixed_keys_load(tmp_path, tiny, spiece):
    """Text encoders saved out of a bundle keep a prefix (e.g. ComfyUI's CLIPSave): same features."""
    from safetensors.torch import load_file

    plain = save_umt5_for_tests(tiny, tmp_path / "plain.safetensors", spiece_proto=spiece)
    sd = load_file(str(plain))
    save_file({f"text_encoders.umt5xxl.{k}": v for k, v in sd.items()}, str(tmp_path / "prefixed.safetensors"))
    a, b = load_text_encoder(plain), load_text_encoder(tmp_path / "prefixed.safetensors")
    assert torch.equal(a.encode(PROMPTS), b.encode(PROMPTS))


def test_small_tokenizer_for_a_full_vocabulary_is_refused(tmp_path, spiece):
    """A 256k-row umT5 table with a much smaller tokenizer (e.g. T5's 32k) must not load silently."""
    cfg = transformers.UMT5Config(vocab_size=256384, d_model=8, d_kv=2, d_ff=8, num_layers=1, num_heads=4,
                                  feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    path = save_umt5_for_tests(transformers.UMT5EncoderModel(cfg), tmp_path / "wide.safetensors", spiece_proto=spiece)
    with pytest.raises(CheckpointError, match=r"has \d+ tokens but .*wide\.safetensors is a umT5 model with 256384; it is another model's tokenizer"):
        load_text_encoder(path)
