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
    # oneDNN's convolution has no fake-tensor kernel; the plain one allocates the same output
    with patch, torch.no_grad(), torch.backends.mkldnn.flags(enabled=False), contextlib.ExitStack() as stack:
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
