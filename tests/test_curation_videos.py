"""`libragen curate` on a folder of real videos: every filter catches its defect on mp4 footage,
captions and references come from files beside the videos, the review page and decisions work,
and the result is a manifest the training stages read."""
from __future__ import annotations

import json
import warnings

import pytest

from libragen_core.cli import main as cli
from libragen_core.curation.decisions import decisions_document
from libragen_core.curation.videos import VIDEO_THRESHOLDS, curate_videos
from libragen_core.errors import InputError
from libragen_core.io.video import write_video
from tests.real_data import footage, reference_image

DEFECTS = {  # file -> (footage kind, extra footage settings, the filter that must reject it)
    "cut.mp4": ("cut", {}, "shot_cut"),
    "static.mp4": ("static", {}, "static"),
    "shaky.mp4": ("shaky", {}, "motion_extreme"),
    "blur.mp4": ("blur", {}, "blur"),
    "noise.mp4": ("noise", {}, "noise"),
    "text.mp4": ("text", {}, "text_overlay"),
    "small.mp4": ("clean", {"h": 120, "w": 160}, "resolution"),
    "short.mp4": ("clean", {"seconds": 2.0}, "duration"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("videos")
    (root / "refs").mkdir()
    Image.fromarray(reference_image((230, 60, 40))).save(root / "refs" / "ball.png")
    caption = "Ref 1: a red ball. Video: Ref 1[the ball] rolls to the right past coloured boxes."
    for k, name in enumerate(("a.mp4", "b.mp4", "sub/c.mp4")):
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, footage("clean", seed=k), fps=12.0)
    # a: cross-pair (an image beside the videos), b: in-pair (a box in its own frame 10), c: caption only
    (root / "a.json").write_text(json.dumps({"caption": caption, "references": [
        {"image": "refs/ball.png", "label": "the ball"}]}))
    (root / "b.json").write_text(json.dumps({"caption": caption, "references": [
        {"frame": 10, "box": [40, 100, 110, 170], "label": "the ball"}]}))
    (root / "sub" / "c.txt").write_text(caption)
    for name, (kind, kw, _) in DEFECTS.items():
        write_video(root / name, footage(kind, **kw), fps=12.0)
        (root / name).with_suffix(".json").write_text(json.dumps({"caption": caption, "references": [
            {"image": "refs/ball.png", "label": "the ball"}]}))
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    return root


@pytest.mark.slow
def test_curate_videos_filters_defects_and_writes_a_training_manifest(folder, tmp_path):
    out = tmp_path / "out"
    report = curate_videos(folder, out, progress=False)
    removed = {f["name"]: f["removed"] for f in report["filters"]}
    rejected = {json.loads(line)["id"]: json.loads(line)["curation"]["rejected_by"]
                for line in (out / "rejected.jsonl").read_text().splitlines()}
    assert rejected == {**{n: f for n, (_, _, f) in DEFECTS.items()}, "broken.mp4": "unreadable"}
    assert all(removed[f] == 1 for _, _, f in DEFECTS.values())
    incomplete = [json.loads(line) for line in (out / "incomplete.jsonl").read_text().splitlines()]
    assert [(r["id"], r["curation"]["incomplete"].split(":")[0]) for r in incomplete] == [("sub/c.mp4", "no references")]
    accepted = [json.loads(line) for line in (out / "accepted.jsonl").read_text().splitlines()]
    assert [r["id"] for r in accepted] == ["a.mp4", "b.mp4"]
    assert (out / "review" / "index.html").is_file() and len(list((out / "review" / "sheets").iterdir())) == 2
    assert "rejected: 9" in (out / "report.md").read_text()

    # the accepted clips are a manifest the training stages read (paths relative to it)
    from training.common.cache import FileFacts
    from training.common.s2v_manifest import S2VManifest
    from training.common.schema import DataConfig

    data = DataConfig(frames=17, fps=4.0, resolution=(64, 80), heldout=0)
    cross = S2VManifest(out / "accepted.jsonl", "cross_pair", data, FileFacts(None))
    inp = S2VManifest(out / "accepted.jsonl", "in_pair", data, FileFacts(None))
    assert len(cross) == 1 and len(inp) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no bad entry
        assert cross.plan(0) is not None and inp.plan(0) is not None
        t = inp.load(0)
    assert t.frames.shape[0] == 17 and t.refs[0].shape == (70, 70, 3)

    # the review page's decisions finish the run: final.jsonl
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps(decisions_document(report["run_id"], {"a.mp4": "reject", "b.mp4": "accept"})))
    assert cli(["curate", "--out", str(out), "--decisions", str(decisions)]) == 0
    final = [json.loads(line) for line in (out / "final.jsonl").read_text().splitlines()]
    assert [r["id"] for r in final] == ["b.mp4"] and final[0]["references"][0]["frame"] == 10


def test_curate_videos_cli_and_errors(folder, tmp_path, capsys):
    # only the container facts are needed to reject on resolution and duration; thresholds by name
    out = tmp_path / "cli"
    code = cli(["curate", str(folder / "sub"), "--out", str(out), "--quiet", "--no-review",
                "--threshold", "duration=100"])
    assert code == 0 and "accepted 0 of 1 videos" in capsys.readouterr().out
    assert json.loads((out / "rejected.jsonl").read_text())["curation"]["rejected_by"] == "duration"
    with pytest.raises(InputError, match="unknown filter thresholds \\['blurr'\\]"):
        curate_videos(folder, tmp_path / "x", thresholds={"blurr": 1.0})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no videos"):
        curate_videos(tmp_path / "empty", tmp_path / "y")
    assert set(VIDEO_THRESHOLDS) >= {"shot_cut", "static", "motion_extreme", "blur", "noise", "text_overlay",
                                     "resolution", "duration"}
