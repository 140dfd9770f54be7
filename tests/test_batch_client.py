"""Server addresses, output listing and server error wording for the batch client (no server needed)."""
from __future__ import annotations

import pytest

from libragen_core.batch.client import (
    describe_failure,
    describe_missing_outputs,
    describe_refusal,
    finished_nodes,
    normalize_server_url,
    output_refs,
)
from libragen_core.errors import InputError


def test_server_urls():
    assert normalize_server_url("127.0.0.1:8188") == "http://127.0.0.1:8188"
    assert normalize_server_url(" http://127.0.0.1:8188/ ") == "http://127.0.0.1:8188"
    assert normalize_server_url("https://farm.local/comfy/") == "https://farm.local/comfy"
    with pytest.raises(InputError, match="not an http"):
        normalize_server_url("ftp://x:1")
    with pytest.raises(InputError) as e:
        normalize_server_url("http://user:hunter2@127.0.0.1:8188/?token=abc")
    assert "hunter2" not in str(e.value) and "abc" not in str(e.value) and "user@" not in str(e.value)


def test_output_refs_take_every_file_list():
    entry = {"outputs": {
        "10": {"gifs": [{"filename": "v_00001.mp4", "subfolder": "vids", "type": "output", "format": "video/h264-mp4"}]},
        "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"},
                         {"filename": "b.png", "subfolder": "", "type": "output"}]},
        "7": {"images": [{"filename": "anim.webp", "subfolder": "", "type": "output"}], "animated": [True]},
        "8": {"images": [{"filename": "prev.png", "subfolder": "", "type": "temp"}]},
        "11": {"text": ["not a file"], "videos": [{"filename": "c.mp4", "type": "output"}]},
    }}
    refs = output_refs(entry)
    assert [(r.node, r.kind, r.filename, r.subfolder) for r in refs] == [
        ("7", "images", "anim.webp", ""), ("9", "images", "a.png", ""), ("9", "images", "b.png", ""),
        ("10", "gifs", "v_00001.mp4", "vids"), ("11", "videos", "c.mp4", "")]
    assert [r.filename for r in output_refs(entry, include_temp=True)].count("prev.png") == 1


def test_server_error_wording():
    entry = {"status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p"}],
        ["execution_error", {"prompt_id": "p", "node_id": "1", "node_type": "LoadImage",
                             "exception_type": "PIL.UnidentifiedImageError",
                             "exception_message": "cannot identify image file\n"}]]}}
    assert describe_failure(entry) == ("node 1 (LoadImage) raised PIL.UnidentifiedImageError: "
                                       "cannot identify image file")
    refusal = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                         "details": ""},
               "node_errors": {"2": {"class_type": "ImageScale", "errors": [
                   {"type": "value_smaller_than_min", "message": "Value smaller than min",
                    "details": "width: -5 < 0"}]}}}
    assert describe_refusal(refusal) == ("Prompt outputs failed validation; node 2 (ImageScale): "
                                         "Value smaller than min (width: -5 < 0)")


def test_custom_validation_message_is_shown_once():
    # ComfyUI repeats a node's VALIDATE_INPUTS message for every input it validated
    errs = [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
             "details": f"{name} - lora_1 'x.safetensors' is not one of the choices"} for name in ("lora_1", "rank")]
    refusal = {"error": {"message": "Prompt outputs failed validation"},
               "node_errors": {"2": {"class_type": "LibraGenLoraMerge", "errors": errs}}}
    assert describe_refusal(refusal) == ("Prompt outputs failed validation; node 2 (LibraGenLoraMerge): Custom "
                                         "validation failed for node (lora_1 'x.safetensors' is not one of the choices)")


def test_missing_outputs_are_named_with_the_servers_reasons():
    graph = {"10": {"class_type": "ImageScale"}, "11": {"class_type": "SaveImage"}, "5": {"class_type": "SaveImage"}}
    node_errors = {"10": {"class_type": "ImageScale", "dependent_outputs": ["11"], "errors": [
        {"type": "value_smaller_than_min", "message": "Value smaller than min", "details": "width: -5 < 0"}]}}
    assert describe_missing_outputs(graph, ["11"], node_errors) == (
        "output node 11 (SaveImage) produced nothing: the server refused part of the graph and ran the rest: "
        "node 10 (ImageScale): Value smaller than min (width: -5 < 0)")
    assert describe_missing_outputs(graph, ["5", "11"], {}).startswith(
        "output nodes 5 (SaveImage), 11 (SaveImage) produced nothing although the server reported no error")


def test_finished_nodes_count_cached_outputs():
    entry = {"outputs": {"9": {"images": []}},
             "status": {"messages": [["execution_start", {}], ["execution_cached", {"nodes": ["1", "5"]}]]}}
    assert finished_nodes(entry) == {"9", "1", "5"}
    assert finished_nodes({}) == set()
