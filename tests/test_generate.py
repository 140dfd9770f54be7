"""End-to-end generation through the CLI, on the embedded model (or its untrained placeholder)."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from libragen_core.cli import main
from libragen_core.errors import InputError
from libragen_core.io.video import read_video

ROOT = Path(__file__).resolve().parents[1]
STAR = ROOT / "examples" / "refs" / "blue_striped_star.png"
PROMPT = "Video: Ref 1[the blue striped star] moves to the right."


@pytest.fixture(scope="module")
def bundle():
    from libragen_core.models.bundle import load_embedded

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_embedded()


def test_cli_writes_a_playable_video_with_the_requested_frames(tmp_path):
    out = tmp_path / "a.mp4"
    proc = subprocess.run([sys.executable, "-m", "libragen_core", "generate", "--ref", str(STAR), "--prompt", PROMPT,
                           "--steps", "2", "--frames", "9", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["frames"] == 9
    frames, fps = read_video(out)
    assert frames.shape == (9, 64, 64, 3)
    assert list(tmp_path.iterdir()) == [out]


def test_same_seed_same_video_other_seed_differs(bundle):
    from libragen_core.pipeline import generate

    kw = dict(frames=5, steps=2)
    a = generate(bundle, [np.full((30, 20, 3), 90, np.uint8)], PROMPT, seed=3, **kw).frames
    b = generate(bundle, [np.full((30, 20, 3), 90, np.uint8)], PROMPT, seed=3, **kw).frames
    c = generate(bundle, [np.full((30, 20, 3), 90, np.uint8)], PROMPT, seed=4, **kw).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_text_to_video_without_references(bundle):
    from libragen_core.pipeline import generate

    assert generate(bundle, [], "a red circle bounces", frames=5, steps=1).frames.shape == (5, 64, 64, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "18"], "18 frames: use 17 or 21"),
        (["--width", "72"], "width 72 is not a multiple of 16"),
        (["--label", "a", "--label", "b"], "2 --label values for 1 --ref"),
        (["--cfg", "nope"], "neither a preset"),
        (["--solver", "rk99"], "unknown solver"),
    ],
)
def test_bad_arguments_name_the_problem_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "x.mp4"
    code = main(["generate", "--ref", str(STAR), "--prompt", PROMPT, "--steps", "1", "--out", str(out), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_bad_reference_files_and_output_folder(tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["generate", "--ref", str(empty), "--prompt", "x", "--out", str(tmp_path / "a.mp4")]) == 2
    assert "empty.png" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--out", str(tmp_path / "missing" / "a.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    refs = [str(STAR)] * 5
    assert main(["generate", *sum((["--ref", r] for r in refs), []), "--prompt", "x",
                 "--out", str(tmp_path / "a.mp4")]) == 2
    assert "at most 4" in capsys.readouterr().err
    assert not (tmp_path / "a.mp4").exists()


def test_more_labels_than_references_in_the_library_call(bundle):
    from libragen_core.pipeline import encode_subjects

    with pytest.raises(InputError, match="2 labels were given for 1 reference"):
        encode_subjects(bundle, [np.zeros((8, 8, 3), np.uint8)], 64, 64, labels=["a", "b"])
