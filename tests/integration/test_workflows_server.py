"""The example workflows against a real ComfyUI server: every API workflow runs and saves a video
with the expected frame count; every UI workflow uses only node types the server knows, with the
widget values its node definitions expect; and the real frontend loads them (screenshots)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
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
    assert [p.name for p in UI_FILES] == [p.name for p in API_FILES] and len(API_FILES) == 4


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_and_saves_videos_with_the_expected_frames(server, path):
    from libragen_core.io.video import read_video

    entry = server.run(helper().load_json(path), timeout=400)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = [item for out in entry["outputs"].values() for key in ("images", "gifs", "videos")
             for item in out.get(key, [])]
    expected = build().EXPECTED_OUTPUTS[path.stem]
    assert len(saved) == len(expected), entry["outputs"]
    for prefix, frames in expected:
        folder, stem = prefix.rsplit("/", 1)
        match = [s for s in saved if s["subfolder"] == folder and s["filename"].startswith(stem + "_")]
        assert len(match) == 1, (prefix, saved)
        video, fps = read_video(server.output_dir / match[0]["subfolder"] / match[0]["filename"])
        assert video.shape == (frames, 64, 64, 3), (prefix, video.shape)
        assert fps == pytest.approx(8.0, rel=0.01)


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
