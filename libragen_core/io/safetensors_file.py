"""Safe reading of .safetensors files with errors that say what is wrong with the file.

Only safetensors is ever read: it is a JSON header plus raw tensor bytes, so loading a file can
never run code (unlike pickle-based .pt/.ckpt files, which we refuse outright).
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import torch

from ..errors import CheckpointError

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | os.PathLike, *, written_here: bool = False) -> tuple[dict[str, dict], dict[str, str]]:
    """Return ({tensor name: {"dtype", "shape", "data_offsets"}}, metadata) after validating the file.

    Checks that the file exists, is a safetensors file, and is as long as its header says, so a
    truncated download is reported as such instead of failing deep inside a load.
    written_here: the file is one this project wrote (a training checkpoint, a cache), so damage is
    described as a file cut short, not blamed on a download.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the .safetensors file inside it")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path.name} is a pickle-based checkpoint, which can run code when loaded and is never read "
            "here. Convert it to .safetensors (or download the .safetensors release) and pass that file."
        )
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); " + (
            "it was cut short (a full disk or an interrupted copy)" if written_here
            else "the download or copy did not finish. Fetch it again."))
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is too short ({size} bytes) to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n + 8 > size:
            raise CheckpointError(
                f"{path} is not a valid safetensors file (header length {n} does not fit in {size} bytes); "
                + ("it was cut short (a full disk or an interrupted copy)" if written_here
                   else "it is either another format or a truncated download.")
            )
        if n > _MAX_HEADER:
            raise CheckpointError(
                f"{path} is not a valid safetensors file: it declares a {n:,}-byte header, over the "
                f"{_MAX_HEADER >> 20} MiB any model needs (a real header lists tensor names and shapes); "
                "the file is damaged or was made to exhaust memory."
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: its header is not JSON ({e})") from e
    except RecursionError:
        # a real header nests three levels (tensors -> entry -> shape list); deeper than Python's
        # recursion limit is damage or an attack on the parser
        raise CheckpointError(f"{path} is not a valid safetensors file: its header nests brackets over a "
                              "thousand levels deep, where a real header has three; the file is damaged or hostile.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file: its __metadata__ is not a JSON object")
    end = 0
    for name, info in header.items():
        try:
            start, stop = _offsets(info["data_offsets"])
            shape = info["shape"]
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise ValueError("shape is not a list of sizes")
            expected = _DTYPE_SIZES.get(info["dtype"], 0) * math.prod(shape)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path} has a malformed entry for tensor {name!r} ({e})") from None
        if expected and stop - start != expected:
            raise CheckpointError(f"{path} is damaged: tensor {name!r} has {stop - start} bytes, expected {expected}")
        end = max(end, stop)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: its header describes {8 + n + end} bytes but the file has {size}"
            + (" (a full disk or an interrupted copy)" if written_here else ". Download or copy it again.")
        )
    return header, metadata


def _offsets(value) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
            and 0 <= value[0] <= value[1]):
        raise ValueError(f"data_offsets {str(value)[:40]} is not [start, end] with 0 <= start <= end")
    return value[0], value[1]


def load_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                    written_here: bool = False) -> dict[str, torch.Tensor]:
    """Load every tensor of a validated safetensors file (dtypes as stored); written_here as in read_header."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_header(path, written_here=written_here)
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def save_state_dict(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None):
    """Write tensors atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)
