"""Our umT5 encoder against ComfyUI's own Wan text path on the same tiny file.

ComfyUI side: its UMT5XXlTokenizer fed the sentencepiece model embedded in the file (exactly how
it reads umt5_xxl_*.safetensors) and its T5 with the umT5 options Wan uses (attention masks,
padded positions zeroed), built from a config with the tiny file's sizes. Both sides must give
the same token ids and the same [1, 512, D] features.
"""
from __future__ import annotations

import io
import json

import pytest
import torch

from libragen_core.models.text_encoders import load_text_encoder
from libragen_core.models.text_umt5 import save_umt5_for_tests

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~25 s, mostly ComfyUI's import

PROMPTS = [
    "Ref 1[the star] spins slowly",
    "Video: Ref 1[the blue star] bounces while Ref 2[the circle] moves to the left, the camera pans right.",
    "a",
]

COMFY_SIDE = r"""
import json, sys
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
from comfy import sd1_clip
import comfy.text_encoders.t5
import comfy.text_encoders.wan as wan
from safetensors.torch import load_file, save_file

weights, cfg_path, prompts_json, out_path = sys.argv[1:5]
sd = load_file(weights)
spiece = sd.pop("spiece_model")
model = sd1_clip.SDClipModel(device="cpu", layer="last", textmodel_json_config=cfg_path, dtype=torch.float32,
                             special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                             enable_attention_masks=True, zero_out_masked=True)
missing, unexpected = model.load_sd(sd)
assert not missing and not unexpected, (missing, unexpected)
tok = wan.UMT5XXlTokenizer(tokenizer_data={"spiece_model": spiece})
out = {}
for i, p in enumerate(json.loads(prompts_json)):
    tokens = tok.tokenize_with_weights(p)
    out[f"{i}.ids"] = torch.tensor([t for t, _ in tokens[0]])
    out[f"{i}.cond"] = model.encode_token_weights(tokens)[0].contiguous()
save_file(out, out_path)
"""


def test_features_match_comfyui(comfyui, tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(PROMPTS * 10), model_writer=buf, vocab_size=60, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    torch.manual_seed(0)
    cfg = transformers.UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
                                  feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    model = transformers.UMT5EncoderModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    weights = save_umt5_for_tests(model, tmp_path / "umt5_tiny.safetensors", spiece_proto=buf.getvalue())
    comfy_cfg = dict(d_ff=48, d_kv=8, d_model=32, num_heads=4, num_layers=3, vocab_size=64, model_type="umt5",
                     dense_act_fn="gelu_pytorch_tanh", is_gated_act=True, layer_norm_epsilon=1e-6)
    (tmp_path / "cfg.json").write_text(json.dumps(comfy_cfg))
    comfyui.run(COMFY_SIDE, str(weights), str(tmp_path / "cfg.json"), json.dumps(PROMPTS), str(tmp_path / "out.safetensors"))
    theirs = load_file(str(tmp_path / "out.safetensors"))

    enc = load_text_encoder(weights, dtype=torch.float32)
    for i, p in enumerate(PROMPTS):
        ids, mask = enc.tokenize([p])
        n = int(mask.sum())
        assert theirs[f"{i}.ids"][:n].tolist() == ids[0, :n].tolist(), p
        assert torch.all(theirs[f"{i}.ids"][n:] == 0)
        assert theirs[f"{i}.cond"][0, :n].abs().sum(-1).min() > 0
        ours = enc.encode([p])
        assert ours.shape == theirs[f"{i}.cond"].shape == (1, 512, 32)
        assert torch.allclose(ours, theirs[f"{i}.cond"].float(), atol=1e-4), (p, (ours - theirs[f"{i}.cond"]).abs().max())
