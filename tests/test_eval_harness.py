"""Eval harness: baselines, suite, reports and the `libragen eval` command on one case."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("cv2")

from libragen_core.cli import main
from libragen_core.errors import InputError
from libragen_core.eval.harness import CopyPasteGenerator, GroundTruthGenerator, run_eval
from libragen_core.eval.report import write_report
from libragen_core.eval.suite import PROMPT_KINDS, build_suite


def test_suite_is_fixed_and_covers_the_splits():
    a, b = build_suite("small"), build_suite("small")
    assert [c.scene.to_json() for c in a] == [c.scene.to_json() for c in b]
    assert {(c.identity_split, c.n_subjects) for c in a} == {(s, n) for s in ("seen", "heldout") for n in (1, 2, 3)}
    for c in a:
        assert set(c.prompts) == set(PROMPT_KINDS) and len(set(c.prompts.values())) == 4
        assert len(c.refs) == len(c.ref_masks) == len(c.inpair_refs) == c.n_subjects
        assert all(s.identity.is_heldout == (c.identity_split == "heldout") for s in c.scene.subjects)
    with pytest.raises(InputError, match="unknown suite"):
        build_suite("huge")


def test_ground_truth_beats_copy_paste_and_reports_are_written(tmp_path):
    cases = build_suite("small")[:1]
    gt = run_eval(GroundTruthGenerator(cases), cases, model_name="gt", progress=False)
    cp = run_eval(CopyPasteGenerator(), cases, model_name="copy-paste", progress=False)
    g, c = gt["aggregates"]["all"], cp["aggregates"]["all"]
    assert g["n"] == c["n"] == len(PROMPT_KINDS) == 4
    assert g["fidelity"] > 0.9 and g["motion"] > 0.8 and g["copy_paste"] < 0.3 and g["dynamic"] > 0.9
    assert c["copy_paste"] > 0.9 and c["copy_paste_rate"] == 1.0 and c["dynamic"] < 0.2 and c["motion"] < g["motion"] - 0.3
    paths = write_report(gt, cases, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["aggregates"]["prompt"]["user_heldout"]["n"] == data["aggregates"]["prompt"]["anonymous"]["n"] == 1
    assert "| all |" in paths["markdown"].read_text()
    from PIL import Image

    sheet = np.asarray(Image.open(paths["contact_sheet"]))
    assert sheet.shape[0] >= 96 and sheet.std() > 10
    from libragen_core.eval.report import contact_sheet

    # a text-to-video run shows no reference images in the reference cells
    blank = contact_sheet({**gt, "references": "none"}, cases)
    refs_area = (slice(0, 96), slice(0, 96 * cases[0].n_subjects))
    def coloured(img):
        return (img.max(-1).astype(int) - img.min(-1) > 30).mean()

    assert coloured(sheet[refs_area]) > 0.05 and coloured(blank[refs_area]) == 0


def test_ground_truth_generator_rejects_unknown_prompts():
    cases = build_suite("small")[:1]
    with pytest.raises(InputError, match="only knows the suite"):
        GroundTruthGenerator(cases).generate([], "a cat", 0, 17, 64, 64)


def test_cli_eval_one_case(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--model", "copy-paste", "--suite", "small", "--cases", "1", "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").is_file() and (out / "contact_sheet.png").is_file()
    assert "| all |" in capsys.readouterr().out
    assert main(["eval", "--model", "gt", "--cases", "0", "--out", str(out)]) == 2


def test_inpair_references_mode():
    cases = build_suite("small")[:1]
    cp = run_eval(CopyPasteGenerator(), cases, model_name="copy-paste", progress=False, ref_kind="inpair")
    assert cp["references"] == "inpair" and cp["aggregates"]["all"]["copy_paste"] > 0.9
    with pytest.raises(InputError, match="unknown reference kind"):
        run_eval(CopyPasteGenerator(), cases, progress=False, ref_kind="mask")


def test_prompt_kinds_and_text_only_runs(tmp_path, capsys):
    cases = build_suite("small")[:1]
    seen = []

    class Recorder(CopyPasteGenerator):
        def generate(self, refs, prompt, seed, frames, height, width):
            seen.append(len(refs))
            return super().generate(refs, prompt, seed, frames, height, width) if refs else \
                np.full((frames, height, width, 3), 255, np.uint8)

    res = run_eval(Recorder(), cases, progress=False, ref_kind="none", prompt_kinds=("caption",))
    assert seen == [0] and res["n_videos"] == 1 and res["references"] == "none"
    assert res["aggregates"]["all"]["fidelity"] < 0.2  # a blank video does not look like the subject
    with pytest.raises(InputError, match="not in the suite"):
        run_eval(Recorder(), cases, progress=False, prompt_kinds=("captions",))
    out = tmp_path / "run"
    assert main(["eval", "--model", "copy-paste", "--cases", "1", "--prompts", "caption,user_seen", "--out", str(out),
                 "--no-progress"]) == 0
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 2
