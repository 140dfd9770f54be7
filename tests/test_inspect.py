"""`libragen inspect` on files and presets, through the real command entry point."""
import json
import struct
import subprocess
import sys

import pytest
import torch

from libragen_core.cli import main
from libragen_core.io.safetensors_file import save_state_dict
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig

MICRO = WanDiTConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=64)


@pytest.fixture(scope="module")
def wan_file(tmp_path_factory):
    torch.manual_seed(0)
    sd = {"model.diffusion_model." + k: v.to(torch.bfloat16) for k, v in WanDiT(MICRO).state_dict().items()}
    return save_state_dict(sd, tmp_path_factory.mktemp("inspect") / "wan_micro.safetensors")


def test_file_report(wan_file, capsys):
    assert main(["inspect", str(wan_file)]) == 0
    out = capsys.readouterr().out
    for frag in ("family:     wan2.1-t2v", "dim=128", "layers=2", "heads=1", "BF16 x69",
                 "parameters: 589,", "tensors:    69", "model.diffusion_model.", "loadable:   yes"):
        assert frag in out, out


def test_json_report(wan_file, capsys):
    assert main(["inspect", "--json", str(wan_file)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["family"] == "wan2.1-t2v" and r["config"]["ffn_dim"] == 256 and r["loadable"] is True


@pytest.mark.parametrize("name,tensors,params", [("wan2.1-t2v-1.3b", 825, "1,418,996,800"),
                                                 ("wan2.1-t2v-14b", 1095, "14,288,491,584")])
def test_preset_report(capsys, name, tensors, params):
    assert main(["inspect", "--preset", name]) == 0
    out = capsys.readouterr().out
    assert f"tensors:    {tensors}" in out and f"parameters: {params}" in out and "head_dim 128" in out


def test_other_family_is_described_and_strict_fails(tmp_path, capsys):
    path = save_state_dict({"encoder.down.0.block.0.conv1.weight": torch.zeros(4, 4, 3, 3),
                            "decoder.up.0.block.0.conv1.weight": torch.zeros(4, 4, 3, 3)}, tmp_path / "vae.safetensors")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "image-vae" in out and "loadable:   no" in out
    assert main(["inspect", "--strict", str(path)]) == 2
    assert "not a Wan2.1 text-to-video DiT" in capsys.readouterr().err


def test_bad_files_exit_2_with_message(tmp_path, wan_file, capsys):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(wan_file.read_bytes()[:-500])
    nothing = save_state_dict({"step": torch.zeros(1)}, tmp_path / "step.safetensors")
    for path, frag in ((empty, "empty"), (tmp_path / "nope.safetensors", "not found"), (nothing, "not a model")):
        assert main(["inspect", str(path)]) == 2
        err = capsys.readouterr().err
        assert frag in err and path.name in err
    # once through the installed entry point, as a user runs it
    proc = subprocess.run([sys.executable, "-m", "libragen_core", "inspect", str(cut)], capture_output=True, text=True)
    assert proc.returncode == 2, proc
    assert "truncated" in proc.stderr and cut.name in proc.stderr


def test_argument_errors(capsys):
    assert main(["inspect"]) == 2
    assert "either a model FILE or --preset" in capsys.readouterr().err
    assert main(["inspect", "--preset", "nope"]) == 2
    assert "unknown DiT preset" in capsys.readouterr().err


def _raw_safetensors(path, header: bytes, declared: int | None = None, tail: bytes = b"\0" * 8):
    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header + tail)
    return path


def test_hostile_headers_get_a_clear_error(tmp_path, capsys):
    entry = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    cases = [
        # 100,000 nested brackets: json.loads raised RecursionError (a traceback) before
        (_raw_safetensors(tmp_path / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000),
         "its header nests brackets over a thousand levels deep"),
        (_raw_safetensors(tmp_path / "huge.safetensors", entry + b"}", declared=2**63),
         "header length 9223372036854775808 does not fit in"),
        (_raw_safetensors(tmp_path / "offsets.safetensors",
                          b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": ["a", "b"]}}'),
         "malformed entry for tensor 'w' (data_offsets"),
        (_raw_safetensors(tmp_path / "shape.safetensors",
                          b'{"w": {"dtype": "F32", "shape": [[[2]]], "data_offsets": [0, 8]}}'),
         "malformed entry for tensor 'w' (shape is not a list of sizes)"),
        (_raw_safetensors(tmp_path / "meta.safetensors", entry + b', "__metadata__": [1]}'),
         "its __metadata__ is not a JSON object"),
    ]
    for path, message in cases:
        assert main(["inspect", str(path)]) == 2, path
        err = capsys.readouterr().err
        assert message in err and path.name in err, err


def test_header_over_the_size_limit_is_refused_without_reading_it(tmp_path, capsys):
    from libragen_core.io import safetensors_file

    limit = safetensors_file._MAX_HEADER
    path = _raw_safetensors(tmp_path / "big.safetensors", b"{}", declared=limit + 1, tail=b" " * limit)
    assert main(["inspect", str(path)]) == 2
    assert f"declares a {limit + 1:,}-byte header, over the 100 MiB" in capsys.readouterr().err
