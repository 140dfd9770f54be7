"""Training data: deterministic order, bad dataset entries, latent cache, the cheap motion check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from libragen_core.errors import CheckpointError
from libragen_core.spriteworld.dataset import write_dataset
from libragen_core.spriteworld.identity import COLORS
from training.common.data import BadEntryError, EpochSampler, LatentCache, frames_to_tensor, tensor_to_frames
from training.spriteworld.clips import ClipSpec, ManifestClips, ProceduralClips
from training.spriteworld.validation import STRAIGHT_MOVES, motion_check


def test_epoch_sampler_resumes_mid_epoch():
    a = EpochSampler(10, 3, seed=4)
    seq = [a.next().tolist() for _ in range(7)]
    b = EpochSampler(10, 3, seed=4)
    for _ in range(4):
        b.next()
    c = EpochSampler(10, 3, seed=4)
    c.load_state_dict(b.state_dict())
    assert [c.next().tolist() for _ in range(3)] == seq[4:]
    assert sorted(sum(seq[:3], [])) == sorted(set(sum(seq[:3], [])))  # no repeats inside an epoch
    with pytest.raises(CheckpointError, match="batch=3"):
        EpochSampler(10, 2, seed=4).load_state_dict(a.state_dict())


def test_procedural_clips_are_deterministic_and_follow_the_spec():
    spec = ClipSpec(size=(32, 32), frames=5, motions=("move_left",), sizes=("large",))
    a, b = ProceduralClips(spec)[3], ProceduralClips(spec)[3]
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption
    assert a.frames.shape == (5, 32, 32, 3) and "moves to the left" in a.caption
    x = frames_to_tensor(a.frames)
    assert x.shape == (1, 3, 5, 32, 32) and np.array_equal(tensor_to_frames(x)[0], a.frames)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "t2v"
    write_dataset(out, "t2v", 5, 0, size=(32, 32), n_frames=5)
    return out


def test_bad_entries_are_named_and_skipped_or_fatal(small_dataset, tmp_path):
    import shutil

    ds = tmp_path / "broken"
    shutil.copytree(small_dataset, ds)
    clips = sorted((ds / "clips").iterdir())
    clips[1].write_bytes(b"")  # empty
    clips[3].write_bytes(b"not a video at all")  # corrupt
    src = ManifestClips(ds, on_bad="skip", max_bad_fraction=0.5, size=(32, 32), frames=5)
    with pytest.warns(UserWarning, match=r"bad dataset entry .*000001\.mp4: the file is empty"):
        assert src.load(1) is None
    with pytest.warns(UserWarning, match=r"000003\.mp4: cannot be decoded"):
        assert src.load(3) is None
    assert src.load(0).frames.shape == (5, 32, 32, 3)
    assert [p.endswith(n) for (p, _), n in zip(src.bad, ("000001.mp4", "000003.mp4"))] == [True, True]

    fatal = ManifestClips(ds, on_bad="fatal")
    with pytest.raises(BadEntryError, match=r"000001\.mp4: the file is empty .*on_bad='fatal'"):
        fatal.load(1)
    strict = ManifestClips(ds, on_bad="skip", max_bad_fraction=0.0)
    with pytest.warns(UserWarning):
        strict.load(1)  # one bad entry is always tolerated
    with pytest.raises(BadEntryError, match="2 bad entries"), pytest.warns(UserWarning):
        strict.load(3)
    wrong = ManifestClips(ds, on_bad="fatal", frames=17)
    with pytest.raises(BadEntryError, match="5 frames, expected 17"):
        wrong.load(0)


def test_latent_cache_skips_bad_entries_and_rebuilds_damaged_shards(small_dataset, tmp_path):
    import shutil

    ds = tmp_path / "broken"
    shutil.copytree(small_dataset, ds)
    sorted((ds / "clips").iterdir())[2].write_bytes(b"")
    encode = lambda px: px[:, :, ::4, ::8, ::8] * 2  # noqa: E731  a stand-in encoder: strided pixels
    with pytest.warns(UserWarning, match="000002.mp4"):
        cache = LatentCache(tmp_path / "cache").build(ManifestClips(ds, max_bad_fraction=0.5), 5, encode, "v1",
                                                      shard_size=2, batch=2, progress=False)
    assert len(cache) == 4 and cache.indices == [0, 1, 3, 4]
    lat, caps = cache.batch([0, 2])
    assert lat.shape == (2, 3, 2, 4, 4) and caps[1] == ManifestClips(ds).records[3]["caption"]
    shard = tmp_path / "cache" / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning, match="shard-00001.safetensors is damaged"):
        again = LatentCache(tmp_path / "cache").build(ManifestClips(ds, max_bad_fraction=0.5), 5, encode, "v1",
                                                      shard_size=2, batch=2, progress=False)
    assert torch.equal(again.latents, cache.latents)


def test_latent_cache_of_procedural_clips_is_reused_on_the_next_build(tmp_path):
    # ProceduralClips settings hold tuples; index.json reads them back as lists: still the same cache
    src = ProceduralClips(ClipSpec(motions=tuple(STRAIGHT_MOVES), sizes=("large",), size=(32, 32), frames=5))
    calls = []

    def encode(px):
        calls.append(px.shape[0])
        return px[:, :, ::4, ::8, ::8]

    first = LatentCache(tmp_path / "cache").build(src, 4, encode, "v1", shard_size=2, batch=2, progress=False)
    assert sum(calls) == 4
    again = LatentCache(tmp_path / "cache").build(src, 4, encode, "v1", shard_size=2, batch=2, progress=False)
    assert sum(calls) == 4 and torch.equal(again.latents, first.latents)
    LatentCache(tmp_path / "cache").build(src, 4, encode, "v2", shard_size=2, batch=2, progress=False)
    assert sum(calls) == 8  # another VAE: encoded anew


def test_motion_check_is_right_on_real_clips_and_rejects_static_ones():
    spec = ClipSpec(motions=tuple(STRAIGHT_MOVES), sizes=("large",))
    src = ProceduralClips(spec)
    ok = []
    for i in range(16):
        c = src[i]
        s = c.scene.subjects[0]
        ok.append(motion_check(c.frames, COLORS[s.identity.color], s.motion).direction_ok)
        wrong = "move_right" if s.motion != "move_right" else "move_left"
        assert not motion_check(c.frames, COLORS[s.identity.color], wrong).direction_ok
    assert np.mean(ok) >= 0.9
    frozen = np.repeat(src[0].frames[:1], 17, axis=0)
    s = src[0].scene.subjects[0]
    r = motion_check(frozen, COLORS[s.identity.color], s.motion)
    assert r.color_ok and not r.direction_ok


@pytest.mark.slow
def test_parallel_clips_render_ahead_in_workers_and_match_the_source():
    """run.render_workers (issue 21): the GPU run renders clips on the machine's other cores."""
    from training.common.prefetch import ParallelClips, parallel

    src = ProceduralClips(ClipSpec(seed=3, size=(32, 32), frames=5, n_subjects=0, simple=False, interactions=True))
    assert parallel(src, 0) is src
    pc = parallel(src, 1)
    assert isinstance(pc, ParallelClips) and pc.settings() == src.settings() and pc.spec is src.spec
    pc.ahead = 4
    try:
        for i in (0, 1, 2, 3, 4, 2, 9):  # in order, then one asked again, then a jump
            got, want = pc[i], src[i]
            assert np.array_equal(got.frames, want.frames) and got.caption == want.caption and got.index == i
            assert np.array_equal(got.subject_mask, want.subject_mask)
        assert {10, 11, 12} <= set(pc.pending) and max(pc.pending) == 12  # ahead of the newest index asked for
        pc[20]
        assert min(pc.pending) >= 20 - pc.ahead  # items left behind are dropped
    finally:
        pc.close()
