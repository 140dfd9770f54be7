"""The one sampling loop: subject injection + batched multi-condition CFG + an ODE solver.

    x = noise (video frames)                      sigma = 1 (after the shift: still 1)
    for each step i:
        v = guided velocity at (x, sigma_i):      one model call, all needed passes in one batch
            rows per pass = [x | refs]  (full, ref-only)  or  [x | zeros]  (null)
            v = sum_p c_p(progress, sigma) * model(rows_p)[video frames]
        x, x0 = solver.step(...)                  x0 = x - sigma * v is the preview
        callback(i + 1, steps, sigma_i, x0)       False or Cancelled stops the run

The solver only ever sees the F video frames: the reference slots are rebuilt from the clean
reference latents for every model call and the output is trimmed, which is exactly Phantom's
"overwrite the reference slots every step, trim at the end" with the (discarded) velocity of
those slots never computed into the state.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..conditioning.subjects import Subjects, append_references, trim_to_video
from ..errors import Cancelled, ConfigError, InputError
from .guidance import CFGSchedule, combine, get_preset
from .schedules import check_sigmas, check_steps, flow_sigmas, sigma_to_timestep
from .solvers import Solver, get_solver

# callback(step, total, sigma, x0_preview) -> None / True to go on, False to cancel
Callback = Callable[[int, int, float, torch.Tensor], object]


def initial_noise(shape: Sequence[int], seed: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from `seed`, then moved: the same on every device."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be a whole number (got {seed!r}).")
    generator = torch.Generator(device="cpu").manual_seed(seed % (2**64))
    noise = torch.randn(tuple(int(s) for s in shape), generator=generator, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def resolve_cfg(cfg: str | CFGSchedule | Mapping) -> CFGSchedule:
    """A preset name, a schedule's dict, or any object with `weights(progress, sigma) ->
    GuidanceWeights` (CFGSchedule, or a custom guidance rule)."""
    if isinstance(cfg, str):
        return get_preset(cfg)
    if isinstance(cfg, Mapping):
        return CFGSchedule.from_dict(cfg)
    if callable(getattr(cfg, "weights", None)):
        return cfg
    raise ConfigError(
        f"cfg must be a preset name, a CFGSchedule, its dict, or an object with weights(progress, sigma) "
        f"(got {type(cfg).__name__})."
    )


def _pad_tokens(context: torch.Tensor, length: int) -> torch.Tensor:
    # Text features are zero-padded by the encoders already; padding two prompts to a common
    # length with more zeros is what lets them share one batch.
    if context.shape[1] == length:
        return context
    return torch.nn.functional.pad(context, (0, 0, 0, length - context.shape[1]))


def _check_context(context, name: str, batch: int) -> torch.Tensor:
    if not isinstance(context, torch.Tensor) or context.ndim != 3:
        shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise InputError(f"{name} must be text features [B, L, text_dim]; got {shape}.")
    if context.shape[0] not in (1, batch):
        raise InputError(
            f"{name} has batch {context.shape[0]} but the noise has batch {batch}; give one row or one per sample."
        )
    return context.expand(batch, -1, -1)


class GuidedVelocity:
    """velocity(x_video, sigma) with injection and CFG; counts the model calls it makes."""

    def __init__(self, model: Callable, context: torch.Tensor, negative_context: torch.Tensor | None,
                 subjects: Subjects, cfg: CFGSchedule, video_shape: Sequence[int], device, dtype):
        batch, _, frames = video_shape[0], video_shape[1], video_shape[2]
        self.model, self.cfg, self.subjects = model, cfg, subjects
        self.batch, self.frames = batch, frames
        self.has_refs = subjects.count > 0
        context = _check_context(context, "context", batch)
        if negative_context is not None:
            negative_context = _check_context(negative_context, "negative_context", batch)
            if negative_context.shape[2] != context.shape[2]:
                raise InputError(
                    f"negative_context has text_dim {negative_context.shape[2]} but context has "
                    f"{context.shape[2]}; encode both prompts with the same text encoder."
                )
            length = max(context.shape[1], negative_context.shape[1])
            negative_context = _pad_tokens(negative_context, length).to(device)
            context = _pad_tokens(context, length)
        self.context = {"full": context.to(device), "ref": negative_context, "null": negative_context}
        if self.has_refs:
            refs = subjects.frames(batch, device=device, dtype=dtype)
            self.refs = {"full": refs, "ref": refs, "null": torch.zeros_like(refs)}
        self.frame_pos = subjects.frame_pos(frames, device=device)
        self.progress = 0.0
        self.calls: list[int] = []  # rows per model call, for inspection

    def passes(self, progress: float, sigma: float) -> dict[str, float]:
        return self.cfg.weights(progress, sigma).passes(self.has_refs)

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        weights = self.cfg.weights(self.progress, sigma)
        names = list(weights.passes(self.has_refs))
        if any(self.context[n] is None for n in names):
            raise InputError(
                f"guidance at sigma {sigma:.3f} needs a negative-prompt pass but negative_context is None; "
                "encode a negative (or empty) prompt."
            )
        rows = [append_references(x, self.refs[n]) if self.has_refs else x for n in names]
        x_in = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
        ctx = torch.cat([self.context[n] for n in names], dim=0) if len(names) > 1 else self.context[names[0]]
        t = torch.full((x_in.shape[0],), float(sigma_to_timestep(sigma)), device=x.device, dtype=torch.float32)
        self.calls.append(x_in.shape[0])
        out = self.model(x_in, t, ctx, frame_pos=self.frame_pos)
        out = trim_to_video(out, self.frames).to(x.dtype)
        outputs = dict(zip(names, out.split(self.batch, dim=0)))
        return combine(weights, outputs, self.has_refs)


def _model_device(model, fallback: torch.device) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return fallback


def sample(
    model: Callable,
    noise: torch.Tensor | Sequence[int],
    context: torch.Tensor,
    negative_context: torch.Tensor | None = None,
    subjects: Subjects | None = None,
    steps: int = 30,
    shift: float = 5.0,
    solver: str | Solver = "unipc",
    cfg: str | CFGSchedule | Mapping = "libragen",
    seed: int | None = None,
    callback: Callback | None = None,
    sigmas: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample video latents [B, C, F, h, w] with subjects injected and dynamic CFG.

    model: any `model(x, t, context, frame_pos=None) -> velocity` (WanDiT); it is run in eval
        mode under no_grad and its training flag is restored afterwards, also on cancel/error.
    noise: the starting noise [B, C, F, h, w] (video frames only; reference slots need none),
        or just that shape together with `seed`: noise is then drawn on the CPU from the seed.
    context / negative_context: text features [B or 1, L, text_dim]; the negative is needed
        whenever the schedule runs a ref-only or null pass (any cfg other than "none").
    sigmas: a custom schedule (e.g. ComfyUI's SIGMAS, or Wan's `flow_sigmas(n, s, denoise=0.999)`)
        used instead of steps/shift; it must fall to 0. Starting below 1 means `noise` is already
        the partly noised input.
    """
    subjects = subjects if subjects is not None else Subjects()
    if sigmas is None:
        check_steps(steps)
        sigmas = flow_sigmas(steps, shift).tolist()
    else:
        sigmas = check_sigmas(sigmas)
        steps = len(sigmas) - 1
    cfg = resolve_cfg(cfg)
    step_solver = get_solver(solver)
    device = _model_device(model, noise.device if isinstance(noise, torch.Tensor) else torch.device("cpu"))
    if not isinstance(noise, torch.Tensor):
        if seed is None:
            raise InputError("pass either a noise tensor or a latent shape together with a seed.")
        noise = initial_noise(noise, seed, device=device)
    if noise.ndim != 5:
        raise InputError(f"noise must be video latents [B, C, F, h, w]; got shape {tuple(noise.shape)}.")
    subjects.check_video(noise.shape)
    x = noise.to(device=device, dtype=torch.float32)
    velocity = GuidedVelocity(model, context, negative_context, subjects, cfg, x.shape, device, x.dtype)
    if negative_context is None:
        needing = [i for i in range(steps) if set(velocity.passes(i / steps, sigmas[i])) - {"full"}]
        if needing:
            raise InputError(
                f"the CFG schedule needs a negative-prompt pass on {len(needing)} of {steps} steps but "
                "negative_context is None; encode a negative (or empty) prompt, or use cfg='none'."
            )

    was_training = model.training if isinstance(model, nn.Module) else None
    try:
        if was_training is not None:
            model.eval()
        with torch.no_grad():
            for i in range(steps):
                velocity.progress = i / steps
                x, x0 = step_solver.step(velocity, x, sigmas, i)
                if callback is not None and callback(i + 1, steps, sigmas[i], x0) is False:
                    raise Cancelled(f"sampling was cancelled after step {i + 1} of {steps}.")
    finally:
        if was_training is not None:
            model.train(was_training)
    return x
