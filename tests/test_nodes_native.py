"""The native-path nodes' plain-Python parts, without ComfyUI: conditioning checks, the stand-in
text features, validation. What needs ComfyUI's classes (the CFGGuider subclass, core VAE) runs in
tests/integration/test_native_guider_parity.py and test_native_server.py."""
from __future__ import annotations

import sys

import pytest
import torch

from libragen_core.errors import InputError
from libragen_core.models.wan_vae import WAN21_LATENTS_MEAN
from tests.pack import load_pack

pack = load_pack()
guider = pack.nodes.native_guider
subjects = pack.nodes.native_subjects
standin = pack.nodes.standin_nodes


def cond(width=4096, refs=None, tokens=8):
    options = {} if refs is None else {"time_dim_concat": refs}
    return [[torch.randn(1, tokens, width), options]]


def three(refs=2, h=8, w=8):
    r = torch.randn(1, 16, refs, h, w)
    return {"positive": cond(refs=r), "negative_text": cond(refs=r), "negative_img_text": cond(refs=torch.zeros_like(r))}


def test_the_pack_imports_without_comfyui_and_leaves_the_guider_class_unloaded():
    assert "comfy" not in sys.modules
    assert f"{pack.__name__}.nodes.comfy_guider" not in sys.modules
    with pytest.raises(InputError, match="runs inside ComfyUI"):
        c = three()
        pack.NODE_CLASS_MAPPINGS["LibraGenDynamicCFGGuider"]().get_guider(
            None, c["positive"], c["negative_text"], c["negative_img_text"], "libragen")


def test_check_conditions_gives_the_reference_shape():
    assert guider.check_conditions(three(refs=3), 4096, 16) == (16, 3, 8, 8)
    plain = {"positive": cond(), "negative_text": cond(), "negative_img_text": cond()}
    assert guider.check_conditions(plain, 4096, 16) is None


@pytest.mark.parametrize("case, message", [
    ("width", "negative_text holds text features of width 768 but this Wan model takes 4096"),
    ("count", "the three conditionings must carry the same references (positive: 2 reference frame(s)"),
    ("size", "negative_img_text: 2 reference frame(s) of 6x8 latents (64x48 pixels)"),
    ("missing", "negative_text: no references"),
    ("five", "positive carries 5 references; at most 4 are supported"),
    ("channels", "positive carries references with 48 latent channels but the model works on 16"),
    ("not_conditioning", "negative_img_text is not a ComfyUI CONDITIONING"),
    ("not_latents", "positive carries references (time_dim_concat) that are not Wan video latents"),
    ("mixed", "positive combines entries with different references"),
])
def test_bad_conditionings_name_the_input(case, message):
    c = three()
    if case == "width":
        c["negative_text"] = cond(width=768, refs=c["negative_text"][0][1]["time_dim_concat"])
    elif case == "count":
        c["negative_text"] = cond(refs=torch.randn(1, 16, 3, 8, 8))
    elif case == "size":
        c["negative_img_text"] = cond(refs=torch.zeros(1, 16, 2, 6, 8))
    elif case == "missing":
        c["negative_text"] = cond()
    elif case == "five":
        c = three(refs=5)
    elif case == "channels":
        c = {k: cond(refs=torch.randn(1, 48, 2, 8, 8)) for k in c}
    elif case == "not_conditioning":
        c["negative_img_text"] = torch.randn(1, 8, 4096)
    elif case == "not_latents":
        c["positive"] = cond(refs=torch.randn(16, 2, 8))
    else:
        c["positive"] = c["positive"] + cond()
    with pytest.raises(InputError) as err:
        guider.check_conditions(c, 4096, 16)
    assert message in str(err.value)


def test_check_video_compares_references_with_the_latent():
    guider.check_video((16, 2, 8, 8), (1, 16, 21, 8, 8))
    guider.check_video(None, (1, 16, 21, 60, 104))
    with pytest.raises(InputError, match=r"latent_image is 60x104 \(832x480 pixels\)"):
        guider.check_video((16, 2, 8, 8), (1, 16, 21, 60, 104))


def test_same_conditioning_tells_one_negative_given_twice_from_two():
    c = three()
    assert guider.same_conditioning(c["negative_text"], c["negative_text"])
    copy = [[t.clone(), {k: v.clone() for k, v in o.items()}] for t, o in c["negative_text"]]
    assert guider.same_conditioning(c["negative_text"], copy)
    assert not guider.same_conditioning(c["negative_text"], c["negative_img_text"])
    assert not guider.same_conditioning(c["negative_text"], cond())


def test_with_values_copies_and_null_references_are_the_latent_mean():
    c = cond()
    marked = subjects.with_values(c, prompt_type="negative")
    assert marked[0][1] == {"prompt_type": "negative"} and c[0][1] == {}
    assert marked[0][0] is c[0][0]  # the features are shared, not copied
    null = subjects.null_references(torch.randn(1, 16, 3, 4, 4))
    assert null.shape == (1, 16, 3, 4, 4)
    assert torch.equal(null[0, :, 2, 1, 1], torch.tensor(WAN21_LATENTS_MEAN))


def test_standin_features_are_seeded_by_the_text():
    a = standin.standin_features("a red circle rolls", 16, 4096)
    assert a.shape == (1, 16, 4096)
    assert torch.equal(a, standin.standin_features("a red circle rolls", 16, 4096))
    assert not torch.equal(a, standin.standin_features("a blue star", 16, 4096))
    assert a[0, :5].abs().sum(dim=-1).min() > 0 and not a[0, 5:].any()  # 4 words + end, then zero padding
    (out,) = pack.NODE_CLASS_MAPPINGS["LibraGenStandInText"]().encode("a red circle rolls", 16, 768)
    assert out[0][0].shape == (1, 16, 768) and out[0][1] == {}


def test_subject_conditioning_validates_its_widgets():
    node = pack.NODE_CLASS_MAPPINGS["LibraGenSubjectConditioning"]
    assert node.VALIDATE_INPUTS(width=832, height=480, length=81, batch_size=1, labels="a") is True
    assert "length 80 is not 4k+1; use 77 or 81" in node.VALIDATE_INPUTS(length=80)
    assert "width 830 is not a multiple of 16" in node.VALIDATE_INPUTS(width=830)
    assert "labels has 2 lines but 1 reference image(s)" in node.VALIDATE_INPUTS(labels="a\nb\n")
    assert node.VALIDATE_INPUTS(labels="a\nb", image_2=None) is True  # image_2 linked


@pytest.mark.parametrize("case, message", [
    ("huge", "GiB of memory is free; lower width, height, length or batch_size"),
    ("positive", "positive is not a ComfyUI CONDITIONING"),
    ("mask", "mask_2 is connected but image_2 is not"),
    ("labels", "labels has 2 lines but 1 reference image(s) are connected"),
    ("batch", "image_1 holds a batch of 5 images; one image per input"),
])
def test_subject_conditioning_refuses_bad_inputs_before_encoding(case, message):
    node = pack.NODE_CLASS_MAPPINGS["LibraGenSubjectConditioning"]()
    image = torch.rand(1, 32, 48, 3)
    kw, size = {}, (64, 64, 5, 1)
    positive = cond()
    if case == "huge":
        size = (8192, 8192, 8189, 4096)  # 2.2 PB of latent
    elif case == "positive":
        positive = "a prompt"
    elif case == "mask":
        kw["mask_2"] = torch.ones(1, 32, 48)
    elif case == "labels":
        kw["labels"] = "a\nb"
    else:
        image = torch.rand(5, 32, 48, 3)
    with pytest.raises(InputError) as err:
        node.condition(positive, cond(), None, *size, image, **kw)  # no VAE needed to refuse
    assert message in str(err.value)
