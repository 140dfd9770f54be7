import json
import math

import pytest
import torch

from libragen_core.errors import ConfigError
from libragen_core.sampling.guidance import (
    PRESETS,
    CFGSchedule,
    Constant,
    CosineRamp,
    GuidanceWeights,
    LinearRamp,
    PerStep,
    Switch,
    combine,
    get_preset,
    pair_form,
    schedule_from_dict,
)
from libragen_core.sampling.schedules import flow_sigmas


def test_constant_and_linear_ramp_values():
    assert Constant(3.0)(0.7, 0.2) == 3.0
    ramp = LinearRamp(start=2.0, end=6.0, begin=0.25, finish=0.75)
    assert ramp(0.0, 1.0) == 2.0
    assert ramp(0.25, 1.0) == 2.0
    assert ramp(0.5, 1.0) == pytest.approx(4.0)
    assert ramp(0.9, 1.0) == 6.0
    # over="sigma" reads the position as 1 - sigma, so `start` is still the early value.
    by_sigma = LinearRamp(start=2.0, end=6.0, over="sigma")
    assert by_sigma(0.0, 1.0) == 2.0
    assert by_sigma(0.0, 0.25) == pytest.approx(5.0)


def test_cosine_ramp_is_eased_and_meets_the_endpoints():
    ramp = CosineRamp(start=0.0, end=1.0)
    assert ramp(0.0, 1) == 0.0 and ramp(1.0, 0) == 1.0
    assert ramp(0.5, 0) == pytest.approx(0.5)
    # Flatter than linear near the ends.
    assert ramp(0.1, 0) < 0.1 and ramp(0.9, 0) > 0.9


def test_switch_on_sigma_and_progress():
    humo_like = Switch(before=1.0, after=5.5, at=0.98, over="sigma")
    assert humo_like(0.0, 1.0) == 1.0
    assert humo_like(0.0, 0.981) == 1.0
    assert humo_like(0.0, 0.98) == 5.5
    early = Switch(before=2.0, after=4.0, at=0.1, over="progress")
    # CustomCrafter: 5 of 50 steps before, step index 5 onwards after.
    values = [early(i / 50, 1.0) for i in range(50)]
    assert values[:5] == [2.0] * 5 and values[5:] == [4.0] * 45


def test_switch_accepts_nested_schedules():
    sw = Switch(before=LinearRamp(start=0.0, end=1.0), after=9.0, at=0.5)
    assert sw(0.25, 0.5) == pytest.approx(0.25)
    assert sw(0.75, 0.5) == 9.0


def test_per_step_picks_by_progress():
    ps = PerStep([1.0, 2.0, 3.0, 4.0])
    assert [ps(i / 4, 0.5) for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    # A list shorter than the run stretches over it.
    assert [ps(i / 8, 0.5) for i in range(8)] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]


def test_weights_sum_to_one_and_reproduce_the_formula():
    cfg = CFGSchedule(Constant(5.0), Constant(7.5))
    w = cfg.weights(0.3, 0.6)
    assert (w.c_null, w.c_ref, w.c_full) == (-4.0, -2.5, 7.5)
    v_full, v_ref, v_null = torch.randn(3, 2, 5).unbind(0)
    expected = v_null + 5.0 * (v_ref - v_null) + 7.5 * (v_full - v_ref)
    got = combine(w, {"full": v_full, "ref": v_ref, "null": v_null}, has_refs=True)
    assert torch.allclose(got, expected, atol=1e-5)


def test_passes_skip_zero_coefficients_and_merge_without_refs():
    assert list(get_preset("none").weights(0, 1).passes(True)) == ["full"]
    assert list(get_preset("phantom").weights(0, 1).passes(True)) == ["full", "ref", "null"]
    assert list(get_preset("stiv-jit").weights(0, 1).passes(True)) == ["full", "null"]
    merged = get_preset("phantom").weights(0, 1).passes(False)
    assert merged == {"full": 7.5, "null": -6.5}
    # Zero references: ref-only and null are one condition, so phantom == JIT with s = 7.5.
    v_full, v_null = torch.randn(2, 4).unbind(0)
    got = combine(get_preset("phantom").weights(0, 1), {"full": v_full, "null": v_null}, has_refs=False)
    assert torch.allclose(got, v_null + 7.5 * (v_full - v_null), atol=1e-6)
    assert GuidanceWeights(0.0, 0.0, 1.0).passes(False) == {"full": 1.0}


def test_humo_preset_switches_pass_sets_at_sigma_098():
    humo = get_preset("humo")
    early = humo.weights(0.0, 0.99)
    assert list(early.passes(True)) == ["full", "ref"]  # c_null = 1 - 1 = 0
    late = humo.weights(0.5, 0.5)
    assert list(late.passes(True)) == ["full", "null"]  # s_img == s_txt
    assert humo.scales(0.0, 0.99)[1] - humo.scales(0.5, 0.5)[1] == pytest.approx(2.0)


def test_libragen_preset_text_early_image_late():
    cfg = get_preset("libragen")
    sigmas = flow_sigmas(30, shift=5.0)
    s = [cfg.scales(i / 30, sigmas[i].item()) for i in range(30)]
    imgs, txts = [a for a, _ in s], [b for _, b in s]
    assert txts[0] > txts[-1] and imgs[0] < imgs[-1]
    assert all(b >= a for a, b in zip(imgs, imgs[1:]))
    assert all(b <= a for a, b in zip(txts, txts[1:]))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = PRESETS[name]
    text = cfg.to_json()
    again = CFGSchedule.from_json(text)
    assert again == cfg
    assert json.loads(text)["type"] == "cfg_schedule"
    for p in (0.0, 0.05, 0.5, 0.99):
        for sigma in (1.0, 0.985, 0.5, 0.01):
            assert again.scales(p, sigma) == cfg.scales(p, sigma)


def test_bare_numbers_are_constants_in_json():
    cfg = CFGSchedule.from_json('{"s_img": 2, "s_txt": {"type": "per_step", "values": [9, 8, 7]}}')
    assert cfg.s_img == Constant(2.0)
    assert cfg.s_txt == PerStep((9.0, 8.0, 7.0))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('{"s_img": {"type": "sawtooth"}, "s_txt": 7.5}', "s_img.type 'sawtooth' is not a known schedule type"),
        ('{"s_img": {"type": "constant", "value": "high"}, "s_txt": 7.5}', "s_img.value must be a finite number"),
        ('{"s_img": 5.0}', "missing field 's_txt'"),
        ('{"s_img": 5, "s_txt": {"type": "linear_ramp", "start": 1}}', "s_txt (linear_ramp) is missing field(s) ['end']"),
        ('{"s_img": 5, "s_txt": {"type": "linear_ramp", "start": 1, "end": 2, "over": "time"}}',
         "s_txt.over must be 'progress' or 'sigma'"),
        ('{"s_img": 5, "s_txt": {"type": "linear_ramp", "start": 1, "end": 2, "begin": 0.8, "finish": 0.2}}',
         "finish (0.2) must be greater than begin (0.8)"),
        ('{"s_img": {"type": "switch", "before": 1, "after": {"type": "constant", "value": null}, "at": 0.5},'
         ' "s_txt": 7}', "s_img.after.value must be a finite number"),
        ('{"s_img": {"type": "switch", "before": 1, "after": 2, "at": 1.5}, "s_txt": 7}', "s_img.at must lie in [0, 1]"),
        ('{"s_img": {"type": "per_step", "values": []}, "s_txt": 7}', "at least one number"),
        ('{"s_img": {"type": "per_step", "values": [1, "x"]}, "s_txt": 7}', "s_img.values[1] must be a finite number"),
        ('{"s_img": {"type": "constant", "value": 1, "extra": 2}, "s_txt": 7}', "unknown field(s) ['extra']"),
        ('{"s_img": 1, "s_txt": 7, "shift": 5}', "unknown field(s) ['shift']"),
        ('{"s_img": 1, "s_txt": 7, "type": "lora"}', "is not 'cfg_schedule'"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_schedule_json_names_the_field(doc, message):
    with pytest.raises(ConfigError) as info:
        CFGSchedule.from_json(doc)
    assert message in str(info.value)


def test_nan_and_bool_values_are_rejected():
    with pytest.raises(ConfigError, match="value must be a finite number"):
        Constant(float("nan"))
    with pytest.raises(ConfigError, match="s_img must be a number or an object"):
        schedule_from_dict(True, "s_img")
    with pytest.raises(ConfigError, match="unknown CFG preset 'fancy'"):
        get_preset("fancy")


def test_schedules_are_frozen_values():
    c = Constant(1.0)
    with pytest.raises(AttributeError):
        c.value = 2.0
    assert hash(CFGSchedule(1.0, 2.0)) == hash(CFGSchedule(Constant(1.0), Constant(2.0)))
    assert math.isclose(CosineRamp(start=1, end=3, over="sigma")(0, 0.5), 2.0)


def _pair_mix(form, outputs):
    a, b = (outputs[n] for n in form.order[:2])
    mixed = b + form.scale * (a - b)
    if form.text_scale:
        mixed = mixed + form.text_scale * (outputs["full"] - outputs["ref"])
    return mixed


@pytest.mark.parametrize("has_refs", [True, False])
@pytest.mark.parametrize("every_pass", [False, True])
def test_pair_form_mixes_like_combine_for_every_pass_set(has_refs, every_pass):
    g = torch.Generator().manual_seed(0)
    outputs = {n: torch.randn(3, 4, generator=g) for n in ("full", "ref", "null")}
    if not has_refs:
        outputs["ref"] = outputs["null"]  # one condition: negative text, nothing injected
    # every pass set: 3 passes, s_img == s_txt (full + null), s_img == 1 (full + ref),
    # s_txt == 0 (ref + null), one pass (none), and only the null pass
    for s_img, s_txt in ((5.0, 7.5), (7.5, 7.5), (1.0, 7.5), (3.0, 0.0), (1.0, 1.0), (0.0, 0.0), (2.0, 9.0)):
        weights = CFGSchedule(s_img, s_txt).weights(0.0, 1.0)
        form = pair_form(weights, has_refs, every_pass)
        expected = combine(weights, outputs, has_refs)
        assert torch.allclose(_pair_mix(form, outputs), expected, atol=1e-5), (s_img, s_txt, form)
        run = set(form.order)
        assert run == set(weights.passes(has_refs)) or every_pass, (s_img, s_txt, form)
        if every_pass:
            assert run == ({"full", "ref", "null"} if has_refs else {"full", "null"})


def test_pair_form_orders_three_passes_as_dual_cfg():
    form = pair_form(CFGSchedule(5.0, 7.5).weights(0.0, 1.0), has_refs=True)
    # DualCFGGuider "regular": cfg_function(middle, negative, cfg2) + cfg1 * (positive - middle)
    assert form.order == ("ref", "null", "full") and form.scale == 5.0 and form.text_scale == 7.5
    assert pair_form(CFGSchedule(7.5, 7.5).weights(0.0, 1.0), has_refs=True).order == ("full", "null")
    assert pair_form(PRESETS["none"].weights(0.0, 1.0), has_refs=True).order == ("full", "full")
