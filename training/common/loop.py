"""The shared optimisation loop: accelerate, AdamW, warm-up, grad clipping, EMA, checkpoints, logs.

A stage builds its modules and a `step_fn(step, generator) -> (loss, metrics)` that draws its own
batch (from an EpochSampler it passes in as `data_state`) and noise (from `generator`, whose
state is checkpointed), then calls `TrainLoop.run`. A step_fn that runs its own backward passes
(DPO's split backward) returns the loss as a bare value, without a graph: the loop then only
clips and steps. The loop resumes from the newest checkpoint
of its folder, so re-running the same command after a crash continues exactly where the last
checkpoint left off.

    loop = TrainLoop(folder, "base", cfg.optim, run_cfg, modules={"dit": dit, "text": text},
                     ema_modules=("dit", "text"), data_state=sampler)
    loop.run(step_fn, validate_fn)

Multi-process (DDP; docs/ddp.md): `optim.batch` is the global batch. Every process draws the
same global batch and the same noise from the same generator, then keeps its share
(`loop.share(n)`), so a step's gradient (DDP averages the per-process means) and every random
draw are those of a one-process run. Only the main process writes checkpoints, logs, samples and
final files; every process resumes from the same checkpoint.

Under FSDP (run.sharding; training/common/fsdp.py) the trained model is sharded instead of
wrapped in DDP: the same shares and draws, the trainable tensors in parts. Checkpoints are
gathered to full tensors before the main process writes them (the same files as one process
writes), and validation runs on every process, since each forward needs all of them.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn

from libragen_core.errors import CheckpointError

from . import fsdp
from .checkpoint import checkpoint_files, load_checkpoint, readable_checkpoint, save_checkpoint, set_aside
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


def _use_cuda(run: RunConfig) -> bool:
    if run.device == "cuda" and not torch.cuda.is_available():
        from libragen_core.errors import ConfigError

        raise ConfigError("run.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.cuda.is_available() and run.device != "cpu"


def distributed(run: RunConfig):
    """The process group of this run (accelerate's PartialState; one process without a launcher).

    The first call starts the group, with run.dist_timeout_minutes as the collectives' timeout:
    gloo's default (30 min) is shorter than a long validation or DPO pair generation on the main
    process, during which the other processes wait in their next collective."""
    from accelerate import PartialState

    return PartialState(cpu=not _use_cuda(run), timeout=timedelta(minutes=run.dist_timeout_minutes))


def is_main_process(run: RunConfig) -> bool:
    return distributed(run).is_main_process


def wait_for_everyone(run: RunConfig) -> None:
    """A barrier (no-op in one process): the end of every stage, so no process reads a stage's
    output before the main process has written it."""
    distributed(run).wait_for_everyone()


@contextlib.contextmanager
def main_process_first(run: RunConfig) -> Iterator[None]:
    """The main process runs the block first (e.g. builds a cache on disk), the others after it
    (and find it built)."""
    with distributed(run).main_process_first():
        yield


def check_global_batch(batch: int, world: int, key: str) -> None:
    if batch % world:
        from libragen_core.errors import ConfigError

        lo, hi = (batch // world) * world, (batch // world + 1) * world
        fix = f"{lo} or {hi}" if lo else str(hi)
        raise ConfigError(f"{key} = {batch} is the global batch and must split evenly over the {world} processes; "
                          f"set {key} to a multiple of {world} (e.g. {fix}) or launch a number of processes that "
                          f"divides {batch}")


def make_accelerator(run: RunConfig, find_unused_parameters: bool = False):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = _use_cuda(run)
    distributed(run)  # the process group, with our timeout, before Accelerator would start it
    mp = run.mixed_precision
    if mp == "auto":
        mp = "bf16" if cuda else "no"
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(cpu=not cuda, mixed_precision=mp, kwargs_handlers=handlers)


def _ddp_skip_frozen(model: nn.Module) -> None:
    """DDP leaves the frozen parameters alone: nothing to reduce, and every process already has the
    same ones (the base file, or the seeded init). Otherwise DDP broadcasts them from the main
    process when it wraps the model: for a 14B base that is 27 GiB sent for nothing, and gloo has no
    float8 type (an fp8 base stops with "Invalid scalar type")."""
    from torch.nn.parallel import DistributedDataParallel

    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    frozen += [n for n, b in model.named_buffers() if b.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)]
    if frozen:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)


class TrainLoop:
    """forward_modules: per name, a module to train through instead of modules[name] (same
    parameters; e.g. a training-forward wrapper): DDP syncs gradients only of what runs through
    the wrapped module's own forward. Checkpoints and EMA keep using `modules`.
    find_unused_parameters: DDP's option, for a stage where some parameters get no gradient in
    some steps (VAE: the encoder in the decoder-only phase).
    device_placement: False leaves the modules where the stage put them (a DiT whose frozen
    blocks wait in CPU memory must not be moved to the device whole).
    Under FSDP the forward modules are sharded here (a base waiting in CPU memory moves to the
    device block by block) and the modules to checkpoint must reach their parameters through
    them (AdapterState)."""

    def __init__(self, folder: str | os.PathLike, stage: str, optim: OptimConfig, run: RunConfig,
                 modules: Mapping[str, nn.Module], *, param_groups: Sequence[dict] | None = None,
                 ema_modules: Sequence[str] = (), data_state=None, accelerator=None, extra_state: Callable | None = None,
                 load_extra_state: Callable | None = None, forward_modules: Mapping[str, nn.Module] | None = None,
                 find_unused_parameters: bool = False, device_placement: bool = True):
        self.folder = Path(folder)
        self.stage = stage
        self.cfg = optim
        self.run_cfg = run
        self.acc = accelerator or make_accelerator(run, find_unused_parameters)
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        check_global_batch(optim.batch, self.world, f"{stage}.optim.batch")
        self.modules = dict(modules)
        names = list(self.modules)
        forward_modules = dict(forward_modules or {})
        self.sharding = fsdp.sharding_mode(run.sharding, self.world)
        if self.sharding == "fsdp":
            self._check_fsdp(param_groups, ema_modules, optim)
            for n in names:  # sharding replaces the parameters: the optimizer is made after it
                kept, whole, from_main = fsdp.shard_model(forward_modules.get(n, self.modules[n]), self.acc.device)
                self.acc.print(f"[{stage}] FSDP over {self.world} processes: each keeps {kept / 2**20:.1f} MiB of the "
                               f"model's {whole / 2**20:.1f} MiB of weights"
                               + (", sent block by block by the main process, the only one that read the file"
                                  if from_main else ""))
        groups = param_groups or [{"params": [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]}]
        self.optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.sharding == "fsdp":
            self.wrapped = {n: forward_modules.get(n, self.modules[n]) for n in names}
            self.acc_optimizer = self.optimizer
        else:
            if self.world > 1:
                for n in names:
                    _ddp_skip_frozen(forward_modules.get(n, self.modules[n]))
            prepared = self.acc.prepare(*[forward_modules.get(n, self.modules[n]) for n in names], self.optimizer,
                                        device_placement=[device_placement] * len(names) + [True])
            self.wrapped = dict(zip(names, prepared[:-1]))
            self.acc_optimizer = prepared[-1]
        for n in names:
            m = self.modules[n]
            if optim.gradient_checkpointing is True and hasattr(m, "gradient_checkpointing"):
                m.gradient_checkpointing = True
        self.ema = {n: EMA(self.modules[n], optim.ema_decay) for n in ema_modules} if optim.ema_decay > 0 else {}
        self.generator = torch.Generator().manual_seed(run.seed + 7919)
        self.data_state = data_state
        self.extra_state, self.load_extra_state = extra_state, load_extra_state
        self.step = 0
        self.log = RunLogger(self.folder, stage, enabled=self.acc.is_main_process)
        self.ckpt_dir = self.folder / "checkpoints"

    def _check_fsdp(self, param_groups, ema_modules, optim: OptimConfig) -> None:
        from libragen_core.errors import ConfigError

        fix = "set run.sharding = 'ddp' (or launch with the DDP config)"
        if param_groups is not None or (ema_modules and optim.ema_decay > 0):
            raise ConfigError(f"[{self.stage}] FSDP is for the LoRA stages (SFT, DPO); this stage's parameter groups / "
                              f"EMA are not sharded: {fix}")
        if self.run_cfg.mixed_precision == "fp16":
            raise ConfigError(f"[{self.stage}] FSDP runs without fp16 loss scaling; use run.mixed_precision = 'bf16'")

    @property
    def device(self) -> torch.device:
        return self.acc.device

    @property
    def everyone_validates(self) -> bool:
        """Validation runs on every process (FSDP: a forward needs all of them); a stage's
        validate_fn then writes its files only where `self.acc.is_main_process`."""
        return self.sharding == "fsdp"

    def share(self, n: int) -> slice:
        """This process's part of a global batch of n items (contiguous, n / world of them)."""
        if n % self.world:
            raise ValueError(f"a global batch of {n} does not split over {self.world} processes")
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    def _mean_over_processes(self, values: list[float]) -> list[float]:
        if self.world == 1 or not values:
            return values
        t = self.acc.reduce(torch.tensor(values, dtype=torch.float64, device=self.device), reduction="mean")
        return t.tolist()

    def _any_process(self, flag: bool) -> bool:
        """One decision for all processes (each measures its own wall time; a process that stopped
        alone would leave the others waiting in their next collective)."""
        if self.world == 1:
            return flag
        return bool(self.acc.reduce(torch.tensor([float(flag)], device=self.device), reduction="sum").item() > 0)

    def resume(self) -> int:
        """Load the newest readable checkpoint (0 when there is none yet). Damaged newer ones are
        named with the reason and, once the load succeeded, set aside as step-N.unreadable."""
        files = checkpoint_files(self.modules, self.ema, optimizer=True)
        path, skipped = readable_checkpoint(self.ckpt_dir, files)
        for bad, why in skipped:
            self.acc.print(f"[{self.stage}] skipped checkpoint {bad.name}: {why}")
        if path is None:
            if not skipped:
                return 0
            # starting over would rotate the damaged folders away: that has to be asked for
            raise CheckpointError(
                f"no checkpoint in {self.ckpt_dir} can be loaded: "
                + "; ".join(f"{bad.name}: {why}" for bad, why in skipped)
                + f". To train this stage from step 0, move {self.ckpt_dir} aside and run again.")
        info = load_checkpoint(path, modules=self.modules, optimizer=self.optimizer, ema=self.ema,
                               generators={"train": self.generator})
        if self.sharding == "fsdp":
            fsdp.shard_optimizer_state(self.optimizer)
        if skipped and self.acc.is_main_process:
            for bad, _ in skipped:
                self.acc.print(f"[{self.stage}] set {bad.name} aside as {set_aside(bad).name} (delete it when done)")
        self.step = info["step"]
        st = info["state"]
        if self.data_state is not None and "data" in st:
            self.data_state.load_state_dict(st["data"])
        if self.load_extra_state is not None:
            self.load_extra_state(st.get("extra", {}))
        self.acc.print(f"[{self.stage}] resumed from {path} (step {self.step})")
        return self.step

    def save(self) -> Path | None:
        """Write a checkpoint (main process); under FSDP every process must call it (the gather)."""
        modules, optimizer = self.modules, self.optimizer
        if self.sharding == "fsdp":
            modules = {n: fsdp.full_state(m.state_dict()) for n, m in self.modules.items()}
            optimizer = fsdp.full_optimizer_state(self.optimizer)
        if not self.acc.is_main_process:
            return None
        state = {"data": self.data_state.state_dict() if self.data_state is not None else None}
        if self.extra_state is not None:
            state["extra"] = self.extra_state()
        return save_checkpoint(self.ckpt_dir, self.step, modules=modules, optimizer=optimizer, ema=self.ema,
                               generators={"train": self.generator}, state=state, keep=self.cfg.keep_checkpoints)

    def run(self, step_fn: Callable[[int, torch.Generator], tuple[torch.Tensor, dict]],
            validate_fn: Callable[[int], dict] | None = None, until: int | None = None,
            items_per_step: int | None = None, probe_fn: Callable[[int], dict] | None = None,
            probe_every: int = 0) -> int:
        """Train from the current step to `until` (default cfg.steps); returns the step reached.

        validate_fn runs on the main process only: it must use the unwrapped modules (a DDP
        module's forward broadcasts buffers, a collective the other processes would not join).
        Under FSDP it runs on every process (`everyone_validates`); only the main one logs.
        probe_fn: a cheaper check (training.direction_probe) run every probe_every steps and at
        step 0 of a fresh run, logged under probe/; main process only, so a stage refuses it under
        FSDP before any work (training/sft.py)."""
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
        validating = self.acc.is_main_process or self.everyone_validates
        probing = probe_fn is not None and probe_every > 0 and self.acc.is_main_process
        if probing and self.step == 0:
            self._validate(probe_fn, "probe/")
        while self.step < until:
            lr = lr_at(self.step, cfg.lr, cfg.warmup, cfg.steps, cfg.decay, cfg.min_lr_ratio)
            set_lr(self.acc_optimizer, lr)
            with self.acc.autocast():
                loss, metrics = step_fn(self.step, self.generator)
            if loss.requires_grad:  # a bare value: the step_fn did its own backward passes
                if self.sharding == "fsdp":
                    loss.backward()
                else:
                    self.acc.backward(loss)
            if cfg.grad_clip > 0:
                if self.sharding != "fsdp":
                    self.acc.unscale_gradients()  # fp16 loss scaling (a no-op otherwise)
                gnorm = fsdp.clip_grad_norm(self.trainable, cfg.grad_clip)
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
                # each process's figures are means over its share: the mean over processes is the
                # global batch's (shares are equal)
                keys = sorted(extra_sums)
                loss_mean, *extra_means = self._mean_over_processes([window_loss / window_n] +
                                                                    [extra_sums[k] / window_n for k in keys])
                values = {"loss": loss_mean, "lr": lr, "samples_per_s": window_items / max(dt, 1e-9),
                          **dict(zip(keys, extra_means))}
                self.log.scalars(self.step, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}", sps=f"{values['samples_per_s']:.1f}")
                window_t, window_items, window_loss, window_n, extra_sums = time.perf_counter(), 0, 0.0, 0, {}
            timed_out = cfg.max_minutes > 0 and self._any_process(
                (time.perf_counter() - start_wall) > 60 * cfg.max_minutes)
            if self.step % cfg.checkpoint_every == 0 or self.step == until or timed_out:
                self.save()
            if validate_fn is not None and cfg.validate_every and self.step % cfg.validate_every == 0 \
                    and self.step != until and validating:
                self._validate(validate_fn)
            if probing and (self.step % probe_every == 0 or self.step == until or timed_out):
                self._validate(probe_fn, "probe/")
            if timed_out:
                self.acc.print(f"[{self.stage}] max_minutes={cfg.max_minutes} reached at step {self.step}")
                break
        bar.close()
        if validate_fn is not None and validating and self.step >= until:
            self._validate(validate_fn)
        self.log.flush()
        return self.step

    def _validate(self, validate_fn, prefix: str = "val/") -> None:
        t = time.perf_counter()
        values = validate_fn(self.step) or {}
        values["validate_s" if prefix == "val/" else "seconds"] = time.perf_counter() - t
        self.log.scalars(self.step, values, prefix=prefix)
        shown = ", ".join(f"{k}={v:.3f}" for k, v in values.items() if isinstance(v, float))
        self.acc.print(f"[{self.stage}] step {self.step}: {shown}")
