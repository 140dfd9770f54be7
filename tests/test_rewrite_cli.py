"""`libragen rewrite` and `libragen generate --rewrite`."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from libragen_core.cli import main
from libragen_core.rewrite import StyleGuide, spriteworld_style_guide
from libragen_core.spriteworld.captions import caption_facts

STAR = Path(__file__).resolve().parents[1] / "examples" / "refs" / "blue_striped_star.png"


def test_rewrite_prints_the_prompt_and_warnings_go_to_stderr(capsys):
    assert main(["rewrite", "--label", "the blue star", "--prompt", "I want the star to weave to the right",
                 "--style-guide", "spriteworld"]) == 0
    out, err = capsys.readouterr()
    assert out == "Ref 1: a blue star.\nVideo: Ref 1[the blue star] zig-zags to the right on a plain light grey " \
                  "background.\n"
    assert "warning: no background named" in err


def test_rewrite_json_out_file_and_unlabelled_references(tmp_path, capsys):
    target = tmp_path / "r.json"
    assert main(["rewrite", "--refs", "2", "--label", "the dog", "--prompt", "the dog sniffs the cat", "--json",
                 "--out", str(target), "--style-guide", "libragen"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert json.loads(target.read_text()) == shown
    assert shown["ref_lines"] == ["Ref 1: a dog.", "Ref 2: a cat."] and shown["backend_used"] == "offline"
    assert shown["video_line"] == "Video: Ref 1[the dog] sniffs Ref 2[the cat]." and shown["style"] == "libragen"


def test_rewrite_style_guides_and_auto_from_the_model_files(tmp_path, capsys):
    import torch

    from libragen_core.io.safetensors_file import save_state_dict
    from libragen_core.lora import save_lora
    from libragen_core.lora.weights import LoraFactors, LoraWeights

    args = ["rewrite", "--label", "the woman in a yellow raincoat", "--label", "the small white dog", "--prompt",
            "she walks her dog along the pier at sunset, camera follows them"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out == "A woman in a yellow raincoat walks her small white dog along the pier at sunset. The camera " \
                  "follows them.\n"
    assert "style phantom (auto: " in err
    assert main([*args, "--style-guide", "libragen"]) == 0
    assert capsys.readouterr().out.endswith("Video: Ref 1[the woman in a yellow raincoat] walks Ref 2[her dog] "
                                            "along the pier at sunset; the camera follows them.\n")
    # auto: a DiT file whose metadata names the guide, a LoRA saved by training/ (libragen-sprite base)
    dit = save_state_dict({"head.head.weight": torch.zeros(4, 4)}, tmp_path / "my_dit.safetensors",
                          metadata={"libragen.style_guide": "libragen"})
    assert main([*args, "--dit", str(dit)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Ref 1: a woman in a yellow raincoat.") and "the diffusion model file says so" in err
    lora = save_lora(LoraWeights({"blocks.0.ffn.0": LoraFactors(torch.zeros(2, 8), torch.zeros(8, 2), 2.0)}),
                     tmp_path / "sft.safetensors", method="sft-in-pair", base_model="libragen-sprite")
    assert main(["rewrite", "--label", "the blue star", "--prompt", "the star sinks", "--dit", str(dit),
                 "--lora", str(lora)]) == 0
    out, err = capsys.readouterr()
    assert caption_facts(out)["motions"] == {0: "move_down"} and "style spriteworld (auto: a LoRA" in err


def test_rewrite_errors_are_named(capsys, tmp_path):
    assert main(["rewrite", "--label", "a", "--prompt", "  "]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["rewrite", "--refs", "1", "--label", "a", "--label", "b", "--prompt", "x"]) == 2
    assert "2 labels were given for 1 reference images" in capsys.readouterr().err
    assert main(["rewrite", "--label", "a", "--prompt", "x", "--backend", "http"]) == 2
    assert "endpoint URL" in capsys.readouterr().err
    assert main(["rewrite", "--label", "a", "--prompt", "x", "--backend", "transformers", "--llm-dir",
                 str(tmp_path)]) == 2
    assert "not a transformers model folder" in capsys.readouterr().err


def test_export_style_guide_and_model_dir_guide(tmp_path, capsys):
    path = tmp_path / "style_guide.json"
    assert main(["rewrite", "--export-style-guide", str(path), "--style-guide", "spriteworld"]) == 0
    assert StyleGuide.load(path).hash == spriteworld_style_guide().hash
    capsys.readouterr()
    (tmp_path / "model.json").write_text(json.dumps({"name": "my-model", "dit": "d", "vae": "v",
                                                      "text_encoder": "t", "style_guide": "style_guide.json"}))
    assert main(["rewrite", "--model-dir", str(tmp_path), "--label", "the blue star", "--prompt",
                 "please have the star hop in place"]) == 0
    assert caption_facts(capsys.readouterr().out)["motions"] == {0: "bounce"}


def test_generate_with_rewrite_uses_the_rewritten_prompt(tmp_path, capsys):
    out = tmp_path / "a.gif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["generate", "--ref", str(STAR), "--label", "the blue star", "--prompt",
                     "can you make it so the star spins clockwise?", "--rewrite", "--steps", "1", "--frames", "5",
                     "--out", str(out)])
    assert code == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "prompt (offline):\nRef 1: a blue star.\nVideo: Ref 1[the blue star] spins clockwise on a plain light " \
           "grey background." in text
