"""LoRA Merge: up to 4 LoRA files merged (linear/concat, svd, ties, dare) into one patch on a model.

The input model is left as it was: the output is a new LIBRAGEN_MODEL value sharing the loaded
modules and carrying the merged LoRA as a patch that is folded in only while that value samples
(runtime.patched). The merge can also be saved into models/loras in ComfyUI's native Wan LoRA
format, so core LoraLoaderModelOnly loads it too.
"""
from __future__ import annotations

import re

from libragen_core.errors import CheckpointError, InputError
from libragen_core.lora import (
    MERGE_STAMP,
    check_lora_fits,
    load_lora,
    merge_loras,
    save_lora,
    written_by_merge,
)

from . import adapter
from .types import MODEL, LoraPatch
from .validation import check_ranges, first_error

NONE = "None"
SLOTS = range(1, 5)
MERGE_METHODS = ("linear", "concat", "svd", "ties", "dare")
_SAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def sanitize_save_name(name: str) -> str | None:
    """'my merge' -> 'my merge.safetensors'; None for an empty name. Only a plain file name inside
    models/loras is allowed: separators and other odd characters become '_'."""
    name = (name or "").strip()
    if not name:
        return None
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    name = re.sub(r"_+", "_", re.sub(r"\.{2,}", "_", _SAFE.sub("_", name))).strip(" ._")
    if not name:
        raise InputError("save_name has no usable characters; use letters, digits, '-', '_' or '.'.")
    return name[:120] + ".safetensors"


class LibraGenLoraMerge:
    DESCRIPTION = ("Merges up to four LoRAs for the model with weights (e.g. 0.5 cross-pair + 0.5 in-pair) and "
                   "applies the result to a copy of the model; the input model is unchanged. Optionally saves "
                   "the merged LoRA into models/loras in ComfyUI's Wan LoRA format.")
    CATEGORY = "LibraGen/lora"
    RETURN_TYPES = (MODEL, "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = ("The model with the merged LoRA applied while it samples.",
                       "What was merged: method, layers, approximation error, saved file.")
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls):
        files = [NONE, *adapter.list_models("loras")]
        required = {"model": (MODEL, {"tooltip": "The model to apply the merged LoRA to (it is not modified)."})}
        for k in SLOTS:
            required[f"lora_{k}"] = (files, {"default": NONE,
                                             "tooltip": f"LoRA file {k} from models/loras (None = unused)."})
            required[f"weight_{k}"] = ("FLOAT", {"default": 1.0 if k == 1 else 0.5, "min": -10.0, "max": 10.0,
                                                 "step": 0.05, "tooltip": f"Merge weight of LoRA {k}."})
        required.update({
            "method": (list(MERGE_METHODS), {
                "default": "linear",
                "tooltip": "linear/concat: exact weighted sum (factors stacked, rank = sum of ranks); svd: exact sum "
                           "truncated to rank; ties: trim, elect signs, average; dare: random drop and rescale."}),
            "rank": ("INT", {"default": 0, "min": 0, "max": 4096,
                             "tooltip": "Target rank: needed by svd; optional for ties/dare (0 = keep full "
                                        "weight diffs); must be 0 for linear/concat."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                   "tooltip": "Strength of the merged LoRA on the model (W += strength * dW)."}),
            "ties_density": ("FLOAT", {"default": 0.2, "min": 0.01, "max": 1.0, "step": 0.01,
                                       "tooltip": "ties: fraction of each LoRA's largest entries kept."}),
            "dare_drop_rate": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01,
                                         "tooltip": "dare: probability of dropping each entry (seeded, so the "
                                                    "merge is reproducible)."}),
            "save_name": ("STRING", {"default": "",
                                     "tooltip": "If set, also save the merged LoRA as models/loras/<name>.safetensors "
                                                "(ComfyUI Wan format). An existing file of that name is replaced only "
                                                "if an earlier LoRA Merge wrote it, or with overwrite on."}),
        })
        optional = {"overwrite": ("BOOLEAN", {
            "default": False, "tooltip": "Let save_name replace an existing LoRA that LoRA Merge did not write "
                                         "(a downloaded or trained one). Off: such a name is refused."})}
        return {"required": required, "optional": optional}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_1=None, lora_2=None, lora_3=None, lora_4=None, method=None, rank=None,
                        ties_density=None, dare_drop_rate=None, save_name=None, overwrite=False):
        chosen = [x for x in (lora_1, lora_2, lora_3, lora_4) if x is not None]
        problems = [check_ranges(cls, lora_1=lora_1, lora_2=lora_2, lora_3=lora_3, lora_4=lora_4, method=method,
                                 rank=rank, ties_density=ties_density, dare_drop_rate=dare_drop_rate)]
        if chosen and all(x == NONE for x in chosen) and len(chosen) == 4:
            problems.append("no LoRA is selected; pick a file in lora_1 (or bypass this node).")
        if method == "svd" and rank == 0:
            problems.append("the svd method needs a target rank; set rank (e.g. 16).")
        if method in ("linear", "concat") and isinstance(rank, int) and rank > 0:
            problems.append(f"{method} is exact and keeps the summed rank; set rank 0, or use svd to truncate.")
        if isinstance(save_name, str):
            try:
                target = sanitize_save_name(save_name)
            except InputError as e:
                problems.append(str(e))
            else:
                if target is not None and target in chosen:
                    problems.append(f"save_name {save_name!r} would overwrite the input LoRA {target}; "
                                    "choose another name.")
                # overwrite left out of the workflow: False, as when it runs; linked: None, checked when it runs
                elif target is not None and overwrite is not None:
                    try:
                        cls._save_path(save_name, bool(overwrite))
                    except InputError as e:
                        problems.append(str(e))
                    except CheckpointError:
                        pass  # no loras folder configured: the merge names that when it runs
        return first_error(problems)

    @staticmethod
    def _save_path(save_name: str, overwrite: bool):
        """(models/loras path to save to, or None) after checking that saving there loses nothing."""
        target = sanitize_save_name(save_name)
        if target is None:
            return None
        folder = adapter.save_folder("loras")
        path = (folder / target).resolve()
        if path.parent != folder.resolve():
            raise InputError(f"save_name {save_name!r} leaves the loras folder; use a plain file name.")
        if path.exists() and not overwrite and not written_by_merge(path):
            raise InputError(
                f"save_name {save_name!r}: {adapter.client_path(path)} already exists and was not written by LoRA "
                f"Merge (its metadata has no {MERGE_STAMP!r} entry); choose another save_name, or turn on "
                "overwrite to replace it.")
        return path

    @classmethod
    def IS_CHANGED(cls, **kw):
        return repr([adapter.model_mtime("loras", kw[f"lora_{k}"]) for k in SLOTS if kw.get(f"lora_{k}") != NONE])

    def merge(self, model, method="linear", rank=0, strength=1.0, ties_density=0.2, dare_drop_rate=0.5,
              save_name="", overwrite=False, **slots):
        chosen = [(slots[f"lora_{k}"], float(slots.get(f"weight_{k}", 1.0))) for k in SLOTS
                  if slots.get(f"lora_{k}", NONE) != NONE]
        if not chosen:
            raise InputError("no LoRA is selected; pick a file in lora_1 (or bypass this node).")
        path = self._save_path(save_name, overwrite)  # before the merge: a refused name costs nothing
        loras = [load_lora(adapter.model_path("loras", name)) for name, _ in chosen]
        for (name, _), lora in zip(chosen, loras):
            try:
                check_lora_fits(lora, model.bundle.dit)
            except CheckpointError as e:
                raise CheckpointError(f"{name}: {e}") from None
        result = merge_loras(loras, [w for _, w in chosen], method, rank=rank or None, density=ties_density,
                             drop_rate=dare_drop_rate)
        label = "+".join(f"{w:g}*{name}" for name, w in chosen)
        if len(chosen) > 1 or method != "linear":
            label = f"{method}({label})"
        lines = [f"merged {len(chosen)} LoRA(s) with {method}: {len(result.lora)} layers",
                 f"relative error vs the exact {method} merge: {result.total_rel_error:.4g} "
                 f"(max per layer {result.max_rel_error:.4g})"]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_lora(result.lora, path, method=f"merge:{method}",
                      metadata={MERGE_STAMP: label, "libragen_strength_hint": f"{strength:g}"})
            lines.append(f"saved to {adapter.client_path(path)}")
        return (model.with_patches(LoraPatch(result.lora, float(strength), label)), "\n".join(lines))
