import numpy as np
import pytest

from libragen_core.errors import InputError
from libragen_core.spriteworld.backgrounds import canvas_geometry, draw_background
from libragen_core.spriteworld.identity import (
    COLORS,
    Identity,
    all_identities,
    identity_count,
    identity_from_index,
    sample_identity,
)
from libragen_core.spriteworld.motions import SINGLE_MOTIONS
from libragen_core.spriteworld.render import render_identity, render_scene
from libragen_core.spriteworld.scene import (
    Background,
    Camera,
    Interaction,
    Light,
    Occluder,
    Scene,
    SubjectSpec,
    camera_offsets,
    sample_scene,
)

STAR = Identity("star", "blue", "orange", "striped", "dot", "large")
CIRCLE = Identity("circle", "red", "yellow", "plain", "eyes", "medium")


def _scene(motion, params=None, start=(0.5, 0.5), scale=0.4, **kw):
    return Scene(seed=3, subjects=[SubjectSpec(STAR, motion, params or {}, start, scale)], **kw)


def test_identity_space_is_large_and_enumeration_is_a_bijection():
    n = identity_count()
    assert n >= 10_000
    everything = all_identities()
    assert len({i.key for i in everything}) == n
    for i in (0, 1, 777, n - 1):
        ident = identity_from_index(i)
        assert Identity.from_key(ident.key) == ident
    assert {i.name for i in everything} >= {"a blue striped star", "a red circle"}


def test_names_and_descriptions():
    assert STAR.name == "a blue striped star"
    assert STAR.ref_name == "the blue star"
    assert STAR.description == "a large blue star with orange stripes and a white dot"
    assert CIRCLE.description == "a medium red circle with a yellow outline and two eyes"
    assert Identity("moon", "orange", "white", "plain", "none", "small").name == "an orange moon"


def test_heldout_rule_is_about_ten_percent_and_split_sampling_respects_it():
    everything = all_identities()
    frac = np.mean([i.is_heldout for i in everything])
    assert 0.08 < frac < 0.12
    # a held-out look is held out at every size
    by_look = {}
    for i in everything:
        by_look.setdefault(i.appearance_key, set()).add(i.is_heldout)
    assert all(len(v) == 1 for v in by_look.values())
    rng = np.random.default_rng(0)
    assert not any(sample_identity(rng, "train").is_heldout for _ in range(500))
    assert all(sample_identity(rng, "heldout").is_heldout for _ in range(50))
    for _ in range(150):
        assert not any(s.identity.is_heldout for s in sample_scene(rng, split="train").subjects)
    assert all(s.identity.is_heldout for s in sample_scene(rng, 3, split="heldout").subjects)


def test_the_colors_filter_restricts_the_body_colour_only():
    """colors=["red"] once restricted the outline colour too, so no identity could be drawn."""
    rng = np.random.default_rng(3)
    drawn = [sample_identity(rng, "train", colors=["red"], sizes=["large"]) for _ in range(60)]
    assert {i.color for i in drawn} == {"red"} and {i.size for i in drawn} == {"large"}
    assert len({i.color2 for i in drawn}) >= 5 and "red" not in {i.color2 for i in drawn}
    both = [sample_identity(rng, "any", colors=["red", "blue"], colors2=["white"]) for _ in range(20)]
    assert {i.color for i in both} == {"red", "blue"} and {i.color2 for i in both} == {"white"}
    scene = sample_scene(rng, 1, identity_filter={"colors": ["red"], "sizes": ["large"]})
    assert scene.subjects[0].identity.color == "red"
    with pytest.raises(InputError, match="no pair of different colours"):
        sample_identity(rng, colors=["red"], colors2=["red"])
    with pytest.raises(InputError, match="colors=\\['crimson'\\]"):
        sample_identity(rng, colors=["crimson"])


def test_spins_are_only_drawn_for_sprites_whose_rotation_shows():
    plain_circle = Identity("circle", "red", "blue", "ringed", "dot", "large")
    assert not plain_circle.is_heldout and not plain_circle.rotation_visible
    r = render_scene(Scene(0, [SubjectSpec(plain_circle, "spin_cw", {}, (0.5, 0.5), 0.5)]))
    star = render_scene(Scene(0, [SubjectSpec(STAR, "spin_cw", {}, (0.5, 0.5), 0.5)]))

    def iou(m):
        return min((m[0] & f).sum() / (m[0] | f).sum() for f in m)

    assert iou(r.masks[0]) > 0.9 and iou(star.masks[0]) < 0.8  # why spinning a circle is pointless
    rng = np.random.default_rng(0)
    for _ in range(30):
        scene = sample_scene(rng, 1, identities=[plain_circle], motions=["spin_cw", "spin_ccw", "grow"])
        assert scene.subjects[0].motion == "grow"


def test_invalid_identity_and_scene_values_are_named():
    with pytest.raises(InputError, match="two different colours"):
        Identity("star", "blue", "blue", "plain", "none", "small")
    with pytest.raises(InputError, match="shape"):
        Identity("blob", "blue", "red", "plain", "none", "small")
    with pytest.raises(InputError, match="4k\\+1"):
        _scene("stay", n_frames=16)
    with pytest.raises(InputError, match="unknown motion"):
        _scene("teleport")
    with pytest.raises(InputError, match="scale"):
        _scene("stay", scale=0.0)


def test_missing_motion_params_take_defaults():
    r = render_scene(_scene("move_right", {}, start=(0.2, 0.5), scale=0.3))
    assert r.centers[0, -1, 0] - r.centers[0, 0, 0] == pytest.approx(0.35 * 64)
    r = render_scene(_scene("zigzag_left", {"distance": 0.2}, start=(0.6, 0.5), scale=0.3))
    assert r.centers[0, -1, 0] - r.centers[0, 0, 0] == pytest.approx(-0.2 * 64)
    assert np.ptp(r.centers[0, :, 1]) == pytest.approx(2 * 0.1 * 64, rel=0.05)


def test_sampling_and_rendering_are_deterministic_and_json_round_trips():
    a = [sample_scene(np.random.default_rng(7)) for _ in range(2)]
    assert a[0].to_json() == a[1].to_json()
    rng = np.random.default_rng(11)
    for _ in range(20):
        scene = sample_scene(rng)
        again = Scene.from_json(scene.to_json())
        assert again.to_json() == scene.to_json()
        r1, r2 = render_scene(scene), render_scene(again)
        assert r1.frames.dtype == np.uint8 and r1.frames.shape == (17, 64, 64, 3)
        np.testing.assert_array_equal(r1.frames, r2.frames)
        np.testing.assert_array_equal(r1.masks, r2.masks)


def test_sampled_subjects_stay_inside_the_frame():
    rng = np.random.default_rng(5)
    for _ in range(60):
        scene = sample_scene(rng, size=(64, 80))
        r = render_scene(scene)
        assert r.frames.shape[1:3] == (64, 80)
        radius = r.scales * scene.short / 2
        x, y = r.centers[..., 0], r.centers[..., 1]
        assert np.all(x - radius >= -1) and np.all(x + radius <= 81)
        assert np.all(y - radius >= -1) and np.all(y + radius <= 65)
        if scene.occluder is None:
            assert r.visible[:, 0].min() > 0.5  # nothing starts hidden


@pytest.mark.parametrize("motion", SINGLE_MOTIONS)
def test_every_motion_moves_the_ground_truth_as_named(motion):
    params = {"distance": 0.3, "radius": 0.15, "phase": 0.0, "height": 0.25, "amplitude": 0.1, "factor": 1.6}
    r = render_scene(_scene(motion, params, scale=0.3))
    c, s, a = r.centers[0], r.scales[0], r.angles[0]
    d = c[-1] - c[0]
    tol = 1e-6
    if motion.startswith(("move_", "zigzag_")):
        direction = motion.split("_", 1)[1]
        if "left" in direction:
            assert d[0] < -10
        if "right" in direction:
            assert d[0] > 10
        if "up" in direction:
            assert d[1] < -10
        if "down" in direction:
            assert d[1] > 10
        if direction in ("left", "right"):
            assert abs(d[1]) < tol
        if direction in ("up", "down"):
            assert abs(d[0]) < tol
        if motion.startswith("zigzag_"):
            assert np.ptp(c[:, 1]) > 8  # it weaves up and down on the way
    elif motion.startswith("circle_"):
        assert np.allclose(c[0], c[-1]) and np.ptp(c[:, 0]) > 15 and np.ptp(c[:, 1]) > 15
        # clockwise on screen (y down): the cross product of successive steps is positive
        (ax, ay), (bx, by) = c[1] - c[0], c[2] - c[1]
        cross = ax * by - ay * bx
        assert cross > 0 if motion.endswith("_cw") else cross < 0
    elif motion == "bounce":
        assert np.all(c[:, 1] <= c[0, 1] + tol) and c[:, 1].min() < c[0, 1] - 10
        assert np.ptp(c[:, 0]) < tol
    elif motion == "grow":
        assert np.all(np.diff(s) > 0) and r.masks[0, -1].sum() > 2 * r.masks[0, 0].sum()
    elif motion == "shrink":
        assert np.all(np.diff(s) < 0) and r.masks[0, -1].sum() * 2 < r.masks[0, 0].sum()
    elif motion.startswith("spin_"):
        step = np.diff(a)
        assert np.all(step > 0) if motion.endswith("_cw") else np.all(step < 0)
        assert not np.array_equal(r.masks[0, 0], r.masks[0, 4])
    elif motion == "stay":
        assert np.ptp(c, axis=0).max() < tol and np.ptp(s) < tol and np.ptp(a) < tol
        assert all(np.array_equal(r.frames[0], f) for f in r.frames)
    if not motion.startswith(("spin_", "grow", "shrink", "stay")):
        assert np.ptp(s) < tol and np.ptp(a) < tol


def test_mask_centroid_follows_the_ground_truth_centre():
    r = render_scene(_scene("move_right", {"distance": 0.4}, start=(0.3, 0.5)))
    ys, xs = np.nonzero(r.masks[0, 8])
    assert abs(xs.mean() + 0.5 - r.centers[0, 8, 0]) < 2.0
    assert abs(ys.mean() + 0.5 - r.centers[0, 8, 1]) < 3.0


def _background_frames(scene):
    cam = camera_offsets(scene)
    ch, cw, origin = canvas_geometry(scene, cam)
    canvas = draw_background(scene, ch, cw, origin)
    h, w = scene.size
    return np.stack([canvas[y - origin[1] : y - origin[1] + h, x - origin[0] : x - origin[0] + w] for x, y in cam])


def test_masks_are_exactly_the_painted_pixels():
    rng = np.random.default_rng(21)
    for _ in range(25):
        scene = sample_scene(rng, p_light=0.0)
        r = render_scene(scene)
        bg = _background_frames(scene)
        anything = r.masks.any(axis=0) | r.occluder_mask
        np.testing.assert_array_equal(r.frames[~anything], bg[~anything])
        for k, spec in enumerate(scene.subjects):
            ident = spec.identity
            palette = {COLORS[ident.color], COLORS[ident.color2], COLORS[ident.marking_color], (255, 255, 255), (0, 0, 0)}
            seen = {tuple(p) for p in r.frames[r.masks[k]].tolist()}
            assert seen <= palette, (ident.key, seen - palette)
        # silhouettes cover masks; masks of different subjects never overlap
        assert np.all(r.silhouettes | ~r.masks)
        assert np.all(r.masks.sum(axis=0) <= 1)
        if r.masks.any():
            k, t = np.argwhere(r.masks.any(axis=(2, 3)))[0]
            ys, xs = np.nonzero(r.silhouettes[k, t])
            assert r.bboxes[k, t].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_visible_fraction_drops_when_leaving_the_frame_and_behind_an_occluder():
    r = render_scene(_scene("move_right", {"distance": 0.8}, start=(0.5, 0.5), scale=0.3))
    assert r.visible[0, 0] == pytest.approx(1.0)
    assert r.visible[0, -1] < 0.05
    assert np.all(np.diff(r.visible[0]) <= 1e-9)
    occ = render_scene(_scene("stay", start=(0.5, 0.5), scale=0.4, occluder=Occluder("pillar", 0.5, 0.15)))
    assert 0.3 < occ.visible[0, 0] < 0.8
    assert not (occ.masks[0] & occ.occluder_mask).any()


def test_later_subjects_occlude_earlier_ones():
    subs = [SubjectSpec(STAR, "stay", {}, (0.45, 0.5), 0.4), SubjectSpec(CIRCLE, "stay", {}, (0.55, 0.5), 0.4)]
    r = render_scene(Scene(seed=0, subjects=subs))
    assert r.visible[1, 0] == pytest.approx(1.0)
    assert r.visible[0, 0] < 0.9
    overlap = r.silhouettes[0] & r.silhouettes[1]
    assert overlap.any() and not r.masks[0][overlap].any()


def test_camera_pan_moves_the_world_the_other_way_and_light_changes_brightness():
    still = render_scene(_scene("stay", background=Background("checkered", "sand")))
    pan = render_scene(_scene("stay", background=Background("checkered", "sand"), camera=Camera("left", 0.2)))
    assert pan.centers[0, -1, 0] - pan.centers[0, 0, 0] == pytest.approx(round(0.2 * 64))
    assert np.array_equal(pan.frames[0], still.frames[0]) and not np.array_equal(pan.frames[-1], pan.frames[0])
    dim = render_scene(_scene("stay", light=Light("dims", 0.4)))
    means = dim.frames.reshape(17, -1).mean(axis=1)
    assert np.all(np.diff(means) <= 0) and means[-1] < 0.7 * means[0]
    np.testing.assert_array_equal(dim.masks, still.masks)


def test_interactions_do_what_they_say():
    a, b = STAR, CIRCLE
    swap = Scene(0, [SubjectSpec(a, "swap", {"partner": 1, "arc": 0.1}, (0.25, 0.5), 0.3),
                     SubjectSpec(b, "swap", {"partner": 0, "arc": 0.1}, (0.75, 0.5), 0.3)],
                 interaction=Interaction("swap", (0, 1)))
    r = render_scene(swap)
    np.testing.assert_allclose(r.centers[0, -1], r.centers[1, 0], atol=1e-6)
    np.testing.assert_allclose(r.centers[1, -1], r.centers[0, 0], atol=1e-6)
    assert np.all(np.hypot(*(r.centers[0] - r.centers[1]).T) > 5)  # the arcs keep them apart
    meet = Scene(0, [SubjectSpec(a, "meet", {"partner": 1, "gap": 0.3}, (0.15, 0.4), 0.3),
                     SubjectSpec(b, "meet", {"partner": 0, "gap": 0.3}, (0.85, 0.6), 0.3)],
                 interaction=Interaction("meet", (0, 1)))
    r = render_scene(meet)
    dist = np.hypot(*(r.centers[0] - r.centers[1]).T)
    assert np.all(np.diff(dist) < 0) and dist[-1] == pytest.approx(0.3 * 64)
    chase = Scene(0, [SubjectSpec(a, "move_right", {"distance": 0.3}, (0.45, 0.5), 0.3),
                      SubjectSpec(b, "chase", {"target": 0, "end_gap": 0.32}, (0.1, 0.5), 0.3)],
                  interaction=Interaction("chase", (0, 1)))
    r = render_scene(chase)
    dist = r.centers[0, :, 0] - r.centers[1, :, 0]
    assert np.all(np.diff(r.centers[1, :, 0]) > 0) and np.all(np.diff(dist) < 0) and np.all(dist > 0)
    with pytest.raises(InputError, match="partner"):
        render_scene(Scene(0, [SubjectSpec(a, "meet", {}, (0.5, 0.5), 0.3)]))


def test_render_identity_on_white_mask_matches_and_pose_changes_it():
    img, mask = render_identity(STAR, 96, angle=0.0, scale=0.8)
    assert img.shape == (96, 96, 3) and mask.shape == (96, 96)
    assert np.all(img[~mask] == 255)
    assert np.all(mask[np.any(img != 255, axis=-1)])
    assert 0.15 < mask.mean() < 0.3  # a star at 0.8 of the frame
    rot, rmask = render_identity(STAR, 96, angle=36.0, scale=0.8)
    assert not np.array_equal(rmask, mask)
    small, smask = render_identity(STAR, 96, scale=0.4)
    assert smask.sum() < 0.3 * mask.sum()
    dark, _ = render_identity(STAR, 96, scale=0.8, light=0.5)
    assert dark[mask].mean() < 0.6 * img[mask].mean()
    big, bmask = render_identity(STAR, 512, scale=0.8)
    assert abs(bmask.mean() - mask.mean()) < 0.02  # larger rasters keep the same silhouette share
