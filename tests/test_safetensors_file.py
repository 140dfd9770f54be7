import pytest
import torch

from libragen_core.errors import CheckpointError
from libragen_core.io.safetensors_file import load_state_dict, read_header, save_state_dict


def _good(tmp_path):
    return save_state_dict({"a": torch.randn(4, 8), "b": torch.zeros(3, dtype=torch.bfloat16)}, tmp_path / "m.safetensors",
                           metadata={"k": "v"})


def test_round_trip_and_metadata(tmp_path):
    path = _good(tmp_path)
    header, meta = read_header(path)
    assert set(header) == {"a", "b"} and meta == {"k": "v"}
    sd = load_state_dict(path)
    assert sd["a"].shape == (4, 8) and sd["b"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"", "empty"),
        (lambda b: b[:5], "too short"),
        (lambda b: b[:-10], "truncated"),
        (lambda b: b"\x80\x04\x95" + b"x" * 64, "not a valid safetensors"),
        (lambda b: b[:8] + b"\xff" + b[9:], "header is not JSON"),
    ],
)
def test_damaged_files_get_named_errors(tmp_path, damage, message):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(_good(tmp_path).read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_state_dict(bad)


def test_pickle_and_missing_files_are_refused(tmp_path):
    (tmp_path / "m.ckpt").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="pickle-based"):
        read_header(tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        read_header(tmp_path / "missing.safetensors")
