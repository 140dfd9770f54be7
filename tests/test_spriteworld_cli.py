import json

import numpy as np
from PIL import Image

from libragen_core.cli import main
from libragen_core.io.video import read_video
from libragen_core.spriteworld.dataset import read_manifest
from libragen_core.spriteworld.preview import contact_sheet
from libragen_core.spriteworld.render import render_scene
from libragen_core.spriteworld.scene import sample_scene


def test_preview_writes_a_contact_sheet(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["spriteworld", "preview", "--out", str(out), "--n", "2", "--seed", "3"]) == 0
    img = np.asarray(Image.open(out))
    # 9 frames of 64 px magnified twice, plus gaps, per row
    assert img.shape[1] == 9 * (128 + 4) + 4 and img.shape[0] > 2 * 128
    assert "wrote" in capsys.readouterr().out
    assert main(["spriteworld", "preview", "--out", str(out), "--defects"]) == 0


def test_contact_sheet_shows_the_frames():
    frames = render_scene(sample_scene(np.random.default_rng(0))).frames
    sheet = contact_sheet([(frames, "a caption")], step=4, zoom=1)
    np.testing.assert_array_equal(sheet[4 : 4 + 64, 4 : 4 + 64], frames[0])
    np.testing.assert_array_equal(sheet[4 : 4 + 64, 4 + 68 : 4 + 68 + 64], frames[4])


def test_dataset_render_and_vocab_commands(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["spriteworld", "dataset", "--out", str(out), "--kind", "in_pair", "--n", "2", "--subjects", "1",
            "--sizes", "large", "--motions", "move_left,move_right", "--no-interactions", "--simple"]
    assert main(args) == 0
    records = read_manifest(out)
    assert len(records) == 2 and all(r["scene"]["subjects"][0]["motion"] in ("move_left", "move_right") for r in records)
    for r in records:
        scene = r["scene"]
        assert scene["camera"]["pan"] is None and scene["occluder"] is None and scene["background"]["props"] == []
        assert scene["background"]["kind"] in ("plain", "gradient")
    assert main(args) == 2  # refuses to overwrite a complete dataset
    assert "already holds a complete dataset" in capsys.readouterr().err
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps(records[0]["scene"]))
    assert main(["spriteworld", "render", "--scene", str(scene_file), "--out", str(tmp_path / "clip.gif")]) == 0
    frames, _ = read_video(tmp_path / "clip.gif")
    assert frames.shape == (17, 64, 64, 3)
    assert main(["spriteworld", "vocab", "--out", str(tmp_path / "vocab.json")]) == 0
    assert "zig-zags to the right" in json.loads((tmp_path / "vocab.json").read_text())["motions"].values()
    assert main(["spriteworld", "preview", "--out", str(tmp_path / "x.png"), "--size", "abc"]) == 2
