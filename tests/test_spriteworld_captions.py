import json
import re

import numpy as np
import pytest

from libragen_core.errors import InputError
from libragen_core.spriteworld.captions import (
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    anonymous_caption,
    caption_facts,
    caption_vocabulary,
    conjugate,
    parse_caption,
    scene_caption,
    user_prompts,
)
from libragen_core.spriteworld.identity import Identity
from libragen_core.spriteworld.motions import MOTIONS, SINGLE_MOTIONS
from libragen_core.spriteworld.scene import (
    Background,
    Camera,
    Interaction,
    Light,
    Prop,
    Scene,
    SubjectSpec,
    sample_scene,
)

STAR = Identity("star", "blue", "orange", "striped", "dot", "large")
CIRCLE = Identity("circle", "red", "yellow", "plain", "eyes", "medium")


def _words(text):
    return re.findall(r"[a-z][a-z-]*", text.lower())


def test_caption_of_a_hand_built_scene_is_exact():
    scene = Scene(
        seed=1,
        subjects=[SubjectSpec(STAR, "zigzag_right", {"distance": 0.3, "amplitude": 0.1}, (0.3, 0.5), 0.4),
                  SubjectSpec(CIRCLE, "spin_cw", {}, (0.7, 0.5), 0.3)],
        background=Background("gradient", "sunny yellow", [Prop("tree", 0.5, 0.8, 0.3)]),
        camera=Camera("left", 0.15),
        light=Light("dims", 0.3),
    )
    assert scene_caption(scene) == (
        "Ref 1: a large blue star with orange stripes and a white dot.\n"
        "Ref 2: a medium red circle with a yellow outline and two eyes.\n"
        "Video: Ref 1[the blue star] zig-zags to the right while Ref 2[the red circle] spins clockwise "
        "on a sunny yellow gradient with a tree; the camera pans left; the light dims."
    )


def test_anonymous_caption_keeps_everything_but_the_looks():
    text = ("Ref 1: a large blue star with orange stripes and a white dot.\n"
            "Ref 2: a medium red circle with a yellow outline and two eyes.\n"
            "Video: Ref 2[the red circle] chases Ref 1[the blue star] on a sunny yellow gradient; the camera pans left.")
    assert anonymous_caption(text) == (
        "Ref 1: the subject in reference image 1.\n"
        "Ref 2: the subject in reference image 2.\n"
        "Video: Ref 2[the subject] chases Ref 1[the subject] on a sunny yellow gradient; the camera pans left."
    )
    assert parse_caption(anonymous_caption(text)).bindings == [(2, "the subject"), (1, "the subject")]
    with pytest.raises(InputError, match="Video"):
        anonymous_caption("a star moves left")


def test_interaction_captions():
    subs = [SubjectSpec(STAR, "move_right", {"distance": 0.3}, (0.5, 0.5), 0.3),
            SubjectSpec(CIRCLE, "chase", {"target": 0, "end_gap": 0.3}, (0.2, 0.5), 0.3)]
    chase = Scene(0, subs, interaction=Interaction("chase", (0, 1)))
    assert "Video: Ref 2[the red circle] chases Ref 1[the blue star] to the right on " in scene_caption(chase)
    subs = [SubjectSpec(STAR, "swap", {"partner": 1, "arc": 0.1}, (0.2, 0.5), 0.3),
            SubjectSpec(CIRCLE, "swap", {"partner": 0, "arc": 0.1}, (0.8, 0.5), 0.3)]
    swap = Scene(0, subs, interaction=Interaction("swap", (0, 1)))
    assert "Video: Ref 1[the blue star] and Ref 2[the red circle] swap places on " in scene_caption(swap)


def test_every_sampled_caption_parses_and_binds_each_subject():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng)
        parsed = parse_caption(scene_caption(scene))
        assert sorted(parsed.refs) == list(range(1, len(scene.subjects) + 1))
        for k, s in enumerate(scene.subjects, start=1):
            assert parsed.refs[k] == s.identity.description
        assert {k for k, _ in parsed.bindings} == set(parsed.refs)
        for k, phrase in parsed.bindings:
            assert phrase == scene.subjects[k - 1].identity.ref_name
        for s in scene.subjects:
            if not MOTIONS[s.motion].interaction and scene.interaction is None:
                assert MOTIONS[s.motion].third in parsed.video
        assert parsed.video.endswith(".")


def test_parse_caption_names_the_problem():
    with pytest.raises(InputError, match="Video"):
        parse_caption("Ref 1: a red circle.")
    with pytest.raises(InputError, match="never appear"):
        parse_caption("Ref 1: a red circle.\nRef 2: a blue star.\nVideo: Ref 1[the red circle] spins on a plain sand background.")
    with pytest.raises(InputError, match="no 'Ref 3:' line"):
        parse_caption("Ref 1: a red circle.\nVideo: Ref 1[the red circle] chases Ref 3[the star] on a sand gradient.")
    with pytest.raises(InputError, match="numbered"):
        parse_caption("Ref 2: a red circle.\nVideo: Ref 2[the red circle] spins on a sand gradient.")


def test_user_prompts_are_deterministic_plain_and_in_the_vocabulary():
    vocab = set(caption_vocabulary()["words"])
    rng = np.random.default_rng(4)
    seen_train, seen_held = set(), set()
    for _ in range(150):
        scene = sample_scene(rng)
        train, held = user_prompts(scene), user_prompts(scene, "heldout")
        assert train == user_prompts(Scene.from_json(scene.to_json()))
        assert len(train) == len(TRAIN_TEMPLATES) and len(held) == len(HELDOUT_TEMPLATES)
        for text in train + held:
            assert "Ref" not in text and "{" not in text
            unknown = set(_words(text)) - vocab
            assert not unknown, (text, unknown)
        assert not (set(_words(scene_caption(scene))) - vocab)
        seen_train.update(train)
        seen_held.update(held)
    # held-out phrasings carry their own fixed openings; no training phrasing does
    openings = ("I want ", "can you make it so ", "please have ")
    assert all(t.startswith(openings) for t in seen_held)
    assert not any(t.startswith(openings) for t in seen_train)


def test_vocabulary_is_data_with_a_canonical_phrase_per_motion():
    vocab = caption_vocabulary()
    json.dumps(vocab)
    assert set(vocab["motions"]) == set(SINGLE_MOTIONS)
    assert vocab["motions"]["zigzag_right"] == "zig-zags to the right"
    assert vocab["motions"]["move_up_left"] == "moves up and to the left"
    assert vocab["motions"]["stay"] == "stays still"
    assert vocab["interactions"] == {"chase": "chases", "swap": "swap places", "meet": "meet in the middle"}
    assert "sunny yellow" in vocab["background_colors"] and "star" in vocab["shapes"]
    assert vocab["camera"]["left"] == "the camera pans left"
    assert {"move", "zig-zag", "circle", "spin", "grow", "shrink", "bounce", "stay", "chase", "swap", "meet"} <= set(vocab["motion_verbs"])
    assert set(vocab["templates"]["heldout"]).isdisjoint(vocab["templates"]["train"])


def test_conjugation():
    assert conjugate("go left") == ("goes left", "going left")
    assert conjugate("zigzag rightward") == ("zigzags rightward", "zigzagging rightward")
    assert conjugate("slide to the left") == ("slides to the left", "sliding to the left")
    assert conjugate("hop up and down") == ("hops up and down", "hopping up and down")


def test_caption_facts_invert_the_caption():
    rng = np.random.default_rng(8)
    for _ in range(300):
        scene = sample_scene(rng)
        facts = caption_facts(scene_caption(scene))
        assert facts["motions"] == {k: s.motion for k, s in enumerate(scene.subjects)}
        inter = scene.interaction
        assert facts["interaction"] == (None if inter is None else {"kind": inter.kind, "subjects": list(inter.subjects)})
        bg = scene.background
        assert facts["background"] == {"kind": bg.kind, "color": bg.color, "props": [p.kind for p in bg.props]}
        assert facts["camera"] == scene.camera.pan and facts["light"] == scene.light.change
        assert facts["occluder"] == (scene.occluder.kind if scene.occluder else None)
    with pytest.raises(InputError, match="outside the caption grammar"):
        caption_facts("Ref 1: a red circle.\nVideo: Ref 1[the red circle] dances wildly on a sand gradient.")
    with pytest.raises(InputError, match="unknown background"):
        caption_facts("Ref 1: a red circle.\nVideo: Ref 1[the red circle] grows on the moon.")
