"""A local causal LM (a folder with config + weights + tokenizer, e.g. models/LLM/Qwen2.5-1.5B-Instruct)
through transformers: local_files_only, our system prompt, the tokenizer's chat template when it
has one, greedy decoding. The answer must parse as the LibraGen format (one Ref line per subject,
all bound); otherwise `rewrite()` falls back to the offline backend with a warning."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import CheckpointError
from .base import BackendError, Rewrite
from .prompting import read_answer, system_prompt, user_message
from .style_guide import StyleGuide

NAME = "transformers"
_LOADED: dict[tuple, tuple] = {}
_LOCK = threading.Lock()


def _signature(folder: Path) -> tuple:
    # reload when any file in the folder changes
    return (str(folder.resolve()),) + tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                                                   for p in folder.iterdir() if p.is_file()))


def load_local_lm(folder, device: str = "cpu"):
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a transformers model folder (no config.json); put a causal LM "
                              "there (e.g. save_pretrained / a downloaded Hugging Face snapshot).")
    key = (_signature(folder), str(device))
    with _LOCK:
        if key not in _LOADED:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True)
            except (OSError, ValueError, KeyError) as e:
                raise CheckpointError(f"cannot load the local language model in {folder}: {e}") from e
            _LOADED.clear()  # one LLM in memory at a time
            _LOADED[key] = (tok, model.to(device).eval())
        return _LOADED[key]


class TransformersBackend:
    name = NAME

    def __init__(self, model_dir, device: str = "cpu", max_new_tokens: int = 160):
        self.folder = Path(model_dir)
        self.device, self.max_new_tokens = device, int(max_new_tokens)
        self.model = self.folder.name

    def _prompt_ids(self, tok, messages):
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
        text = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages) + "\n\nASSISTANT: "
        return tok(text, return_tensors="pt")

    def generate_text(self, messages) -> str:
        import torch

        tok, model = load_local_lm(self.folder, self.device)
        enc = self._prompt_ids(tok, messages)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                 pad_token_id=pad)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def rewrite(self, labels: Sequence[str], user_prompt: str, style_guide: StyleGuide,
                ref_lines: Sequence[str]) -> Rewrite:
        messages = [{"role": "system", "content": system_prompt(style_guide)},
                    {"role": "user", "content": user_message(labels, ref_lines, user_prompt)}]
        try:
            text = self.generate_text(messages)
        except CheckpointError:
            raise
        except (RuntimeError, ValueError, IndexError) as e:
            raise BackendError(f"the local language model in {self.folder} failed to generate: {e}") from e
        return read_answer(text, ref_lines, style_guide, NAME)
