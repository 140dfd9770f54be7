"""Pipeline, CLI, decisions file and review page, on a small real dataset (mp4 clips)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from libragen_core.cli import main
from libragen_core.curation.analysis import Clip
from libragen_core.curation.decisions import decisions_document, read_decisions
from libragen_core.curation.filters import THRESHOLDS, run_filters
from libragen_core.curation.pipeline import apply_decisions, curate_dataset, evaluate_record
from libragen_core.curation.review_page import render_html
from libragen_core.errors import InputError
from libragen_core.spriteworld.dataset import read_manifest, write_dataset
from libragen_core.spriteworld.defects import make_defect
from libragen_core.spriteworld.render import render_scene
from libragen_core.spriteworld.scene import sample_scene


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate")
    write_dataset(root / "data", "defects", 9, seed=4242)  # one clean clip + one of each defect
    return root / "data"


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["curate", str(dataset), "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_outputs_partition_the_dataset(dataset, run):
    accepted, rejected = _jsonl(run / "accepted.jsonl"), _jsonl(run / "rejected.jsonl")
    ids = [r["id"] for r in read_manifest(dataset)]
    assert sorted(r["id"] for r in accepted + rejected) == sorted(ids)
    report = json.loads((run / "report.json").read_text())
    assert report["n_accepted"] == len(accepted) and report["n_rejected"] == len(rejected)
    assert sum(f["removed"] for f in report["filters"]) == len(rejected)
    for rec in rejected:
        assert rec["curation"]["rejected_by"] in {f["name"] for f in report["filters"]}
        assert rec["curation"]["reasons"][0].startswith(rec["curation"]["rejected_by"] + ":")
    for rec in accepted + rejected:
        assert (run / rec["video"]).is_file()  # paths are relative to the output folder
    assert "| shot_cut |" in (run / "report.md").read_text()
    html = (run / "review" / "index.html").read_text()
    assert html.count('"sheet": "sheets/') == len(accepted)
    assert len(list((run / "review" / "sheets").glob("*.png"))) == len(accepted)
    assert not list(run.rglob(".*partial*"))  # nothing half-written left behind


def test_labels_and_scene_are_not_read(dataset):
    rec = read_manifest(dataset)[1]  # the shot_cut clip
    blind = {k: rec[k] for k in ("id", "video", "caption")}
    assert evaluate_record(str(dataset), rec, THRESHOLDS) == evaluate_record(str(dataset), blind, THRESHOLDS)


def test_rerun_needs_overwrite(dataset, run):
    with pytest.raises(InputError, match="already holds a curation run"):
        curate_dataset(dataset, run, progress=False)


def test_missing_manifest_is_named(tmp_path):
    assert main(["curate", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    with pytest.raises(InputError, match="no manifest.jsonl"):
        curate_dataset(tmp_path, tmp_path / "o", progress=False)


def test_unknown_threshold_is_refused(dataset, tmp_path):
    with pytest.raises(InputError, match="unknown filter thresholds"):
        curate_dataset(dataset, tmp_path / "o", thresholds={"blurr": 1.0}, progress=False)


def test_decisions_cli_round_trip(run, tmp_path, capsys):
    report = json.loads((run / "report.json").read_text())
    accepted = [r["id"] for r in _jsonl(run / "accepted.jsonl")]
    assert accepted, "the clean clip should pass"
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps(decisions_document(report["run_id"], {accepted[0]: "reject"})))
    assert main(["curate", "--out", str(run), "--decisions", str(path)]) == 0
    assert "1 rejected on review" in capsys.readouterr().out
    assert [r["id"] for r in _jsonl(run / "final.jsonl")] == accepted[1:]
    summary = json.loads((run / "final_report.json").read_text())
    assert summary["manual_rejects"] == [accepted[0]]


@pytest.mark.parametrize("doc, message", [
    ("not json", "not a JSON decisions file"),
    (json.dumps({"format": "other"}), "not a LibraGen review decisions file"),
    (json.dumps({"format": "libragen-curation-decisions", "version": 9, "decisions": {}}), "version 9"),
    (json.dumps({"format": "libragen-curation-decisions", "version": 1, "run_id": "r", "decisions": {"a": "maybe"}}), "'accept' or 'reject'"),
    (json.dumps({"format": "libragen-curation-decisions", "version": 1, "run_id": "r", "decisions": {"zz": "reject"}}), "did not send to review"),
])
def test_bad_decisions_files(tmp_path, doc, message):
    path = tmp_path / "d.json"
    path.write_text(doc)
    with pytest.raises(InputError, match=message):
        read_decisions(path, run_id="r", known_ids={"a"})


def test_missing_decisions_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_decisions(tmp_path / "nope.json")


def test_apply_decisions_needs_a_run(tmp_path):
    with pytest.raises(InputError, match="holds no curation run"):
        apply_decisions(tmp_path, tmp_path / "d.json")


@pytest.mark.parametrize("caption", ["</script><b>hi", "<!--<script>", "a\u2028b\u2029c & <x> \"q\" 'q'"])
def test_review_page_data_cannot_leave_its_script(caption):
    run_id = "run __DATA__ __TITLE__ </title><!--"
    page = render_html([{"id": "<id>", "sheet": "sheets/x.png", "caption": caption, "frames": 1, "scores": []}], run_id)
    head, rest = page.split('<script type="application/json" id="data">', 1)
    block, tail = rest.split("</script>", 1)
    assert not set(block) & set("<>&\u2028\u2029"), block  # nothing the HTML parser or old JS could act on
    data = json.loads(block)
    assert data["items"][0]["caption"] == caption and data["items"][0]["id"] == "<id>" and data["run_id"] == run_id
    assert page.count("</script>") == 2 and "<!--" not in block + tail  # the two real ones, no comment opened
    assert "<title>LibraGen review: run __DATA__ __TITLE__ &lt;/title&gt;&lt;!--</title>" in head


def test_clean_render_passes_and_each_defect_fails_its_filter():
    rng = np.random.default_rng([77, 1])
    scene = sample_scene(rng, 1, size=(64, 64), p_camera=0.0, p_occluder=0.0, p_props=0.0, motions=["move_right", "move_left"],
                         identity_filter={"sizes": ["large"]})
    clean = Clip(render_scene(scene).frames, make_defect("none", scene, rng).caption)
    assert all(r.passed for r in run_filters(clean, cascade=False)), [r for r in run_filters(clean, cascade=False) if not r.passed]
    for kind, name in (("blur", "blur"), ("noise", "noise"), ("shot_cut", "shot_cut")):
        clip = make_defect(kind, scene, np.random.default_rng([77, 2]))
        results = {r.name: r for r in run_filters(Clip(clip.frames, clip.caption), cascade=False)}
        assert not results[name].passed and results[name].reason, (kind, results[name])
