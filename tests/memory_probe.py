"""Peak memory of a forward pass traced on fake tensors: shapes only, nothing allocated.

`traced_peak` runs a function under PyTorch's FakeTensorMode (tensors that carry shape, dtype and
device but no data) and follows every storage the function creates until Python frees it, the
same way the real allocator sees them. It is the reference the memory estimate
(libragen_core.memory) is tested against at real Wan sizes that no test machine could hold.
Kernel workspaces (matmul packing, the flash kernel's per-thread buffers) are not tensors and are
not seen; the measured-peak test on CPU covers them.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from unittest import mock

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _Tracker(TorchDispatchMode):
    def __init__(self, foreign: set[int]):
        super().__init__()
        self.foreign = foreign
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if ref.cdata not in self.live and ref.cdata not in self.foreign:
                    n = t.untyped_storage().nbytes()
                    self.live[ref.cdata] = (ref, n)
                    self.current += n
        self.peak = max(self.peak, self.current)
        return out


def fake_mode() -> FakeTensorMode:
    return FakeTensorMode()


def traced_peak(fn: Callable[[], object], existing: list[torch.Tensor]) -> int:
    """Peak bytes of the storages `fn` creates (tensors in `existing`, e.g. weights and inputs,
    are not counted). Call inside the FakeTensorMode the model and inputs were built in."""
    foreign = {StorageWeakRef(t.untyped_storage()).cdata for t in existing}
    import libragen_core.models.wan_dit as wan_dit

    # compact_padding reads token values (how many are zero), which fake tensors do not have; the
    # context given is taken as already compact (the prompt's tokens plus one zero row)
    patch = mock.patch.object(wan_dit, "compact_padding", lambda c: (c, None))
    with patch, torch.no_grad(), warnings.catch_warnings(), contextlib.ExitStack() as stack:
        # oneDNN's convolution has no fake-tensor kernel; the plain one allocates the same output
        warnings.simplefilter("ignore")  # the flags' note about TF32 on Intel GPUs
        stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
        tracker = stack.enter_context(_Tracker(foreign))
        fn()
    return tracker.peak


def dit_peak(config, batch_rows: int, frames: int, h: int, w: int, context_tokens: int, dtype) -> int:
    """Traced peak of one WanDiT forward on latents [batch_rows, C, frames, h, w]."""
    from libragen_core.models.wan_dit import WanDiT

    with fake_mode():
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = WanDiT(config)
        finally:
            torch.set_default_dtype(default)
        x = torch.randn(batch_rows, config.in_dim, frames, h, w)
        t = torch.full((batch_rows,), 500.0)
        ctx = torch.randn(batch_rows, context_tokens, config.text_dim)
        existing = [*model.parameters(), *model.buffers(), x, t, ctx]
        return traced_peak(lambda: model(x, t, ctx), existing)


def vae_peaks(vae_config, latent_frames: int, h: int, w: int, refs: int, tile: int | None = None,
              overlap: int = 8) -> tuple[int, int]:
    """Traced peaks of decoding one video latent [1, z, latent_frames, h, w] to frames in 0..1 (as
    pipeline.decode_frames does: WanVAE.decode, then scaled in place) and of WanVAE.encode of `refs`
    one-frame references at the video's size; tile: decode tiles in latent pixels (encode tiles
    are 8x that in pixels, overlap too)."""
    from libragen_core.models.wan_vae import WanVAE

    s = vae_config.space_factor
    dec_kw = {} if tile is None else {"tile": tile, "overlap": overlap}
    enc_kw = {} if tile is None else {"tile": tile * s, "overlap": overlap * s}
    with fake_mode():
        vae = WanVAE(vae_config)
        weights = [*vae.parameters(), *vae.buffers()]
        z = torch.randn(1, vae_config.z_dim, latent_frames, h, w)
        decode = traced_peak(lambda: vae.decode(z, **dec_kw).float().add_(1.0).mul_(0.5).clamp_(0, 1), [*weights, z])
        x = torch.randn(refs, 3, 1, h * s, w * s)
        encode = traced_peak(lambda: vae.encode(x, **enc_kw), [*weights, x])
    return decode, encode


MEASURE_DIT = r"""
import json, sys, torch
from libragen_core.models.wan_dit import WanDiT, WanDiTConfig
cfg, rows, frames, h, w, ctx_len, dtype, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
dtype = getattr(torch, dtype)
model = WanDiT(WanDiTConfig(**cfg)).to(dtype).eval()
x = torch.randn(rows, model.config.in_dim, frames, h, w).to(dtype)
t = torch.full((rows,), 500.0)
ctx = torch.randn(rows, ctx_len, model.config.text_dim)  # no zero rows: compact already

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

with torch.no_grad():
    model(x, t, ctx)  # first call: thread pools, kernel caches
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    model(x, t, ctx)
    print(json.dumps({"rise": status("VmHWM") - before}))
"""


def measured_dit_peak(config, rows: int, frames: int, h: int, w: int, context_tokens: int, dtype: str,
                      threads: int = 2) -> int:
    """Rise of a fresh process's peak RSS over one real WanDiT forward on the CPU (after a warm-up
    call), with glibc returning every allocation over 64 KiB to the system when freed, so the peak is
    the forward's own. Linux only (/proc/self/clear_refs)."""
    import json
    import os
    import subprocess
    import sys
    from dataclasses import asdict

    args = json.dumps([asdict(config), rows, frames, h, w, context_tokens, dtype, threads])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", MEASURE_DIT, args], capture_output=True, text=True, env=env,
                         timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["rise"]
