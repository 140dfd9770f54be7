"""Dynamic CFG Sampler: prompt + subjects -> video latents, with time-dependent guidance."""
from __future__ import annotations

from libragen_core.pipeline import encode_prompts, sample_latents, sampling_estimate
from libragen_core.sampling.guidance import PRESETS
from libragen_core.sampling.solvers import SOLVERS

from . import adapter, runtime
from .preview import fit_latent_rgb
from .types import CFG, MODEL, SUBJECTS
from .validation import check_ranges, first_error

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def latent_preview_map(model):
    """The model's latent -> RGB preview map, fitted once per loaded VAE."""
    if "preview" not in model.handles:
        with adapter.placed({"vae": model.bundle.vae}, model.handles, model.offload):
            model.handles["preview"] = fit_latent_rgb(model.bundle.vae)
    return model.handles["preview"]


class LibraGenSampler:
    DESCRIPTION = ("Samples a video with the subjects injected as extra latent frames and three-condition dynamic "
                   "CFG (full, reference-only, null). Outputs a Wan LATENT that core VAEDecode (Wan VAE) or "
                   "LibraGen Decode turns into frames.")
    CATEGORY = "LibraGen/sampling"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents in ComfyUI's Wan convention ({'samples': raw VAE latents [1, 16, "
                       "(frames-1)/4+1, height/8, width/8]}).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 16, "max": 4096, "step": 16}
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The LibraGen model (from Load LibraGen Model or LoRA Merge)."}),
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "What happens in the video. Name the subjects by their labels, "
                                                 "e.g. 'Ref 1[the fox] runs across the snow'."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                               "tooltip": "What to steer away from (used by the reference-only and "
                                                          "null guidance passes)."}),
                "frames": ("INT", {"default": 17, "min": 1, "max": 1025, "step": 4,
                                   "tooltip": "Number of video frames: 4k+1 (17, 33, 49, 81, ...)."}),
                "width": ("INT", {"default": 64, **size, "tooltip": "Video width in pixels (multiple of 16)."}),
                "height": ("INT", {"default": 64, **size, "tooltip": "Video height in pixels (multiple of 16)."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 500,
                                  "tooltip": "Sampling steps (20-50 typical; heun makes two model calls per step)."}),
                "shift": ("FLOAT", {"default": 3.0, "min": 0.01, "max": 100.0, "step": 0.1,
                                    "tooltip": "Flow-matching timestep shift (Wan: 5.0 at 480p, 3.0 for small "
                                               "videos); higher spends more steps at high noise."}),
                "solver": (list(SOLVERS), {"default": "unipc",
                                           "tooltip": "ODE solver for the flow-matching sampler."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Noise seed; the same seed gives the same video on any device."}),
                "cfg_preset": (list(PRESETS), {"default": "libragen",
                                               "tooltip": "Guidance schedule preset; a CFG Schedule node connected "
                                                          "to cfg overrides it."}),
            },
            "optional": {
                "subjects": (SUBJECTS, {"tooltip": "Encoded subject references (Subject Encode); leave unconnected "
                                                   "for plain text-to-video."}),
                "cfg": (CFG, {"tooltip": "A guidance schedule from LibraGen CFG Schedule; overrides cfg_preset."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, frames=None, width=None, height=None, steps=None, shift=None, solver=None,
                        seed=None, cfg_preset=None):
        problems = [check_ranges(cls, frames=frames, width=width, height=height, steps=steps, shift=shift,
                                 solver=solver, seed=seed, cfg_preset=cfg_preset)]
        if isinstance(frames, int) and (frames - 1) % 4:
            lower = frames - (frames - 1) % 4
            problems.append(f"frames {frames} is not 4k+1; use {lower} or {lower + 4}.")
        for name, v in (("width", width), ("height", height)):
            if isinstance(v, int) and v % 16:
                problems.append(f"{name} {v} is not a multiple of 16; use {v - v % 16 or 16} or {v - v % 16 + 16}.")
        return first_error(problems)

    def sample(self, model, prompt, negative_prompt, frames, width, height, steps, shift, solver, seed, cfg_preset,
               subjects=None, cfg=None, unique_id=None):
        bundle = model.bundle
        schedule = cfg if cfg is not None else cfg_preset
        preview = latent_preview_map(model) if adapter.previews_enabled() else None

        with adapter.placed({"text": bundle.text}, model.handles, model.offload):
            context = encode_prompts(bundle, [prompt]).cpu()
            negative = encode_prompts(bundle, [negative_prompt or ""]).cpu()

        progress = adapter.Progress(steps, node_id=unique_id, desc="LibraGen sampling")

        def on_step(step, total, sigma, x0):
            adapter.check_interrupted()
            progress.update(step, preview.image(x0) if preview is not None else None)

        refs = subjects.count if subjects is not None else 0
        # asks ComfyUI to make this much room beside the DiT; sample_latents checks it fits
        room = sampling_estimate(bundle, frames, height, width, refs, schedule, steps, shift).total
        try:
            with (adapter.placed({"dit": bundle.dit}, model.handles, model.offload, memory_required=room),
                  runtime.attention(model.attention), runtime.patched(model)):
                latents = sample_latents(bundle, subjects, context, negative, frames, height, width, steps, shift,
                                         solver, schedule, seed, callback=on_step)
        finally:
            progress.close()
        # ComfyUI's LATENT holds the VAE's own latents; its Wan21 format normalizes them on the way
        # into a model (process_latent_in), so core VAEDecode with a Wan VAE decodes this directly
        return ({"samples": bundle.vae.denormalize(latents.float()).cpu()},)
