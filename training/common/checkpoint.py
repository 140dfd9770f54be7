"""Atomic training checkpoints that resume EXACTLY (bitwise, on a deterministic device).

A checkpoint is a folder `step-XXXXXXXX/` under the run's `checkpoints/`:

    model-<name>.safetensors   one per trained module (e.g. dit, text)
    ema-<name>.safetensors     EMA shadows, when the run keeps them
    optimizer.safetensors      every optimizer state tensor (state.<param index>.<name>)
    rng.safetensors            torch CPU (and CUDA) generator states + named generators
    state.json                 step, data position, optimizer param groups and scalar state,
                               python / numpy RNG states, and whatever the stage adds

It is written into a hidden temporary folder and renamed into place, so a run killed at any
moment (SIGKILL included) leaves either the complete previous checkpoints or the new one, never a
half-written one; `latest_checkpoint` only ever sees complete folders. A folder damaged after it
was written (a full disk, a run folder copied with an interrupted copy) is found by
`readable_checkpoint` before anything is loaded, and resuming falls back to the one before it.
Only safetensors and JSON are written: nothing is pickled.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from libragen_core.errors import CheckpointError
from libragen_core.io.safetensors_file import load_state_dict, read_header, save_state_dict

_STEP_DIR = re.compile(r"^step-(\d{8})$")
STATE_FILE = "state.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- RNG states
def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, json) holding python, numpy, torch (CPU + CUDA) and named generator states."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    for name, g in (generators or {}).items():
        tensors[f"gen.{name}"] = g.get_state()
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: dict,
                generators: Mapping[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("torch_cuda.")),
                                       key=lambda k: int(k.split(".")[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    for name, g in (generators or {}).items():
        key = f"gen.{name}"
        if key not in tensors:
            raise CheckpointError(f"the checkpoint has no state for the random generator {name!r}")
        g.set_state(tensors[key])
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


# ---------------------------------------------------------------- optimizer
def optimizer_to_files(opt: torch.optim.Optimizer | Mapping) -> tuple[dict[str, torch.Tensor], dict]:
    """opt: an optimizer, or its state dict (gathered from shards: training/common/fsdp.py)."""
    sd = opt if isinstance(opt, Mapping) else opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = meta["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(groups, opt.param_groups)):
        raise CheckpointError("the checkpoint's optimizer has different parameter groups than this run's model; "
                              "the config changed the model or the trained parts since the checkpoint was written")
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------- save / load
def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def checkpoint_files(modules: Iterable[str] = (), ema: Iterable[str] = (), optimizer: bool = False) -> list[str]:
    """The files a checkpoint of these modules, EMA shadows and optimizer holds."""
    return ([f"model-{n}.safetensors" for n in modules] + [f"ema-{n}.safetensors" for n in ema]
            + (["optimizer.safetensors"] if optimizer else []) + ["rng.safetensors"])


def checkpoint_problem(path: str | os.PathLike, files: Iterable[str] = ()) -> str | None:
    """Why checkpoint folder `path` cannot be loaded (None when it can): state.json must parse, and
    each of `files` and every other safetensors file in it must be present and complete. Reads
    headers and sizes only; a weights file damaged inside its tensor bytes is not detected."""
    path = Path(path)
    try:
        json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{STATE_FILE} is missing or damaged ({e})"
    names = list(dict.fromkeys([*files, *sorted(p.name for p in path.glob("*.safetensors"))]))
    for name in names:
        if not (path / name).is_file():
            return f"{name} is missing"
        try:
            read_header(path / name, written_here=True)
        except CheckpointError as e:
            return str(e).replace(str(path / name), name, 1)
    return None


def readable_checkpoint(folder: str | os.PathLike, files: Iterable[str] = ()) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that checkpoint_problem passes or None, [(newer folder skipped, why)])."""
    skipped = []
    for _, path in reversed(list_checkpoints(folder)):
        problem = checkpoint_problem(path, files)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint folder out of the rotation (kept for inspection: the rotation
    would count it as the newest and delete good ones in its place)."""
    target = path.with_name(f"{path.name}.unreadable")
    n = 2
    while target.exists():
        target, n = path.with_name(f"{path.name}.unreadable-{n}"), n + 1
    os.rename(path, target)
    return target


def save_checkpoint(folder: str | os.PathLike, step: int, *, modules: Mapping[str, nn.Module | Mapping],
                    optimizer: torch.optim.Optimizer | Mapping | None = None, ema: Mapping[str, object] | None = None,
                    generators: Mapping[str, torch.Generator] | None = None, state: dict | None = None,
                    keep: int = 3) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep` ones.

    modules: name -> module, or its state dict (gathered from shards); optimizer likewise.
    ema: name -> object with state_dict() -> {name: tensor} (training.common.ema.EMA).
    state: JSON-able stage state (data position, metrics, ...), returned by load_checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_dir_name(step)
    # not mkdtemp: its folders are private (0700); mkdir gives the usual umask-based mode
    tmp = folder / f".{final.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        for name, m in modules.items():
            sd = m if isinstance(m, Mapping) else m.state_dict()
            save_state_dict({k: v.detach().cpu() for k, v in sd.items()}, tmp / f"model-{name}.safetensors")
        for name, e in (ema or {}).items():
            save_state_dict({k: v.detach().cpu() for k, v in e.state_dict().items()}, tmp / f"ema-{name}.safetensors")
        meta: dict = {"step": int(step), "state": state or {}}
        if optimizer is not None:
            t, m = optimizer_to_files(optimizer)
            save_state_dict({k: v.detach().cpu() for k, v in t.items()} or {"_empty": torch.zeros(0)},
                            tmp / "optimizer.safetensors")
            meta["optimizer"] = m
        rng_t, rng_m = capture_rng(generators)
        save_state_dict(rng_t, tmp / "rng.safetensors")
        meta["rng"] = rng_m
        with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # a checkpoint of the same step from a run that died after it: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(".step-*.partial-*"):  # left by a killed writer
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike, *, modules: Mapping[str, nn.Module],
                    optimizer: torch.optim.Optimizer | None = None, ema: Mapping[str, object] | None = None,
                    generators: Mapping[str, torch.Generator] | None = None, restore_rng_state: bool = True) -> dict:
    """Load a folder written by save_checkpoint into the given objects; returns {"step", "state"}."""
    path = Path(path)
    state_file = path / STATE_FILE
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{state_file} is missing or damaged ({e}); this checkpoint cannot be loaded: "
                              "use an earlier one (a resume falls back to it by itself)") from e
    for name, m in modules.items():
        sd = load_state_dict(path / f"model-{name}.safetensors", written_here=True)
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}/model-{name}.safetensors does not fit this run's {name} model "
                                  f"(did the config change?): {str(e)[:300]}") from e
    for name, e in (ema or {}).items():
        e.load_state_dict(load_state_dict(path / f"ema-{name}.safetensors", written_here=True))
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"{path} has no optimizer state")
        t = load_state_dict(path / "optimizer.safetensors", written_here=True)
        t.pop("_empty", None)
        optimizer_from_files(optimizer, t, meta["optimizer"])
    if restore_rng_state:
        restore_rng(load_state_dict(path / "rng.safetensors", written_here=True), meta["rng"], generators)
    return {"step": meta["step"], "state": meta.get("state", {})}
