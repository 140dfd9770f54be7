"""The shared optimisation loop: accelerate, AdamW, warm-up, grad clipping, EMA, checkpoints, logs.

A stage builds its modules and a `step_fn(step, generator) -> (loss, metrics)` that draws its own
batch (from an EpochSampler it passes in as `data_state`) and noise (from `generator`, whose
state is checkpointed), then calls `TrainLoop.run`. The loop resumes from the newest checkpoint
of its folder, so re-running the same command after a crash continues exactly where the last
checkpoint left off.

    loop = TrainLoop(folder, "base", cfg.optim, run_cfg, modules={"dit": dit, "text": text},
                     ema_modules=("dit", "text"), data_state=sampler)
    loop.run(step_fn, validate_fn)
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .ema import EMA
from .logs import RunLogger
from .schedule import lr_at, set_lr
from .schema import OptimConfig, RunConfig


def setup_torch(run: RunConfig) -> None:
    if run.threads > 0:
        torch.set_num_threads(run.threads)
    if run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch: module init draws from the global generators."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_accelerator(run: RunConfig):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and run.device != "cpu"
    if run.device == "cuda" and not torch.cuda.is_available():
        from libragen_core.errors import ConfigError

        raise ConfigError("run.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    mp = run.mixed_precision
    if mp == "auto":
        mp = "bf16" if cuda else "no"
    return Accelerator(cpu=not cuda, mixed_precision=mp)


class TrainLoop:
    def __init__(self, folder: str | os.PathLike, stage: str, optim: OptimConfig, run: RunConfig,
                 modules: Mapping[str, nn.Module], *, param_groups: Sequence[dict] | None = None,
                 ema_modules: Sequence[str] = (), data_state=None, accelerator=None, extra_state: Callable | None = None,
                 load_extra_state: Callable | None = None):
        self.folder = Path(folder)
        self.stage = stage
        self.cfg = optim
        self.run_cfg = run
        self.acc = accelerator or make_accelerator(run)
        self.modules = dict(modules)
        groups = param_groups or [{"params": [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]}]
        self.optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        names = list(self.modules)
        prepared = self.acc.prepare(*[self.modules[n] for n in names], self.optimizer)
        self.wrapped = dict(zip(names, prepared[:-1]))
        self.acc_optimizer = prepared[-1]
        for n in names:
            m = self.acc.unwrap_model(self.wrapped[n])
            if optim.gradient_checkpointing and hasattr(m, "gradient_checkpointing"):
                m.gradient_checkpointing = True
        self.ema = {n: EMA(self.modules[n], optim.ema_decay) for n in ema_modules} if optim.ema_decay > 0 else {}
        self.generator = torch.Generator().manual_seed(run.seed + 7919)
        self.data_state = data_state
        self.extra_state, self.load_extra_state = extra_state, load_extra_state
        self.step = 0
        self.log = RunLogger(self.folder, stage, enabled=self.acc.is_main_process)
        self.ckpt_dir = self.folder / "checkpoints"

    @property
    def device(self) -> torch.device:
        return self.acc.device

    def resume(self) -> int:
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return 0
        info = load_checkpoint(path, modules=self.modules, optimizer=self.optimizer, ema=self.ema,
                               generators={"train": self.generator})
        self.step = info["step"]
        st = info["state"]
        if self.data_state is not None and "data" in st:
            self.data_state.load_state_dict(st["data"])
        if self.load_extra_state is not None:
            self.load_extra_state(st.get("extra", {}))
        self.acc.print(f"[{self.stage}] resumed from {path} (step {self.step})")
        return self.step

    def save(self) -> Path | None:
        if not self.acc.is_main_process:
            return None
        state = {"data": self.data_state.state_dict() if self.data_state is not None else None}
        if self.extra_state is not None:
            state["extra"] = self.extra_state()
        return save_checkpoint(self.ckpt_dir, self.step, modules=self.modules, optimizer=self.optimizer, ema=self.ema,
                               generators={"train": self.generator}, state=state, keep=self.cfg.keep_checkpoints)

    def run(self, step_fn: Callable[[int, torch.Generator], tuple[torch.Tensor, dict]],
            validate_fn: Callable[[int], dict] | None = None, until: int | None = None,
            items_per_step: int | None = None) -> int:
        """Train from the current step to `until` (default cfg.steps); returns the step reached."""
        from tqdm.auto import tqdm

        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        cfg = self.cfg
        start_wall = time.perf_counter()
        window_t, window_items, window_loss, window_n = time.perf_counter(), 0, 0.0, 0
        extra_sums: dict[str, float] = {}
        bar = tqdm(total=until, initial=self.step, desc=self.stage, disable=not self.acc.is_main_process,
                   dynamic_ncols=True, mininterval=2.0)
        for m in self.wrapped.values():
            m.train()
        while self.step < until:
            lr = lr_at(self.step, cfg.lr, cfg.warmup, cfg.steps, cfg.decay, cfg.min_lr_ratio)
            set_lr(self.acc_optimizer, lr)
            with self.acc.autocast():
                loss, metrics = step_fn(self.step, self.generator)
            self.acc.backward(loss)
            if cfg.grad_clip > 0:
                gnorm = float(self.acc.clip_grad_norm_(self.trainable, cfg.grad_clip))
                metrics = {**metrics, "grad_norm": gnorm}
            self.acc_optimizer.step()
            self.acc_optimizer.zero_grad(set_to_none=True)
            for n, e in self.ema.items():
                e.update(self.modules[n])
            self.step += 1
            bar.update(1)
            if cfg.debug_step_delay > 0:
                time.sleep(cfg.debug_step_delay)
            window_items += items_per_step or cfg.batch
            window_loss += float(loss.detach())
            window_n += 1
            for k, v in metrics.items():
                extra_sums[k] = extra_sums.get(k, 0.0) + float(v)
            if self.step % cfg.log_every == 0 or self.step == until:
                dt = time.perf_counter() - window_t
                values = {"loss": window_loss / window_n, "lr": lr, "samples_per_s": window_items / max(dt, 1e-9),
                          **{k: v / window_n for k, v in extra_sums.items()}}
                self.log.scalars(self.step, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}", sps=f"{values['samples_per_s']:.1f}")
                window_t, window_items, window_loss, window_n, extra_sums = time.perf_counter(), 0, 0.0, 0, {}
            timed_out = cfg.max_minutes > 0 and (time.perf_counter() - start_wall) > 60 * cfg.max_minutes
            if self.step % cfg.checkpoint_every == 0 or self.step == until or timed_out:
                self.save()
            if validate_fn is not None and cfg.validate_every and self.step % cfg.validate_every == 0 \
                    and self.step != until and self.acc.is_main_process:
                self._validate(validate_fn)
            if timed_out:
                self.acc.print(f"[{self.stage}] max_minutes={cfg.max_minutes} reached at step {self.step}")
                break
        bar.close()
        if validate_fn is not None and self.acc.is_main_process and self.step >= until:
            self._validate(validate_fn)
        self.log.flush()
        return self.step

    def _validate(self, validate_fn) -> None:
        t = time.perf_counter()
        values = validate_fn(self.step) or {}
        values["validate_s"] = time.perf_counter() - t
        self.log.scalars(self.step, values, prefix="val/")
        shown = ", ".join(f"{k}={v:.3f}" for k, v in values.items() if isinstance(v, float))
        self.acc.print(f"[{self.stage}] step {self.step}: {shown}")
