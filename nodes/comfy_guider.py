"""The LibraGen guider as a subclass of ComfyUI's CFGGuider (beside adapter.py, the pack's other
ComfyUI import). Imported only by LibraGenDynamicCFGGuider when it runs inside ComfyUI.

Like core's Guider_DualCFG and Guider_PerpNeg it overrides predict_noise only: one
calc_cond_batch for every condition the step needs, then the mix. ComfyUI's model returns the
denoised prediction x0 = x - sigma v; the mix is affine with weights summing to 1, so mixing x0
equals mixing velocities (docs/method.md section 5).
"""
from __future__ import annotations

import logging

import comfy.model_base
import comfy.samplers

from libragen_core.errors import InputError
from libragen_core.sampling.guidance import CFGSchedule, pair_form
from libragen_core.sampling.schedules import step_progress

from .native_guider import CONDITIONS, check_conditions, check_video, same_conditioning
from .native_subjects import with_values

log = logging.getLogger("libragen.guider")


def _wan_model(model_patcher):
    base = model_patcher.model
    if not isinstance(base, comfy.model_base.WAN21):
        raise InputError(f"model is a {type(base).__name__} model; the LibraGen guider samples Wan2.1 / Phantom-Wan "
                         "models (UNETLoader with a Wan2.1 T2V or Phantom-Wan file).")
    return getattr(base.diffusion_model, "text_dim", None), base.latent_format.latent_channels


class DynamicCFGGuider(comfy.samplers.CFGGuider):
    def set_conds(self, positive, negative_text, negative_img_text):
        conds = {"positive": positive, "negative_text": negative_text, "negative_img_text": negative_img_text}
        text_dim, channels = _wan_model(self.model_patcher)
        self.reference_shape = check_conditions(conds, text_dim, channels)
        # one condition given twice (no references): ref-only and null merge into one pass
        self.distinct_negatives = not same_conditioning(negative_text, negative_img_text)
        self.evaluations, self._sigmas = [], None
        # both negatives are negative prompts to models that tell them apart (as DualCFGGuider marks its middle)
        self.inner_set_conds({"positive": positive,
                              "negative_text": with_values(negative_text, prompt_type="negative"),
                              "negative_img_text": with_values(negative_img_text, prompt_type="negative")})

    def set_schedule(self, schedule: CFGSchedule):
        self.schedule = schedule

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        check_video(self.reference_shape, tuple(noise.shape))
        self.evaluations = []  # conditions run per model call, for the log line and the benchmark
        self._sigmas = sigmas
        out = super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)
        calls = len(self.evaluations)
        log.info("LibraGen guider: %d condition evaluations in %d model calls (a fixed three-condition guider: %d)",
                 sum(self.evaluations), calls, (3 if self.distinct_negatives else 2) * calls)
        return out

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (core's signature)
        sigma = float(timestep.flatten()[0])
        grid = model_options.get("transformer_options", {}).get("sample_sigmas", self._sigmas)
        # called outside a sampling run (no grid): progress read off sigma, as on an unshifted grid
        progress = step_progress(sigma, grid) if grid is not None else 1.0 - sigma
        weights = self.schedule.weights(progress, sigma)
        form = pair_form(weights, self.distinct_negatives, model_options.get("disable_cfg1_optimization", False))
        names = list(dict.fromkeys(form.order))
        conds = [self.conds.get(CONDITIONS[n]) for n in names]
        if "sampler_calc_cond_batch_function" in model_options:
            args = {"conds": conds, "input": x, "sigma": timestep, "model": self.inner_model,
                    "model_options": model_options}
            out = model_options["sampler_calc_cond_batch_function"](args)
        else:
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        # the pair form's first two conditions are the (cond, uncond) pair the hooks expect first
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": conds, "conds_out": out, "cond_scale": form.scale, "timestep": timestep, "input": x,
                    "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = fn(args)
        self.evaluations.append(len(names))
        pred = dict(zip(names, out))
        cond, uncond = form.order[0], form.order[1]
        result = comfy.samplers.cfg_function(
            self.inner_model, pred[cond], pred[uncond], form.scale, x, timestep, model_options=model_options,
            cond=conds[names.index(cond)], uncond=None if uncond == cond else conds[names.index(uncond)])
        if form.text_scale:
            # DualCFGGuider's "regular" style: the text term on top of the (ref, null) pair
            result = result + (pred["full"] - pred["ref"]) * form.text_scale
        return result
