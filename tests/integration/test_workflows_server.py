"""The example workflows against a real ComfyUI server: every API workflow runs and saves a video
with the expected frame count; every UI workflow uses only node types the server knows, with the
widget values its node definitions expect; and the real frontend loads them (screenshots). The
prompt_rewrite example is also run from the frontend: the prompt the frontend sends is the API file,
before and after a run, and the rewritten text shows on the node."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKFLOWS = REPO / "workflows"
UI_CHECK = Path(os.environ.get("LIBRAGEN_UI_CHECK", REPO.parent / "shared" / "tools" / "ui-workflow-check.py"))
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note"}
REWRITE = "LibraGenPromptRewrite"


def _load(name: str, path: Path, package: bool = False):
    if name not in sys.modules:
        kw = {"submodule_search_locations": [str(path.parent)]} if package else {}
        spec = importlib.util.spec_from_file_location(name, path, **kw)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def helper():
    return _load("libragen_comfy_server", HERE / "comfy_server.py")


def build():
    return _load("libragen_workflows_build", WORKFLOWS / "build.py")


@pytest.fixture(scope="module")
def server(comfyui, request):
    return helper().shared_server(comfyui, request.config)


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info").json()


def test_the_example_files_exist_in_both_formats():
    assert [p.name for p in UI_FILES] == [p.name for p in API_FILES] and len(API_FILES) == len(build().EXAMPLES)
    assert sorted(p.stem for p in API_FILES) == sorted(build().EXPECTED_OUTPUTS)


def test_the_server_has_only_what_a_new_user_copies(server):
    """The LoRAs the examples name are the ones examples/loras ships (docs: copy them into
    models/loras), byte for byte; no example names a LoRA that does not ship, native ones aside."""
    loras = REPO / "examples" / "loras"
    named = {v for path in API_FILES if path.stem not in build().NEEDS_FILES
             for node in helper().load_json(path).values() for k, v in node["inputs"].items()
             if k.startswith("lora_") and v != "None"}
    assert named and named <= set(helper().EXAMPLE_LORAS), named
    for name in named:
        served = server.comfy_dir / "models" / "loras" / name
        assert served.read_bytes() == (loras / name).read_bytes()


def expected_rewrite(workflow: dict, node_id: str) -> str:
    """What a Prompt Rewrite node of an API workflow should write (offline, SpriteWorld guide of the
    embedded model), computed here with libragen_core from its prompt and its Subject Encode's labels."""
    from libragen_core.rewrite import rewrite

    inputs = workflow[node_id]["inputs"]
    assert inputs["backend"] == "offline" and inputs["style_guide"] == "auto" and not inputs["labels"]
    subjects = workflow[inputs["subjects"][0]]["inputs"]
    labels = [subjects[f"label_{k}"] for k in range(1, 5) if f"image_{k}" in subjects]
    return rewrite(labels, inputs["prompt"], style_guide="spriteworld").prompt


def _saved_videos(entry: dict) -> list[dict]:
    return [item for out in entry["outputs"].values() for key in ("images", "gifs", "videos")
            for item in out.get(key, [])]


@pytest.mark.parametrize("path", [p for p in API_FILES if p.stem not in build().NATIVE], ids=lambda p: p.stem)
def test_api_workflow_runs_and_saves_videos_with_the_expected_frames(server, path):
    # the native examples need real Wan files and umT5; test_native_server.py runs them with stand-ins
    from libragen_core.io.video import read_video

    workflow = helper().load_json(path)
    needs = build().NEEDS_FILES.get(path.stem)
    if needs:
        _refused_for_the_missing_downloads_only(server, workflow, needs)
        return
    entry = server.run(workflow, timeout=400)
    assert entry["status"]["status_str"] == "success", entry["status"]
    for node_id, node in workflow.items():
        if node["class_type"] == REWRITE:  # an output node: its text is in the history
            assert entry["outputs"][node_id]["text"][0] == expected_rewrite(workflow, node_id)
    saved = _saved_videos(entry)
    expected = build().EXPECTED_OUTPUTS[path.stem]
    assert len(saved) == len(expected), entry["outputs"]
    for prefix, frames in expected:
        folder, stem = prefix.rsplit("/", 1)
        match = [s for s in saved if s["subfolder"] == folder and s["filename"].startswith(stem + "_")]
        assert len(match) == 1, (prefix, saved)
        video, fps = read_video(server.output_dir / match[0]["subfolder"] / match[0]["filename"])
        assert video.shape == (frames, 64, 64, 3), (prefix, video.shape)
        assert fps == pytest.approx(8.0, rel=0.01)


def _refused_for_the_missing_downloads_only(server, workflow: dict, needs) -> None:
    """A native example without its downloads: the server refuses it, naming exactly the files the
    docs say to download, so every other node and link of the graph passed its validation."""
    missing = {name for kind, name in needs if not list(Path(server.comfy_dir, "models", kind).rglob(name))}
    if not missing:
        pytest.skip(f"{sorted(n for _, n in needs)} are installed; rendering them on a CPU is beyond this test")
    r = server.submit(workflow)
    assert r.status_code == 400, r.text
    named = set()
    for node_id, err in r.json()["node_errors"].items():
        for e in err["errors"]:
            hit = {n for n in missing if n in json.dumps(e)}
            assert hit, f"node {node_id} refused for another reason than a missing download: {e}"
            named |= hit
    # core loaders name each missing file; LoRA Merge's own validation stops at its first problem
    assert {n for kind, n in needs if kind != "loras"} & missing <= named, (named, missing)
    assert any(kind == "loras" and n in named for kind, n in needs) or not any(k == "loras" for k, _ in needs)


def _widget_count(spec: dict) -> int:
    count = 0
    for section in ("required", "optional"):
        for entry in spec["input"].get(section, {}).values():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                count += 1 + bool(opts.get("control_after_generate"))
                count += bool(opts.get("image_upload"))  # LoadImage's upload button is a widget too
    return count


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_exist_on_the_server_with_matching_widgets(object_info, path):
    workflow = helper().load_json(path)
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in object_info, f"{path.name}: unknown node type {node['type']}"
        spec = object_info[node["type"]]
        assert len(node["widgets_values"]) == _widget_count(spec), (path.name, node["type"], node["widgets_values"])
        outputs = spec["output"]
        for slot, out in enumerate(node["outputs"]):
            assert out["type"] == outputs[slot]
        for inp in node["inputs"]:
            if inp["link"] is not None:
                _, src, src_slot, dst, _, kind = links[inp["link"]]
                assert dst == node["id"] and kind == inp["type"]


def test_ui_workflows_load_in_the_real_frontend(server, tmp_path):
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromium or not UI_CHECK.exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium) and ../shared/tools/ui-workflow-check.py")
    pytest.importorskip("playwright")
    shots = Path(os.environ.get("LIBRAGEN_UI_SHOTS", tmp_path / "shots"))
    out = subprocess.run([sys.executable, str(UI_CHECK), server.url, str(shots), *map(str, UI_FILES)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(UI_FILES)}/{len(UI_FILES)} UI workflows load" in out.stdout
    assert sorted(p.stem for p in shots.glob("*.png")) == sorted(p.stem for p in UI_FILES)


def _sampled_latent(server, workflow: dict, sampler_id: str, tag: str):
    """Run a copy of the workflow with core SaveLatent on the sampler's output; the saved latent.

    Why not the video: ComfyUI's SaveVideo encodes H.264 with frame threads, and the same frames
    encoded twice in one server can give different bitstreams (up to 16/255 apart once decoded)."""
    from safetensors.torch import load_file

    graph = json.loads(json.dumps(workflow))
    graph["latent_probe"] = {"class_type": "SaveLatent",
                             "inputs": {"samples": [sampler_id, 0], "filename_prefix": f"rewrite_probe/{tag}"}}
    entry = server.run(graph, timeout=400)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (item,) = entry["outputs"]["latent_probe"]["latents"]
    return load_file(server.output_dir / item["subfolder"] / item["filename"])["latent_tensor"]


def test_prompt_rewrite_output_is_what_the_sampler_samples(server):
    """The same graph with the sampler's prompt typed in: the rewritten text gives the very latent
    the linked workflow gives, the user's own words give another (so the prompt matters)."""
    import torch

    workflow = helper().load_json(WORKFLOWS / "api" / "prompt_rewrite.json")
    rewrite_id = next(k for k, n in workflow.items() if n["class_type"] == REWRITE)
    sampler_id = next(k for k, n in workflow.items() if n["inputs"].get("prompt") == [rewrite_id, 0])
    linked = _sampled_latent(server, workflow, sampler_id, "linked")
    latents = {}
    for name, text in (("rewritten", expected_rewrite(workflow, rewrite_id)),
                       ("user", workflow[rewrite_id]["inputs"]["prompt"])):
        typed = json.loads(json.dumps(workflow))
        typed[sampler_id]["inputs"]["prompt"] = text
        latents[name] = _sampled_latent(server, typed, sampler_id, name)
    assert torch.equal(linked, latents["rewritten"])
    assert not torch.equal(linked, latents["user"])


def _graph(workflow: dict) -> dict:
    return {k: (n["class_type"], n["inputs"]) for k, n in workflow.items()}


def _differences(sent: dict, api: dict) -> list[str]:
    out = [f"node {k} only in {'the frontend' if k in sent else 'the API file'}" for k in set(sent) ^ set(api)]
    for k in set(sent) & set(api):
        a, b = sent[k]["inputs"], api[k]["inputs"]
        out += [f"{k}.{name}: frontend {a.get(name)!r}, API file {b.get(name)!r}"
                for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]
    return out


_IN_FRONTEND = """async (wf) => {
    await window.app.loadGraphData(wf);
    return (await window.app.graphToPrompt()).output;
}"""
_REWRITTEN = """(id) => {
    const box = window.app.graph.getNodeById(id)?.widgets?.find((w) => w.name === "rewritten");
    return box && box.value ? box.value : null;
}"""


def test_prompt_rewrite_runs_from_the_frontend_and_shows_its_text(server, tmp_path):
    """Load the UI file in the real frontend: the prompt it sends equals the API file (the linked
    prompt widget included); queue it: the rewritten text appears on the node; the prompt the
    frontend would send next is unchanged (the shown text is not sent, so a rerun is all cached).
    LIBRAGEN_UI_SHOTS=DIR keeps the screenshot (docs/img/comfyui_prompt_rewrite_workflow.png)."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromium:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    ui = helper().load_json(WORKFLOWS / "prompt_rewrite.json")
    api = helper().load_json(WORKFLOWS / "api" / "prompt_rewrite.json")
    rewrite_id = next(k for k, n in api.items() if n["class_type"] == REWRITE)
    expected = expected_rewrite(api, rewrite_id)
    shots = Path(os.environ.get("LIBRAGEN_UI_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120000)
            # frontend 1.27.10 itself throws one TypeError while it registers its settings, before
            # any workflow: only errors from here on are ours
            page.wait_for_timeout(1000)
            errors.clear()
            sent = page.evaluate(_IN_FRONTEND, ui)
            assert _graph(sent) == _graph(api), _differences(sent, api)
            # queued behind another prompt: the frontend files its prompt (POST /prompt answered) before
            # the server starts it. Queued on an idle server, execution_start can reach the page first,
            # and frontend 1.27 then loses the prompt's outputs (seen after the native tests' prompts)
            busy = json.loads(json.dumps(api))
            busy[next(k for k, n in busy.items() if n["class_type"] == "LibraGenSampler")]["inputs"]["seed"] += 1000
            ahead = server.submit(busy)
            assert ahead.status_code == 200, ahead.text
            page.evaluate("() => window.app.queuePrompt(0, 1)")
            page.wait_for_function(_REWRITTEN, arg=int(rewrite_id), timeout=400000, polling=500)
            shown = page.evaluate(_REWRITTEN, int(rewrite_id))
            assert shown.split("\n\n")[0] == expected, shown
            assert "backend: offline" in shown
            after = page.evaluate("async () => (await window.app.graphToPrompt()).output")
            # after a run core SaveVideo sends its preview widget ("video-preview": ""), which is
            # the frontend's own business; our nodes must send exactly what the API file holds
            ours = [k for k, n in api.items() if n["class_type"].startswith("LibraGen")]
            assert set(after) == set(api)
            assert not _differences({k: after[k] for k in ours}, {k: api[k] for k in ours}), _differences(after, api)
            end = time.monotonic() + 400
            while server.running() and time.monotonic() < end:  # the sampler may still be at work
                time.sleep(1)
            page.keyboard.press("Escape")  # the first-run template gallery covers the graph
            # the minimap would cover Save Video's player; hidden on this page only, no setting saved
            page.evaluate("() => document.querySelectorAll('.minimap-main-container')"
                          ".forEach((e) => { e.style.display = 'none'; })")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "prompt_rewrite_after_run.png"))
        finally:
            browser.close()
    assert not errors, errors
