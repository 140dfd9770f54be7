import numpy as np
import pytest

from libragen_core.errors import InputError
from libragen_core.io.video import read_video, write_video


def _clip(t=9, h=32, w=48):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(1, h, w, 3), dtype=np.uint8)
    # a slowly moving gradient compresses well, so decoded frames stay close to the originals
    ramp = np.linspace(0, 60, t, dtype=np.float32)[:, None, None, None]
    return np.clip(base.astype(np.float32) * 0.2 + ramp + 80, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".webp", ".gif"])
def test_round_trip_keeps_frame_count_size_and_content(tmp_path, suffix):
    clip = _clip()
    out = write_video(tmp_path / f"clip{suffix}", clip, fps=8)
    frames, fps = read_video(out)
    assert frames.shape == clip.shape
    assert abs(fps - 8) < 0.5
    assert np.abs(frames.astype(float) - clip.astype(float)).mean() < 12
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{suffix}"]


def test_odd_sizes_are_padded_not_rejected(tmp_path):
    frames, _ = read_video(write_video(tmp_path / "odd.mp4", _clip(h=31, w=33)))
    assert frames.shape[1:3] == (32, 34)


def test_missing_folder_is_a_clear_error_and_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_video(tmp_path / "nope" / "a.mp4", _clip())
    assert not (tmp_path / "nope").exists()


def test_bad_suffix_and_bad_shape_are_named(tmp_path):
    with pytest.raises(InputError, match="unsupported video suffix"):
        write_video(tmp_path / "a.avi", _clip())
    with pytest.raises(InputError, match="frames, height, width"):
        write_video(tmp_path / "a.mp4", np.zeros((4, 4, 3), np.uint8))


def test_reading_a_truncated_file_is_a_clear_error(tmp_path):
    good = write_video(tmp_path / "a.mp4", _clip())
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError, match="cannot read video"):
        read_video(bad)


def test_mp4_bytes_do_not_depend_on_earlier_encodes(tmp_path):
    clip = _clip(t=17, h=64, w=64)
    first = write_video(tmp_path / "a.mp4", clip).read_bytes()
    write_video(tmp_path / "other.mp4", _clip(t=33, h=64, w=64)[::-1].copy())
    assert write_video(tmp_path / "b.mp4", clip).read_bytes() == first


def test_written_files_get_the_usual_permissions_not_private(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        out = write_video(tmp_path / "p.gif", _clip(t=2))
    finally:
        os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("suffix", [".webp", ".gif"])
def test_animation_with_repeated_frames_reads_back_every_frame(tmp_path, suffix):
    """Pillow stores a run of identical frames once with the summed duration (ComfyUI's
    SaveAnimatedWEBP writes through it); reading spreads it back onto the constant frame rate."""
    from PIL import Image

    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 80, 80, 160, 240)]
    path = tmp_path / f"clip{suffix}"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 4  # the writer merged the repeated frame
    video, _ = read_video(path)
    assert video.shape == (5, 16, 16, 3)
    assert np.allclose(video[:, 0, 0, 0].astype(int), [0, 80, 80, 160, 240], atol=8)
