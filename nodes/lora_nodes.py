"""LoRA Merge: up to 4 LoRA files merged (linear/concat, svd, ties, dare) into one patch on a model.

The input model is left as it was: the output is a new LIBRAGEN_MODEL value sharing the loaded
modules and carrying the merged LoRA as a patch that is folded in only while that value samples
(runtime.patched). The merge can also be saved into models/loras in ComfyUI's native Wan LoRA
format, so core LoraLoaderModelOnly loads it too. LoRA Merge (MODEL) runs the same merge on core's
MODEL and hands the result to core as weight patches on a clone (adapter.with_lora_patches).
"""
from __future__ import annotations

import re

from libragen_core.errors import CheckpointError, InputError
from libragen_core.lora import (
    MERGE_STAMP,
    check_lora_shapes,
    dense_merge_bytes,
    linear_layers,
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
        shapes = self.layer_shapes(model)
        loras = []
        for k in SLOTS:
            name = slots.get(f"lora_{k}", NONE)
            if name == NONE:
                continue
            try:
                loras.append(load_lora(adapter.model_path("loras", name)))
                check_lora_shapes(loras[-1], shapes)
            except CheckpointError as e:
                raise CheckpointError(f"lora_{k} ({name}): {e}") from None
        if method in ("ties", "dare") and not rank:
            need, free = dense_merge_bytes(loras), adapter.free_ram_bytes()
            if free is not None and need > 0.8 * free:
                raise InputError(f"{method} with rank 0 keeps a full weight diff per layer: {need / 2**30:.1f} GiB for "
                                 f"these LoRAs, more than the {free / 2**30:.1f} GiB of RAM free; set rank (e.g. 64) "
                                 "to get low-rank factors, or use linear / concat.")
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
        return (self.patched(model, result.lora, float(strength), label), "\n".join(lines))

    def layer_shapes(self, model) -> dict[str, tuple[int, ...]]:
        return {n: tuple(m.weight.shape) for n, m in linear_layers(model.bundle.dit).items()}

    def patched(self, model, lora, strength: float, label: str):
        return model.with_patches(LoraPatch(lora, strength, label))


class LibraGenLoraMergeNative(LibraGenLoraMerge):
    """The same merge on core's MODEL (UNETLoader's output): the merged LoRA becomes core weight
    patches on a clone of the ModelPatcher, so core's low-VRAM partial loading, its lazy patching
    and scaled-fp8 weights work as with core's own LoRA loader."""

    DESCRIPTION = ("Merges up to four LoRAs for a Wan2.1-layout model (e.g. 0.5 cross-pair + 0.5 in-pair) and "
                   "adds the result to a copy of a core MODEL as weight patches, as core's LoRA loader does; the "
                   "input MODEL is unchanged. Optionally saves the merged LoRA into models/loras.")
    RETURN_TYPES = ("MODEL", "STRING")
    OUTPUT_TOOLTIPS = ("The MODEL with the merged LoRA as weight patches (applied when ComfyUI loads it).",
                       LibraGenLoraMerge.OUTPUT_TOOLTIPS[1])

    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        types["required"]["model"] = ("MODEL", {
            "tooltip": "A core MODEL of a Wan2.1-layout DiT (Load Diffusion Model); it is not modified."})
        return types

    def layer_shapes(self, model) -> dict[str, tuple[int, ...]]:
        return adapter.core_layer_shapes(model, "LibraGen LoRA Merge (MODEL)")

    def patched(self, model, lora, strength: float, label: str):
        return adapter.with_lora_patches(model, lora, strength, "LibraGen LoRA Merge (MODEL)")
