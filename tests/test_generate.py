"""End-to-end generation through the CLI, on the embedded model (or its untrained placeholder)."""
import json
import os
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
    ],
)
def test_bad_arguments_name_the_problem_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "x.mp4"
    code = main(["generate", "--ref", str(STAR), "--prompt", PROMPT, "--steps", "1", "--out", str(out), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def refused_at_parse(capsys, *args: str) -> str:
    """argparse's refusal (exit status 2) of a generate command line: raised before any model loads."""
    with pytest.raises(SystemExit) as e:
        main(["generate", "--prompt", PROMPT, *args])
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        # values that used to become the model card's defaults without a word
        (["--frames", "0"], "argument --frames: must be a whole number of at least 1; got '0'"),
        (["--width", "0"], "argument --width: must be a whole number of at least 1; got '0'"),
        (["--steps", "0"], "argument --steps: must be a whole number of at least 1; got '0'"),
        (["--fps", "0"], "argument --fps: must be a finite number above 0 and at most 240; got '0'"),
        # values that used to end in a traceback
        (["--frames", "-3"], "argument --frames: must be a whole number of at least 1; got '-3'"),
        (["--height", "-16"], "argument --height: must be a whole number of at least 1"),
        (["--shift", "nan"], "argument --shift: must be a finite number above 0; got 'nan'"),
        (["--fps", "inf"], "argument --fps: must be a finite number"),
        (["--seed", "-1"], "argument --seed: must be a whole number of at least 0"),
        (["--cfg", "nope"], "neither a preset"),
        (["--solver", "rk99"], "unknown solver 'rk99'; use one of dpmpp_2m, euler, heun, unipc"),
    ],
)
def test_counts_and_numbers_are_checked_when_parsed(tmp_path, capsys, args, message):
    err = refused_at_parse(capsys, "--out", str(tmp_path / "x.mp4"), *args)
    assert message in err
    assert not any(tmp_path.iterdir())


def test_output_path_is_checked_before_anything_runs(tmp_path, capsys):
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    err = refused_at_parse(capsys, "--out", str(folder))
    assert f"cannot write {folder}: it is an existing folder; name a file inside it" in err
    assert "does not exist" in refused_at_parse(capsys, "--out", str(tmp_path / "missing" / "a.mp4"))
    assert "unsupported suffix" in refused_at_parse(capsys, "--out", str(tmp_path / "a.avi"))
    # a folder that takes no new files: /proc/self refuses them to every user, root included
    err = refused_at_parse(capsys, "--out", "/proc/self/a.mp4")
    assert "cannot write /proc/self/a.mp4: the folder /proc/self does not take new files" in err
    if os.geteuid() != 0:  # permissions do not bind root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert "does not take new files" in refused_at_parse(capsys, "--out", str(locked / "a.mp4"))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"] + (["locked"] if os.geteuid() != 0 else [])


def test_cfg_file_that_is_not_utf8_is_named(tmp_path, capsys):
    bad = tmp_path / "sched.json"
    bad.write_bytes(b'{"s_img": 1, "s_txt": "\xff"}')
    err = refused_at_parse(capsys, "--cfg", str(bad), "--out", str(tmp_path / "x.mp4"))
    assert f"argument --cfg: CFG schedule file {bad} is not UTF-8 text (byte 0xff at offset 23)" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"s_img": 1}')
    assert "missing field 's_txt'" in refused_at_parse(capsys, "--cfg", str(broken), "--out", str(tmp_path / "x.mp4"))


def test_overflowing_cfg_schedule_writes_no_video_and_names_the_schedule(tmp_path):
    sched = tmp_path / "huge.json"
    sched.write_text('{"type": "cfg_schedule", "s_img": 1.0, "s_txt": 1e30}')
    out = tmp_path / "nan.mp4"
    proc = subprocess.run([sys.executable, "-m", "libragen_core", "generate", "--prompt", PROMPT, "--frames", "5",
                           "--steps", "3", "--cfg", str(sched), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sampling produced NaN or infinite latents at step" in proc.stderr
    assert '"s_txt": {"type": "constant", "value": 1e+30}' in proc.stderr and "s_txt 1e+30 at that step" in proc.stderr
    assert "nothing was decoded or written" in proc.stderr
    assert list(tmp_path.iterdir()) == [sched]


def test_bad_reference_files_and_output_folder(tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["generate", "--ref", str(empty), "--prompt", "x", "--out", str(tmp_path / "a.mp4")]) == 2
    assert "empty.png" in capsys.readouterr().err
    refs = [str(STAR)] * 5
    assert main(["generate", *sum((["--ref", r] for r in refs), []), "--prompt", "x",
                 "--out", str(tmp_path / "a.mp4")]) == 2
    assert "at most 4" in capsys.readouterr().err
    assert not (tmp_path / "a.mp4").exists()


def test_more_labels_than_references_in_the_library_call(bundle):
    from libragen_core.pipeline import encode_subjects

    with pytest.raises(InputError, match="2 labels were given for 1 reference"):
        encode_subjects(bundle, [np.zeros((8, 8, 3), np.uint8)], 64, 64, labels=["a", "b"])
