import numpy as np
import pytest

from libragen_core.errors import InputError
from libragen_core.spriteworld.captions import caption_facts, parse_caption, scene_caption
from libragen_core.spriteworld.defects import DEFECT_KINDS, gaussian_blur, make_defect
from libragen_core.spriteworld.identity import Identity
from libragen_core.spriteworld.motions import SINGLE_MOTIONS
from libragen_core.spriteworld.render import render_scene
from libragen_core.spriteworld.scene import Interaction, Scene, SubjectSpec, sample_scene


def _clean_and_defect(kind, seed):
    scene = sample_scene(np.random.default_rng(seed), p_light=0.0)
    clean = render_scene(scene)
    return scene, clean, make_defect(kind, scene, np.random.default_rng(seed + 1000))


def _sharpness(frames):
    f = frames.astype(np.float32).mean(axis=-1)
    return np.abs(np.diff(f, axis=1)).mean() + np.abs(np.diff(f, axis=2)).mean()


@pytest.mark.parametrize("seed", range(4))
def test_each_defect_changes_the_clip_as_labelled(seed):
    for kind in DEFECT_KINDS:
        scene, clean, d = _clean_and_defect(kind, seed)
        assert d.label["kind"] == kind and d.frames.shape == clean.frames.shape and d.frames.dtype == np.uint8
        parse_caption(d.caption)
        f, c = d.frames.astype(np.int32), clean.frames.astype(np.int32)
        if kind == "shot_cut":
            k = d.label["frame"]
            assert np.array_equal(f[:k], c[:k]) and not np.array_equal(f[k:], c[k:])
            jumps = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
            assert jumps.argmax() == k - 1
            assert d.label["other_scene"]["background"]["color"] != scene.background.color or seed  # new look
        elif kind == "frozen":
            k = d.label["from_frame"]
            assert all(np.array_equal(f[k], g) for g in f[k:])
            assert not all(np.array_equal(d.result.frames[k], g) for g in d.result.frames[k:])
        elif kind == "text_overlay":
            x0, y0, x1, y1 = d.label["box"]
            changed = np.any(f != d.result.frames, axis=-1)
            assert changed.any(axis=0).sum() > 20
            outside = changed.copy()
            outside[:, y0:y1, x0:x1] = False
            assert not outside.any()
            # a static overlay: the same pixels change in the first and last frame (bar ink-coloured ones)
            both = (changed[0] & changed[-1]).sum()
            assert both >= 0.8 * max(changed[0].sum(), changed[-1].sum())
        elif kind == "blur":
            assert _sharpness(f) < 0.75 * _sharpness(c)
        elif kind == "noise":
            diff = np.abs(f - c).mean()
            assert 0.5 * d.label["sigma"] < diff < 1.0 * d.label["sigma"]
        elif kind == "leaves_frame":
            vis = d.result.visible[d.label["subject"]]
            assert vis[0] > 0.99 and vis[-1] < 0.05 and vis[d.label["frame"]] < 0.5 <= vis[d.label["frame"] - 1]
        elif kind == "too_small":
            area = d.result.silhouettes.sum(axis=(2, 3)) / (scene.size[0] * scene.size[1])
            assert area.max() < 0.01 and d.label["scale"] < 0.11
        elif kind == "wrong_caption":
            assert np.array_equal(f, c)
            assert d.caption != scene_caption(scene) == d.label["true_caption"]
            k = d.label["subject"]
            wrong_video = d.caption.splitlines()[-1]
            if d.label["mismatch"] == "subject":
                assert scene.subjects[k].identity.ref_name not in wrong_video
            else:
                assert d.caption.splitlines()[:-1] == scene_caption(scene).splitlines()[:-1]
                said = caption_facts(d.caption)["motions"][k]
                assert said != scene.subjects[k].motion and said in SINGLE_MOTIONS


def test_none_is_clean_and_defects_are_deterministic():
    scene = sample_scene(np.random.default_rng(3))
    clean = make_defect("none", scene, np.random.default_rng(0))
    np.testing.assert_array_equal(clean.frames, render_scene(scene).frames)
    for kind in DEFECT_KINDS:
        a = make_defect(kind, scene, np.random.default_rng(9))
        b = make_defect(kind, scene, np.random.default_rng(9))
        np.testing.assert_array_equal(a.frames, b.frames)
        assert a.caption == b.caption and a.label == b.label
    with pytest.raises(InputError, match="unknown defect"):
        make_defect("sepia", scene, np.random.default_rng(0))


def test_frozen_gives_a_static_scene_motion_first():
    ident = Identity("square", "blue", "orange", "striped", "eyes", "large")
    scene = Scene(seed=0, subjects=[SubjectSpec(ident, "stay", {}, (0.5, 0.5), 0.45)])
    d = make_defect("frozen", scene, np.random.default_rng(1))
    assert d.scene.subjects[0].motion == "spin_cw" and "spins clockwise" in d.caption
    assert not all(np.array_equal(d.result.frames[0], g) for g in d.result.frames)


def test_gaussian_blur_keeps_flat_images_and_mean():
    flat = np.full((2, 16, 16, 3), 120, dtype=np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 2.0), flat)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    out = gaussian_blur(img, 1.5)
    assert abs(out.astype(float).mean() - img.astype(float).mean()) < 2.0
    assert out.std() < 0.5 * img.std()


def test_leaving_subject_is_brought_to_front_and_interactions_are_renumbered():
    idents = [Identity("star", "blue", "orange", "striped", "dot", "large"),
              Identity("circle", "red", "yellow", "plain", "eyes", "medium"),
              Identity("heart", "green", "white", "spotted", "none", "medium")]
    subs = [SubjectSpec(idents[0], "stay", {}, (0.5, 0.5), 0.4),
            SubjectSpec(idents[1], "move_right", {"distance": 0.3}, (0.45, 0.3), 0.3),
            SubjectSpec(idents[2], "chase", {"target": 1, "end_gap": 0.3}, (0.15, 0.3), 0.3)]
    scene = Scene(0, subs, size=(64, 96), interaction=Interaction("chase", (1, 2)))
    d = make_defect("leaves_frame", scene, np.random.default_rng(0))
    assert [s.identity for s in d.scene.subjects] == [idents[1], idents[2], idents[0]]
    assert d.scene.interaction.subjects == (0, 1) and d.scene.subjects[1].params["target"] == 0
    assert d.label["subject"] == 2 and d.result.visible[2, 0] > 0.99 and d.result.visible[2, -1] < 0.05
    assert "Ref 2[the green heart] chases Ref 1[the red circle] to the right" in d.caption
    np.testing.assert_allclose(d.result.centers[:2], render_scene(scene).centers[1:], atol=1e-9)
