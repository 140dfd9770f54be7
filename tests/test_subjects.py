import pytest
import torch

from libragen_core.conditioning.subjects import (
    Subjects,
    append_references,
    frame_positions,
    overwrite_references,
    trim_to_video,
)
from libragen_core.errors import InputError


def refs(r, c=16, h=6, w=8):
    return torch.randn(r, c, 1, h, w)


def test_empty_subjects_is_text_to_video():
    for s in (Subjects(), Subjects.none(), Subjects(torch.zeros(0, 16, 1, 6, 8))):
        assert s.count == 0 and s.latents is None and s.labels == ()
        assert s.frame_pos(5).tolist() == [0, 1, 2, 3, 4]
        s.check_video((2, 16, 5, 6, 8))


def test_frames_layout_and_default_labels():
    lat = refs(3)
    s = Subjects(lat)
    assert s.count == 3 and s.labels == ("Ref 1", "Ref 2", "Ref 3")
    frames = s.frames(2)
    assert frames.shape == (2, 16, 3, 6, 8)
    for k in range(3):
        assert torch.equal(frames[1, :, k], lat[k, :, 0])
    # [R, C, h, w] (frame axis left out) is accepted as the same thing.
    assert torch.equal(Subjects(lat.squeeze(2)).latents, lat)


def test_frame_positions_continue_after_the_video_with_offsets():
    assert frame_positions(4, 2).tolist() == [0, 1, 2, 3, 4, 5]
    s = Subjects(refs(2), labels=["cat", "hat"], rope_offsets=[10, -0.5])
    assert s.frame_pos(4).tolist() == [0, 1, 2, 3, 14, 4.5]
    assert s.with_rope_offsets(None).frame_pos(4).tolist() == [0, 1, 2, 3, 4, 5]
    assert s.labels == ("cat", "hat")


def test_append_overwrite_trim_round_trip():
    video = torch.randn(2, 16, 5, 6, 8)
    s = Subjects(refs(2))
    seq = append_references(video, s.frames(1))
    assert seq.shape == (2, 16, 7, 6, 8)
    assert torch.equal(trim_to_video(seq, 5), video)
    noisy = torch.randn_like(seq)
    fixed = overwrite_references(noisy, s.frames(2))
    assert torch.equal(fixed[:, :, :5], noisy[:, :, :5])
    assert torch.equal(fixed[:, :, 5:], s.frames(2))
    assert not torch.equal(noisy[:, :, 5:], fixed[:, :, 5:])  # a new tensor: the input keeps its noise
    assert torch.equal(overwrite_references(noisy, s.frames(2)[:, :, :0]), noisy)


def test_five_references_are_refused():
    with pytest.raises(InputError, match="5 references were given; at most 4 are supported"):
        Subjects(refs(5))


def test_shape_mismatches_are_named():
    s = Subjects(refs(2, c=16, h=6, w=8))
    with pytest.raises(InputError, match="reference latents have 16 channels but the video latents have 4"):
        s.check_video((1, 4, 5, 6, 8))
    with pytest.raises(InputError, match=r"reference latents are 6x8 \(h x w\) but the video latents are 6x10"):
        s.check_video((1, 16, 5, 6, 10))
    with pytest.raises(InputError, match=r"shape \[R, C, 1, h, w\]"):
        Subjects(torch.randn(2, 16, 3, 6, 8))
    with pytest.raises(InputError, match="must be a torch tensor"):
        Subjects([[1.0]])


def test_labels_and_offsets_must_match_the_count():
    with pytest.raises(InputError, match="1 labels were given for 2 references"):
        Subjects(refs(2), labels=["only one"])
    with pytest.raises(InputError, match="3 RoPE offsets were given for 2 references"):
        Subjects(refs(2), rope_offsets=[0, 1, 2])
    with pytest.raises(InputError, match=r"rope_offsets\[1\] must be a finite number"):
        Subjects(refs(2), rope_offsets=[0, float("nan")])
