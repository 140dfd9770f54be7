import json

import numpy as np
import pytest
from PIL import Image

from libragen_core.errors import InputError
from libragen_core.io.video import read_video
from libragen_core.spriteworld.captions import parse_caption
from libragen_core.spriteworld.dataset import read_manifest, write_dataset
from libragen_core.spriteworld.defects import DEFECT_KINDS
from libragen_core.spriteworld.identity import Identity
from libragen_core.spriteworld.render import render_identity, render_scene
from libragen_core.spriteworld.scene import Scene


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["t2v", "in_pair", "cross_pair", "defects"])
def test_dataset_kinds_write_real_files_and_full_records(tmp_path, kind):
    out = tmp_path / kind
    n = 10 if kind == "defects" else 4
    write_dataset(out, kind, n, seed=5)
    records = read_manifest(out)
    assert [r["index"] for r in records] == list(range(n))
    assert json.loads((out / "dataset.json").read_text())["kind"] == kind
    for rec in records:
        frames, fps = read_video(out / rec["video"])
        assert frames.shape == (17, 64, 64, 3) and abs(fps - 16) < 0.5
        parse_caption(rec["caption"])
        assert rec["split"] == "train" and rec["user_prompts"] and rec["heldout_user_prompts"]
        scene = Scene.from_dict(rec["scene"])
        result = render_scene(scene)
        assert np.round(result.centers, 3).tolist() == rec["tracks"]["centers"]
        if kind != "defects":
            # the video is the rendered scene, up to lossy compression
            assert np.abs(frames.astype(float) - result.frames).mean() < 10  # speckle loses most
        if kind == "in_pair":
            assert len(rec["refs"]) == len(scene.subjects)
            for ref in rec["refs"]:
                img = np.asarray(Image.open(out / ref["path"]))
                x0, y0, x1, y1 = ref["box"]
                np.testing.assert_array_equal(img, result.frames[ref["frame"], y0:y1, x0:x1])
                assert result.masks[ref["subject"], ref["frame"], y0:y1, x0:x1].mean() > 0.15
        elif kind == "cross_pair":
            for ref in rec["refs"]:
                img = np.asarray(Image.open(out / ref["path"]))
                ident = Identity.from_key(rec["scene"]["subjects"][ref["subject"]]["identity"])
                again, _ = render_identity(ident, 64, angle=ref["angle"], scale=ref["scale"], light=ref["light"])
                np.testing.assert_array_equal(img, again)
                assert (img == 255).all(axis=-1).mean() > 0.3  # on white
        else:
            assert rec["refs"] == []
        assert (rec["defect"] is not None) == (kind == "defects")
    if kind == "defects":
        kinds = [r["defect"]["kind"] for r in records]
        assert set(kinds) == {"none", *DEFECT_KINDS}


def test_rerun_gives_identical_files_and_n_items_are_a_prefix(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(a, "in_pair", 4, seed=2, video_format="gif")
    write_dataset(b, "in_pair", 4, seed=2, video_format="gif")
    assert _files(a) == _files(b)
    write_dataset(c, "in_pair", 6, seed=2, video_format="gif")
    assert read_manifest(c)[:4] == read_manifest(a)
    files_c = _files(c)
    assert all(files_c[k] == v for k, v in _files(a).items() if k not in ("dataset.json", "manifest.jsonl"))


def test_mp4_rerun_same_manifest_and_refs(tmp_path):
    write_dataset(tmp_path / "a", "cross_pair", 3, seed=4)
    write_dataset(tmp_path / "b", "cross_pair", 3, seed=4, workers=2)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys()
    for name in fa:
        if name.endswith(".mp4"):
            va, _ = read_video(tmp_path / "a" / name)
            vb, _ = read_video(tmp_path / "b" / name)
            assert np.abs(va.astype(float) - vb).mean() < 2
        else:
            assert fa[name] == fb[name], name


def test_existing_datasets_are_not_silently_overwritten(tmp_path):
    out = tmp_path / "ds"
    write_dataset(out, "t2v", 2, seed=1, video_format="gif")
    before = _files(out)
    with pytest.raises(InputError, match="already holds a complete dataset"):
        write_dataset(out, "t2v", 2, seed=1, video_format="gif")
    assert _files(out) == before
    write_dataset(out, "t2v", 1, seed=3, video_format="gif", overwrite=True)
    assert len(read_manifest(out)) == 1 and sorted(p.name for p in (out / "clips").iterdir()) == ["000000.gif"]
    # an interrupted run (no manifest) resumes only with the same settings
    (out / "manifest.jsonl").unlink()
    with pytest.raises(InputError, match="other settings"):
        write_dataset(out, "t2v", 1, seed=4, video_format="gif")
    write_dataset(out, "t2v", 1, seed=3, video_format="gif")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_dataset(stranger, "t2v", 1)
    with pytest.raises(InputError, match="kind"):
        write_dataset(tmp_path / "x", "nope", 1)


def test_heldout_split_and_scene_options(tmp_path):
    out = tmp_path / "held"
    write_dataset(out, "t2v", 5, seed=0, split="heldout", video_format="gif",
                  scene_options={"n_subjects": 1, "motions": ["grow"], "identity_filter": {"sizes": ["large"]}})
    for rec in read_manifest(out):
        (subject,) = rec["scene"]["subjects"]
        ident = Identity.from_key(subject["identity"])
        assert ident.is_heldout and ident.size == "large" and subject["motion"] == "grow"
        assert rec["split"] == "heldout"


def test_identity_pool_as_keys(tmp_path):
    pool = ["star|blue|orange|plain|none|large", "circle|red|yellow|striped|eyes|large"]
    pool = [k for k in pool if not Identity.from_key(k).is_heldout]
    write_dataset(tmp_path / "pool", "t2v", 3, video_format="gif", scene_options={"identities": pool, "n_subjects": 1})
    assert {r["scene"]["subjects"][0]["identity"] for r in read_manifest(tmp_path / "pool")} <= set(pool)
