"""`libragen lora inspect|merge|convert` end to end on real files."""
from __future__ import annotations

import torch

from libragen_core.cli import main
from libragen_core.io.safetensors_file import read_header
from libragen_core.lora import LoraFactors, LoraWeights, load_lora, merged_delta, save_lora

LAYERS = {"blocks.0.self_attn.q": (16, 16), "blocks.0.ffn.0": (24, 16)}


def random_lora(rank, seed):
    g = torch.Generator().manual_seed(seed)
    return LoraWeights({n: LoraFactors(torch.randn(rank, i, generator=g), torch.randn(o, rank, generator=g), 2.0 * rank)
                        for n, (o, i) in LAYERS.items()})


def test_merge_inspect_convert(tmp_path, capsys):
    a, b = random_lora(2, 1), random_lora(3, 2)
    fa = save_lora(a, tmp_path / "in_pair.safetensors")
    fb = save_lora(b, tmp_path / "cross_pair.safetensors", naming="kohya")
    out = tmp_path / "merged.safetensors"
    assert main(["lora", "merge", str(fb), str(fa), "-w", "0.3", "0.7", "--method", "concat", "-o", str(out)]) == 0
    merged = load_lora(out)
    for n in LAYERS:
        torch.testing.assert_close(merged.delta(n), merged_delta([b, a], [0.3, 0.7], n), atol=1e-5, rtol=1e-5)
    _, meta = read_header(out)
    assert meta["method"] == "merge:concat" and meta["merge_sources"] == "cross_pair.safetensors, in_pair.safetensors"
    assert "/" not in meta["merge_sources"]

    svd = tmp_path / "svd.safetensors"
    assert main(["lora", "merge", str(fa), str(fb), "--method", "svd", "--rank", "2", "-o", str(svd)]) == 0
    assert "relative Frobenius error" in capsys.readouterr().out
    assert load_lora(svd).ranks == {n: 2 for n in LAYERS}

    assert main(["lora", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ranks: [5]" in text and "method: merge:concat" in text

    conv = tmp_path / "diffusers.safetensors"
    assert main(["lora", "convert", str(fa), "--naming", "diffusers", "-o", str(conv)]) == 0
    header, _ = read_header(conv)
    assert "transformer.blocks.0.attn1.to_q.lora_A.weight" in header
    torch.testing.assert_close(load_lora(conv).delta("blocks.0.ffn.0"), a.delta("blocks.0.ffn.0"))


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    fa = save_lora(random_lora(2, 1), tmp_path / "a.safetensors")
    assert main(["lora", "merge", str(fa), "--method", "svd", "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "needs a target rank" in capsys.readouterr().err
    assert main(["lora", "inspect", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
