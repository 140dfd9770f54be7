"""The sampling loop with the real tiny WanDiT (random weights) and an analytic velocity model."""
import math

import pytest
import torch
from torch import nn

from libragen_core.conditioning.subjects import Subjects
from libragen_core.errors import Cancelled, ConfigError, InputError
from libragen_core.models.presets import build_dit
from libragen_core.sampling.guidance import CFGSchedule, Constant, get_preset
from libragen_core.sampling.sampler import GuidedVelocity, initial_noise, sample
from libragen_core.sampling.schedules import flow_sigmas

SHAPE = (1, 16, 3, 4, 4)  # [B, C, F, h, w]


class Recorder(nn.Module):
    """Wraps the real model and records every call's inputs (nothing is faked)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, x, t, context, frame_pos=None):
        self.calls.append({"x": x.clone(), "t": t.clone(), "context": context.clone(), "frame_pos": frame_pos})
        return self.inner(x, t, context, frame_pos=frame_pos)


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = build_dit("tiny")
    # Random init leaves the Wan head at zero-ish scale; make outputs depend clearly on inputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.fixture
def conds():
    g = torch.Generator().manual_seed(1)
    context = torch.randn(1, 7, 4096, generator=g)
    negative = torch.randn(1, 5, 4096, generator=g)
    subjects = Subjects(torch.randn(2, 16, 1, 4, 4, generator=g), labels=["fox", "ball"])
    return context, negative, subjects


def rows_per_call(model):
    return [c["x"].shape[0] for c in model.calls]


@pytest.mark.parametrize(
    ("cfg", "with_refs", "rows"),
    [("phantom", True, 3), ("stiv-sit", True, 3), ("stiv-jit", True, 2), ("none", True, 1), ("phantom", False, 2),
     ("stiv-jit", False, 2), ("none", False, 1)],
)
def test_passes_per_step_are_one_batched_call(dit, conds, cfg, with_refs, rows):
    context, negative, subjects = conds
    model = Recorder(dit)
    steps = 3
    out = sample(model, SHAPE, context, negative, subjects if with_refs else None, steps=steps, shift=5.0,
                 solver="euler", cfg=cfg, seed=0)
    assert out.shape == SHAPE
    assert rows_per_call(model) == [rows] * steps
    frames = SHAPE[2] + (2 if with_refs else 0)
    assert all(c["x"].shape[2] == frames for c in model.calls)


def test_humo_switches_pass_sets_and_batch_size_scales_rows(dit, conds):
    context, negative, subjects = conds
    model = Recorder(dit)
    sample(model, (2, 16, 3, 4, 4), context, negative, subjects, steps=4, shift=5.0, solver="euler", cfg="humo", seed=0)
    sigmas = flow_sigmas(4, 5.0)
    assert sigmas[1] < 0.98  # only step 0 is in HuMo's first phase
    assert rows_per_call(model) == [4, 4, 4, 4]
    first = model.calls[0]["x"]
    # Phase one runs full + ref-only (both with references), phase two full + null (zeros).
    assert torch.equal(first[2:, :, 3:], first[:2, :, 3:])
    later = model.calls[1]["x"]
    assert later[2:, :, 3:].abs().sum() == 0 and later[:2, :, 3:].abs().sum() > 0


def test_injection_contents_positions_timesteps_and_contexts(dit, conds):
    context, negative, subjects = conds
    subjects = subjects.with_rope_offsets([0.0, 3.0])
    model = Recorder(dit)
    sample(model, SHAPE, context, negative, subjects, steps=2, shift=3.0, solver="unipc", cfg="phantom", seed=4)
    sigmas = flow_sigmas(2, 3.0).tolist()
    clean = subjects.frames(1)
    for step, call in enumerate(model.calls):
        x = call["x"]
        full, ref, null = x[0:1], x[1:2], x[2:3]
        assert torch.equal(full[:, :, 3:], clean) and torch.equal(ref[:, :, 3:], clean)
        assert null[:, :, 3:].abs().sum() == 0
        assert torch.equal(full[:, :, :3], ref[:, :, :3]) and torch.equal(full[:, :, :3], null[:, :, :3])
        assert call["t"].tolist() == pytest.approx([sigmas[step] * 1000] * 3)
        assert call["frame_pos"].tolist() == [0, 1, 2, 3, 7]
        ctx = call["context"]
        assert ctx.shape == (3, 7, 4096)
        assert torch.equal(ctx[0], context[0])
        assert torch.equal(ctx[1, :5], negative[0]) and ctx[1, 5:].abs().sum() == 0
        assert torch.equal(ctx[2], ctx[1])
    # The first call sees the seed's noise in the video slots.
    assert torch.equal(model.calls[0]["x"][0:1, :, :3], initial_noise(SHAPE, 4))


def test_batched_guidance_equals_separate_passes(dit, conds):
    context, negative, subjects = conds
    cfg = CFGSchedule(Constant(2.5), Constant(6.0))
    x = initial_noise(SHAPE, 11)
    velocity = GuidedVelocity(dit, context, negative, subjects, cfg, x.shape, torch.device("cpu"), x.dtype)
    with torch.no_grad():
        got = velocity(x, 0.7)
        pos = subjects.frame_pos(3)
        t = torch.tensor([700.0])
        refs = subjects.frames(1)

        def run(r, ctx):
            return dit(torch.cat([x, r], 2), t, ctx, frame_pos=pos)[:, :, :3]

        # Wan does not mask padding, so the negative is compared at the common padded length
        # (the text encoders already pad both prompts to the same max_length).
        negative = torch.nn.functional.pad(negative, (0, 0, 0, 2))
        v_full, v_ref, v_null = run(refs, context), run(refs, negative), run(torch.zeros_like(refs), negative)
    expected = v_null + 2.5 * (v_ref - v_null) + 6.0 * (v_full - v_ref)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert velocity.calls == [3]


def test_references_and_offsets_reach_the_model(dit, conds):
    context, negative, subjects = conds
    kwargs = dict(steps=3, shift=5.0, solver="dpmpp_2m", cfg="phantom", seed=2)
    base = sample(dit, SHAPE, context, negative, subjects, **kwargs)
    other = Subjects(torch.randn(2, 16, 1, 4, 4, generator=torch.Generator().manual_seed(9)))
    shifted = subjects.with_rope_offsets([5.0, 5.0])
    assert not torch.allclose(base, sample(dit, SHAPE, context, negative, other, **kwargs))
    assert not torch.allclose(base, sample(dit, SHAPE, context, negative, shifted, **kwargs))
    assert not torch.allclose(base, sample(dit, SHAPE, context, negative, None, **kwargs))


def test_seeded_sampling_is_deterministic(dit, conds):
    context, negative, subjects = conds
    kwargs = dict(steps=3, shift=5.0, solver="unipc", cfg="libragen")
    a = sample(dit, SHAPE, context, negative, subjects, seed=123, **kwargs)
    b = sample(dit, SHAPE, context, negative, subjects, seed=123, **kwargs)
    c = sample(dit, SHAPE, context, negative, subjects, seed=124, **kwargs)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(sample(dit, initial_noise(SHAPE, 123), context, negative, subjects, **kwargs), a)


def test_callback_gets_previews_and_can_cancel_without_touching_the_model(dit, conds):
    context, negative, subjects = conds
    model = Recorder(dit).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def callback(step, total, sigma, x0):
        seen.append((step, total, sigma, tuple(x0.shape)))
        assert not model.training  # sampling runs in eval mode
        return step < 2

    with pytest.raises(Cancelled, match="cancelled after step 2 of 5"):
        sample(model, SHAPE, context, negative, subjects, steps=5, cfg="stiv-jit", seed=0, callback=callback)
    sigmas = flow_sigmas(5, 5.0).tolist()
    assert seen == [(1, 5, sigmas[0], SHAPE), (2, 5, sigmas[1], SHAPE)]
    assert len(model.calls) == 2
    assert model.training and model.inner.training is True
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.eval()

    def raising(step, total, sigma, x0):
        raise Cancelled("stop requested")

    with pytest.raises(Cancelled, match="stop requested"):
        sample(model, SHAPE, context, negative, subjects, steps=5, cfg="none", seed=0, callback=raising)
    assert not model.training


def test_loop_follows_the_exact_ode_for_an_analytic_model():
    mu, s = 0.6, 0.3

    def gaussian_model(x, t, context, frame_pos=None):
        sigma = float(t[0]) / 1000.0
        a = 1.0 - sigma
        var = sigma**2 + (a * s) ** 2
        centred = x - a * mu
        return sigma / var * centred - (mu + a * s**2 / var * centred)

    noise = initial_noise((1, 2, 2, 3, 3), 5, dtype=torch.float32)
    out = sample(gaussian_model, noise, torch.zeros(1, 1, 8), None, None, steps=60, shift=3.0, solver="unipc",
                 cfg="none")
    err = (out - (mu + s * noise)).abs()
    assert err.mean() < 2e-3 and err.max() < 1e-2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(steps=0), InputError, "steps must be a whole number of at least 1"),
        (dict(shift=-2.0), InputError, "shift must be a finite number above 0"),
        (dict(cfg="fancy"), ConfigError, "unknown CFG preset 'fancy'"),
        (dict(cfg={"s_img": 1, "s_txt": {"type": "wave"}}), ConfigError, "s_txt.type 'wave' is not a known"),
        (dict(solver="rk4"), InputError, "unknown solver 'rk4'"),
        (dict(negative_context=None), InputError, "needs a negative-prompt pass on 3 of 3 steps"),
        (dict(noise=torch.zeros(1, 16, 4, 4)), InputError, r"noise must be video latents \[B, C, F, h, w\]"),
        (dict(noise=(1, 16, 3, 4, 4), seed=None), InputError, "a latent shape together with a seed"),
        (dict(noise=torch.zeros(1, 16, 3, 4, 6)), InputError, "reference latents are 4x4"),
        (dict(context=torch.zeros(3, 7, 4096)), InputError, "context has batch 3 but the noise has batch 1"),
        (dict(context=torch.zeros(7, 4096)), InputError, r"context must be text features \[B, L, text_dim\]"),
        (dict(negative_context=torch.zeros(1, 5, 512)), InputError, "negative_context has text_dim 512"),
    ],
)
def test_bad_inputs_are_named(dit, conds, kwargs, error, message):
    context, negative, subjects = conds
    args = dict(model=dit, noise=torch.zeros(SHAPE), context=context, negative_context=negative, subjects=subjects,
                steps=3, shift=5.0, solver="euler", cfg="phantom", seed=0)
    args.update(kwargs)
    model = Recorder(args.pop("model"))
    with pytest.raises(error, match=message):
        sample(model, **args)
    assert model.calls == []


def test_five_subjects_never_reach_the_sampler():
    with pytest.raises(InputError, match="5 references were given"):
        Subjects(torch.zeros(5, 16, 1, 4, 4))


def test_none_preset_is_the_conditional_velocity(dit, conds):
    context, negative, subjects = conds
    x = initial_noise(SHAPE, 3)
    v = GuidedVelocity(dit, context, negative, subjects, get_preset("none"), x.shape, torch.device("cpu"), x.dtype)
    with torch.no_grad():
        direct = dit(torch.cat([x, subjects.frames(1)], 2), torch.tensor([500.0]), context,
                     frame_pos=subjects.frame_pos(3))[:, :, :3]
        assert torch.equal(v(x, 0.5), direct)
    assert math.isclose(get_preset("none").scales(0.3, 0.3)[0], 1.0)


def test_custom_sigmas_replace_steps_and_shift(dit, conds):
    context, negative, subjects = conds
    kwargs = dict(solver="unipc", cfg="stiv-jit", seed=8)
    by_steps = sample(dit, SHAPE, context, negative, subjects, steps=3, shift=5.0, **kwargs)
    by_list = sample(dit, SHAPE, context, negative, subjects, sigmas=flow_sigmas(3, 5.0), steps=99, **kwargs)
    assert torch.equal(by_steps, by_list)
    model = Recorder(dit)
    sample(model, SHAPE, context, negative, subjects, sigmas=[0.999, 0.6, 0.2, 0.0], **kwargs)
    assert [round(c["t"][0].item(), 3) for c in model.calls] == [999.0, 600.0, 200.0]
    with pytest.raises(InputError, match="must not increase"):
        sample(dit, SHAPE, context, negative, subjects, sigmas=[1.0, 0.2, 0.5, 0.0], **kwargs)


def test_one_step_returns_the_x0_prediction(dit, conds):
    context, negative, subjects = conds
    noise = initial_noise(SHAPE, 2)
    out = sample(dit, noise, context, negative, subjects, steps=1, solver="dpmpp_2m", cfg="none")
    v = GuidedVelocity(dit, context, negative, subjects, get_preset("none"), SHAPE, torch.device("cpu"), noise.dtype)
    with torch.no_grad():
        assert torch.allclose(out, noise - v(noise, 1.0), atol=1e-6)


def test_any_object_with_weights_is_a_guidance_rule(dit, conds):
    from libragen_core.sampling.guidance import GuidanceWeights

    class TextOnlyLate:
        """Unguided while sigma > 0.5, then plain text CFG at 4 (a rule no preset expresses)."""

        def weights(self, progress, sigma):
            return GuidanceWeights(0.0, 0.0, 1.0) if sigma > 0.5 else GuidanceWeights(0.0, -3.0, 4.0)

    context, negative, subjects = conds
    model = Recorder(dit)
    sample(model, SHAPE, context, negative, subjects, steps=4, shift=1.0, solver="euler", cfg=TextOnlyLate(), seed=0)
    assert rows_per_call(model) == [1, 1, 2, 2]  # sigmas 1, 0.75 | 0.5, 0.25
    with pytest.raises(ConfigError, match="cfg must be a preset name"):
        sample(dit, SHAPE, context, negative, subjects, steps=2, cfg=7.5, seed=0)


def test_guided_velocity_without_negative_names_the_gap(dit, conds):
    context, _, subjects = conds
    x = initial_noise(SHAPE, 1)
    v = GuidedVelocity(dit, context, None, subjects, get_preset("phantom"), SHAPE, torch.device("cpu"), x.dtype)
    with pytest.raises(InputError, match="needs a negative-prompt pass but negative_context is None"):
        v(x, 0.5)
    assert v.calls == []
