"""Job spec parsing, validation messages, input application and stable ids for `libragen batch`."""
from __future__ import annotations

import json

import pytest

from libragen_core.batch.jobs import (
    JobSpecError,
    Target,
    bind_uploads,
    derive_job_id,
    find_prompt_target,
    find_seed_target,
    load_workflow,
    parse_jobs,
    resolve_job,
)
from libragen_core.errors import InputError

# A text-to-image graph in API format as ComfyUI exports it (two text encoders: auto-detection
# must pick the one wired into `positive`).
WORKFLOW = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                                               "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                               "positive": ["6", 0], "negative": ["7", 0],
                                               "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "out", "images": ["8", 0]}},
    "12": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
}


def write_jobs(tmp_path, lines):
    (tmp_path / "refs").mkdir(exist_ok=True)
    (tmp_path / "refs" / "cat.png").write_bytes(b"\x89PNG fake but present")
    (tmp_path / "refs" / "dog.png").write_bytes(b"\x89PNG another one")
    p = tmp_path / "jobs.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_shortcuts_images_and_inputs_apply_to_a_copy(tmp_path):
    p = write_jobs(tmp_path, [{"id": "a", "prompt": "a dog", "seed": 42, "images": {"12.image": "refs/cat.png"},
                               "inputs": {"3.steps": 4, "5.width": 320}}])
    [job] = parse_jobs(p, WORKFLOW)
    assert job.id == "a" and job.line == 1
    assert job.values == {Target("6", "text"): "a dog", Target("3", "seed"): 42, Target("3", "steps"): 4,
                          Target("5", "width"): 320}
    assert job.images == {Target("12", "image"): tmp_path / "refs" / "cat.png"}
    r = resolve_job(WORKFLOW, job)
    assert r.graph["6"]["inputs"]["text"] == "a dog" and r.graph["3"]["inputs"]["seed"] == 42
    assert r.graph["7"]["inputs"]["text"] == "blurry"  # the negative prompt is untouched
    assert WORKFLOW["6"]["inputs"]["text"] == "a cat"  # the workflow itself is never modified
    bound = bind_uploads(r.graph, {sha: f"libragen_batch/{sha[:6]}.png" for sha in r.files})
    assert bound["12"]["inputs"]["image"].startswith("libragen_batch/")
    assert bound["10"]["inputs"]["image"] == "example.png"


def test_every_problem_is_reported_with_line_and_key(tmp_path):
    p = write_jobs(tmp_path, [
        {"id": "ok", "seed": 1},
        {"inputs": {"99.seed": 3}},                      # line 2: unknown node
        {"inputs": {"3.sede": 3}},                       # line 3: unknown input
        "{not json",                                      # line 4
        {"images": {"12.image": "refs/missing.png"}},    # line 5
        {"inputs": {"3.steps": "many"}},                 # line 6: wrong type
        {"inputs": {"3.model": "x"}},                    # line 7: would cut a link
        {"id": "../up", "seed": 2},                      # line 8: unsafe id
        {"seed": -1},                                     # line 9
        {"promt": "typo"},                                # line 10: unknown key
        {"id": "ok", "seed": 7},                         # line 11: duplicate id
    ])
    with pytest.raises(JobSpecError) as e:
        parse_jobs(p, WORKFLOW)
    msg = str(e.value)
    assert "nothing was queued" in msg
    assert "jobs.jsonl line 2: inputs key '99.seed': node '99' is not in the workflow" in msg
    assert "line 3: inputs key '3.sede': node 3 (KSampler) has no input 'sede'" in msg and "seed" in msg
    assert "line 4: not valid JSON" in msg
    assert "line 5: images key '12.image'" in msg and "missing.png does not exist" in msg
    assert "line 6: inputs key '3.steps': input 3.steps expects a number, got 'many'" in msg
    assert "line 7: inputs key '3.model'" in msg and "cut that link" in msg
    assert "line 8: id '../up' cannot name an output folder" in msg
    assert "line 9: 'seed' must be a non-negative integer" in msg
    assert "line 10: unknown key 'promt'" in msg
    assert "line 11: job id 'ok' is already used on line 1" in msg


def test_derived_ids_are_stable_and_content_based(tmp_path):
    a = {"prompt": "x", "seed": 1, "images": {"12.image": "refs/cat.png"}}
    b = {"images": {"12.image": "refs/cat.png"}, "seed": 1, "prompt": "x", "_note": "comments do not count"}
    assert derive_job_id(a) == derive_job_id(b)
    assert derive_job_id(a) != derive_job_id({**a, "seed": 2})
    p = write_jobs(tmp_path, [json.dumps(a, indent=None, separators=(", ", ": ")), {**a, "seed": 2}])
    ids = [j.id for j in parse_jobs(p, WORKFLOW)]
    assert ids == [derive_job_id(a), derive_job_id({**a, "seed": 2})]
    assert all(i.startswith("job-") and len(i) == 16 for i in ids)
    # identical lines would render the same thing twice: refused, the fix is named
    p = write_jobs(tmp_path, [a, b])
    with pytest.raises(JobSpecError, match="already used on line 1"):
        parse_jobs(p, WORKFLOW)


def test_fingerprint_follows_graph_and_image_bytes(tmp_path):
    p = write_jobs(tmp_path, [{"id": "a", "images": {"12.image": "refs/cat.png"}}])
    [job] = parse_jobs(p, WORKFLOW)
    f1 = resolve_job(WORKFLOW, job).fingerprint
    assert resolve_job(WORKFLOW, job).fingerprint == f1
    changed = json.loads(json.dumps(WORKFLOW))
    changed["3"]["inputs"]["steps"] = 30
    assert resolve_job(changed, job).fingerprint != f1
    (tmp_path / "refs" / "cat.png").write_bytes(b"\x89PNG new content")
    assert resolve_job(WORKFLOW, job).fingerprint != f1


def test_prompt_and_seed_targets():
    assert find_prompt_target(WORKFLOW) == Target("6", "text")  # the one feeding `positive`
    assert find_seed_target(WORKFLOW) == Target("3", "seed")
    assert find_prompt_target(WORKFLOW, "7") == Target("7", "text")
    assert find_seed_target(WORKFLOW, "5.width") == Target("5", "width")
    two = {**WORKFLOW, "13": {"class_type": "KSampler", "inputs": {"seed": 1, "positive": ["7", 0]}}}
    with pytest.raises(InputError, match=r"no single string input named prompt/text .*--prompt-node"):
        find_prompt_target(two)
    with pytest.raises(InputError, match=r"found: 3.seed \(KSampler\), 13.seed \(KSampler\)"):
        find_seed_target(two)
    with pytest.raises(InputError, match="--prompt-node 5: node 5 .* has no single input named prompt or text"):
        find_prompt_target(WORKFLOW, "5")
    with pytest.raises(InputError, match="--seed-node 5.seed: node 5 .* has no input 'seed'"):
        find_seed_target(WORKFLOW, "5.seed")


def test_shortcut_without_target_is_one_error(tmp_path):
    wf = {k: v for k, v in WORKFLOW.items() if k != "3"}
    p = write_jobs(tmp_path, [{"seed": 1}, {"seed": 2}])
    with pytest.raises(JobSpecError) as e:
        parse_jobs(p, wf)
    assert str(e.value).count("no single integer input named seed") == 1


def test_load_workflow_refuses_ui_format_and_junk(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(InputError, match=r"UI format.*Export \(API\)"):
        load_workflow(ui)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"inputs": {}}}))
    with pytest.raises(InputError, match="lacks class_type/inputs"):
        load_workflow(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_workflow(tmp_path / "nope.json")
    good = tmp_path / "api.json"
    good.write_text(json.dumps({"prompt": WORKFLOW, "client_id": "x"}))  # a /prompt body works too
    assert load_workflow(good) == WORKFLOW


def test_empty_jobs_file(tmp_path):
    p = write_jobs(tmp_path, ["", "# only a comment"])
    with pytest.raises(JobSpecError, match="holds no jobs"):
        parse_jobs(p, WORKFLOW)


def test_images_only_go_to_file_name_inputs(tmp_path):
    p = write_jobs(tmp_path, [{"images": {"3.steps": "refs/cat.png"}}, {"images": {"3.model": "refs/cat.png"}}])
    with pytest.raises(JobSpecError) as e:
        parse_jobs(p, WORKFLOW)
    assert "line 1: images key '3.steps': input 3.steps expects a number" in str(e.value)
    assert "line 2: images key '3.model'" in str(e.value) and "cut that link" in str(e.value)


def test_shortcuts_can_feed_several_inputs(tmp_path):
    two = {**WORKFLOW, "13": {"class_type": "KSampler", "inputs": {"seed": 1, "positive": ["7", 0]}}}
    p = write_jobs(tmp_path, [{"seed": 4, "prompt": "both"}])
    with pytest.raises(JobSpecError, match="repeat it to set several"):
        parse_jobs(p, two)
    [job] = parse_jobs(p, two, prompt_node=["6", "7.text"], seed_node=["3", "13.seed", "3.seed"])
    assert job.values == {Target("6", "text"): "both", Target("7", "text"): "both",
                          Target("3", "seed"): 4, Target("13", "seed"): 4}
