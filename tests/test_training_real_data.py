"""Real-video data for the subject-to-video stages: frame sampling, aspect-ratio buckets, the JSONL
manifest (in-pair crops, cross-pair images, masks), held-out entries and bad entries, on mp4 clips
written by PyAV."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from libragen_core.errors import CheckpointError, ConfigError, InputError
from libragen_core.io.video import read_video, write_video
from tests.real_data import CLIPS, clip_frames, subject_box, write_real_dataset
from training.common.buckets import BucketSampler, bucket_sizes, pick_bucket, resize_crop, sample_indices
from training.common.cache import FileFacts
from training.common.data import BadEntryError
from training.common.s2v_manifest import S2VManifest, read_entries
from training.common.schema import DataConfig

DATA = DataConfig(frames=9, fps=8.0, resolution=(48, 64), bucket_step=16, heldout=1, max_bad_fraction=0.5)


def test_frame_sampling_resamples_strides_and_refuses_short_clips():
    # 24 fps -> 8 fps: every third frame; 9 frames need 25 source frames
    assert sample_indices(30, 24.0, 9, fps=8.0) == [0, 3, 6, 9, 12, 15, 18, 21, 24]
    assert sample_indices(24, 24.0, 9, fps=8.0) is None
    assert sample_indices(30, 24.0, 9, fps=8.0, start="center") == [2, 5, 8, 11, 14, 17, 20, 23, 26]
    # 12 fps -> 8 fps: 1.5 source frames per output frame, nearest frame
    assert sample_indices(17, 12.0, 5, fps=8.0) == [0, 2, 3, 5, 6]
    assert sample_indices(20, 30.0, 5, fps=0.0, stride=4) == [0, 4, 8, 12, 16]
    with pytest.raises(ConfigError, match="4k\\+1"):
        sample_indices(40, 24.0, 8)


def test_buckets_cover_aspect_ratios_within_the_area():
    buckets = bucket_sizes((480, 832), 16, 2.5)
    assert (480, 832) in buckets and (832, 480) in buckets
    assert all(h % 16 == 0 and w % 16 == 0 and h * w <= 480 * 832 for h, w in buckets)
    assert all(1 / 2.5 <= w / h <= 2.5 for h, w in buckets)
    assert pick_bucket(1080, 1920, buckets) == (480, 832)  # 16:9 -> Wan's 480p
    assert pick_bucket(1920, 1080, buckets) == (832, 480)
    assert pick_bucket(1000, 1000, buckets) == (624, 624)
    with pytest.raises(ConfigError, match="multiples of data.bucket_step"):
        bucket_sizes((480, 830), 16)


def test_resize_crop_keeps_the_centre():
    f = np.zeros((2, 60, 100, 3), np.uint8)
    f[:, 25:35, 45:55] = 255  # a white patch in the middle
    out = resize_crop(f, (32, 32))
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    ys, xs = np.nonzero(out[0, ..., 0] > 128)
    assert abs(ys.mean() - 15.5) < 1.5 and abs(xs.mean() - 15.5) < 1.5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_real_dataset(tmp_path_factory.mktemp("real"))


def _source(manifest, kind, part="all", data=DATA, tmp=None):
    return S2VManifest(manifest, kind, data, FileFacts(tmp / "files.json" if tmp else None), part)


def test_manifest_kinds_shapes_crops_and_masks(dataset, tmp_path):
    inp = _source(dataset, "in_pair", tmp=tmp_path)
    cross = _source(dataset, "cross_pair", tmp=tmp_path)
    in_names = {e.video for e in inp.entries}
    assert in_names == {"clips/wide.mp4", "clips/square.mp4", "clips/wide2.mp4", "clips/corrupt.mp4"}
    assert {e.video for e in cross.entries} == {"clips/tall.mp4", "clips/pano.mp4", "clips/square2.mp4",
                                                "clips/lost_ref.mp4"}
    buckets = bucket_sizes(DATA.resolution, 16, DATA.max_aspect)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plans = {inp.entries[i].video: inp.plan(i) for i in range(len(inp))}
    wide = plans["clips/wide.mp4"]
    assert wide.shape == (9, *pick_bucket(48, 80, buckets)) and wide.shape[1] < wide.shape[2]  # landscape bucket
    assert plans["clips/square.mp4"].shape == (9, 48, 48)  # another aspect ratio, another bucket
    assert len(wide.ref_ids) == 1 and wide.anonymous.startswith("Ref 1: the subject in reference image 1.")

    i = [e.video for e in inp.entries].index("clips/wide.mp4")
    t = inp.load(i)
    assert t.frames.shape == (9, *wide.shape[1:], 3) and t.frames.dtype == np.uint8
    # the crop is exactly the box of source frame 3 (decoded independently here)
    src, _ = read_video(dataset.parent / "clips" / "wide.mp4")
    x0, y0, x1, y1 = subject_box(48, 80, 3)
    assert np.array_equal(t.refs[0], src[3, y0 - 2:y1 + 2, x0 - 2:x1 + 2])
    # the sampled frames are the 24 -> 8 fps frames, resized into the bucket: the square moves right
    centre = [np.nonzero((f[..., 0] > 180) & (f[..., 1] < 100))[1].mean() for f in t.frames]
    assert all(b > a for a, b in zip(centre, centre[1:]))
    # a mask whites out everything but the subject
    j = [e.video for e in inp.entries].index("clips/square.mp4")
    ref = inp.load(j).refs[0]
    assert (ref[:2] == 255).all() and (ref[:, :2] == 255).all()  # the 2-pixel margin outside the mask
    assert ref[ref.shape[0] // 2, ref.shape[1] // 2].tolist() != [255, 255, 255]
    # cross-pair: the reference image as it is
    k = [e.video for e in cross.entries].index("clips/tall.mp4")
    assert cross.load(k).refs[0].shape == (40, 40, 3)
    # same content -> same ids; other settings -> other ids
    again = _source(dataset, "in_pair", tmp=tmp_path).plan(i)
    assert again.clip_id == wide.clip_id
    other = _source(dataset, "in_pair", data=DataConfig(frames=5, fps=8.0, resolution=(48, 64), max_bad_fraction=0.5),
                    tmp=tmp_path).plan(i)
    assert other.clip_id != wide.clip_id


def test_bad_entries_are_reported_with_their_path(dataset, tmp_path):
    inp = _source(dataset, "in_pair", tmp=tmp_path)
    c = [e.video for e in inp.entries].index("clips/corrupt.mp4")
    with pytest.warns(UserWarning, match=r"manifest\.jsonl:\d+ .*corrupt\.mp4: the video cannot be decoded"):
        assert inp.plan(c) is None
    cross = _source(dataset, "cross_pair", tmp=tmp_path)
    lost = [e.video for e in cross.entries].index("clips/lost_ref.mp4")
    with pytest.warns(UserWarning, match=r"never_copied\.png: the image of reference 1 is missing"):
        assert cross.plan(lost) is None
    assert len(cross.bad.entries) == 1

    fatal = DataConfig(**{**DATA.__dict__, "on_bad": "fatal"})
    with pytest.raises(BadEntryError, match=r"corrupt\.mp4: the video cannot be decoded.*on_bad='fatal'"):
        _source(dataset, "in_pair", data=fatal).plan(c)

    # more broken entries: box outside the frame, frame past the end, too few frames, empty caption,
    # a line that is not JSON
    root = dataset.parent
    write_video(root / "clips" / "short.mp4", clip_frames(48, 64, 12, (200, 0, 0)), fps=24.0)
    lines = [
        {"video": "clips/wide.mp4", "caption": "Ref 1: x. Video: Ref 1[x] moves.",
         "references": [{"frame": 2, "box": [60, 10, 90, 30], "label": "x"}]},
        {"video": "clips/wide.mp4", "caption": "Ref 1: x. Video: Ref 1[x] moves.",
         "references": [{"frame": 99, "box": [0, 0, 10, 10], "label": "x"}]},
        {"video": "clips/short.mp4", "caption": "Ref 1: x. Video: Ref 1[x] moves.",
         "references": [{"frame": 0, "box": [0, 0, 10, 10], "label": "x"}]},
        {"video": "clips/square.mp4", "caption": "  ", "references": [{"frame": 0, "box": [0, 0, 10, 10]}]},
    ]
    bad = root / "bad.jsonl"
    bad.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{not json\n", encoding="utf-8")
    loose = DataConfig(**{**DATA.__dict__, "max_bad_fraction": 1.0, "heldout": 0})
    with pytest.warns(UserWarning) as caught:
        src = _source(bad, "in_pair", data=loose)
        assert [src.plan(i) for i in range(len(src))] == [None] * 4
    msgs = "\n".join(str(w.message) for w in caught)
    assert "bad.jsonl:5: not JSON" in msgs
    assert "box [60.0, 10.0, 90.0, 30.0] is outside the 80x48 frame" in msgs
    assert "frame 99 is past the last frame (29)" in msgs
    assert "short.mp4: too few frames: 12 at 24 fps, and 9 frames at 8 fps need 25" in msgs
    assert "the caption is empty" in msgs
    strict = DataConfig(**{**DATA.__dict__, "max_bad_fraction": 0.0, "heldout": 0})
    with pytest.raises(BadEntryError, match="2 bad entries"), pytest.warns(UserWarning):
        src = _source(bad, "in_pair", data=strict)
        for i in range(len(src)):
            src.plan(i)


def test_heldout_entries_are_fixed_and_disjoint(dataset, tmp_path):
    train = _source(dataset, "cross_pair", "train", tmp=tmp_path)
    held = _source(dataset, "cross_pair", "heldout", tmp=tmp_path)
    assert len(held) == 1 and len(train) == 3
    assert not {e.video for e in held.entries} & {e.video for e in train.entries}
    # the same entry is held out whatever the manifest's order
    lines = dataset.read_text().splitlines()
    shuffled = tmp_path / "manifest.jsonl"
    shuffled.write_text("\n".join(reversed(lines)) + "\n")
    for rel in ("clips", "refs", "masks"):
        (tmp_path / rel).symlink_to(dataset.parent / rel)
    again = _source(shuffled, "cross_pair", "heldout", tmp=tmp_path)
    assert [e.video for e in again.entries] == [e.video for e in held.entries]


def test_manifest_errors_name_the_fix(tmp_path):
    with pytest.raises(InputError, match="manifest not found: .*nothing.jsonl; set data.manifest"):
        read_entries(tmp_path / "nothing.jsonl")
    assert set(CLIPS)  # the fixture's clips are the ones the docs describe


def test_bucket_sampler_batches_one_bucket_and_resumes_exactly():
    groups = {"9x32x48-r1": [0, 1, 2, 3, 4], "9x48x32-r1": [5, 6, 7], "9x32x32-r2": [8]}
    a = BucketSampler(groups, 2, seed=3)
    seq = [a.next() for _ in range(9)]
    for batch in seq:
        assert len(batch) == 2 and len({g for g, items in groups.items() for i in batch if i in items}) == 1
    assert 8 not in sum(seq, [])  # a bucket smaller than a batch never trains
    b = BucketSampler(groups, 2, seed=3)
    for _ in range(4):
        b.next()
    c = BucketSampler(groups, 2, seed=3)
    c.load_state_dict(b.state_dict())
    assert [c.next() for _ in range(5)] == seq[4:]
    with pytest.raises(CheckpointError, match="batch"):
        BucketSampler(groups, 1, seed=3).load_state_dict(a.state_dict())
    with pytest.raises(InputError, match="no bucket holds a whole batch of 6 clips"):
        BucketSampler(groups, 6)
