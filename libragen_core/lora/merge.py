"""Merging several LoRAs with weights w_i into one (docs/method.md section 3-4: dW = a*dW_cross + (1-a)*dW_in).

Methods (per layer; a layer missing from a LoRA counts as dW_i = 0 there):
  linear / concat  exact sum  sum_i w_i dW_i, kept low-rank by stacking factors:
                   down = [down_1; down_2; ...], up = [w_1 s_1 up_1, w_2 s_2 up_2, ...], alpha = rank
                   (rank = sum of ranks). concat is the same operation under its structural name.
  svd              the exact sum, truncated to `rank` by SVD (computed from the stacked factors by
                   two QRs, so no [out, in] matrix is built); reports the relative Frobenius error.
  ties             TIES-merging on full dW_i: keep the top `density` fraction by magnitude of each,
                   elect a sign per entry from the weighted sum, average the entries that agree
                   (weighted mean over agreeing LoRAs, times sum w_i so that with nothing trimmed and
                   no conflict it equals linear). Result: full diffs, or SVD to `rank`.
  dare             DARE: drop each entry of dW_i with probability p (seeded), rescale the rest by
                   1 / (1 - p), then the weighted sum. p = 0 is linear. Full diffs, or SVD to `rank`.
  naive            w-weighted average of down and of up separately. NOT exact:
                   (sum w_i u_i)(sum w_j d_j) has cross terms u_i d_j; kept to demonstrate that.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, InputError
from .weights import LoraFactors, LoraWeights, natural_key

METHODS = ("linear", "concat", "svd", "ties", "dare", "naive")


@dataclass
class MergeResult:
    lora: LoraWeights
    method: str
    # per layer: ||dW_target - dW_result||_F / ||dW_target||_F, where the target is what the method
    # defines (the exact weighted sum for linear/concat/svd/naive, the dense TIES/DARE result when
    # it is SVD-truncated); 0 where the result is exact
    rel_errors: dict[str, float] = field(default_factory=dict)
    # per layer squared norms, to aggregate the error over the whole model
    _sq_err: dict[str, float] = field(default_factory=dict, repr=False)
    _sq_norm: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def total_rel_error(self) -> float:
        """Relative Frobenius error over all layers together (sqrt of summed squares)."""
        norm = sum(self._sq_norm.values())
        return math.sqrt(sum(self._sq_err.values()) / norm) if norm > 0 else 0.0

    @property
    def max_rel_error(self) -> float:
        return max(self.rel_errors.values(), default=0.0)


def merge_loras(loras: Sequence[LoraWeights], weights: Sequence[float] | None = None, method: str = "linear", *,
                rank: int | None = None, density: float = 0.2, drop_rate: float = 0.5, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> MergeResult:
    """Merge LoRAs for the same model. `weights` default to 1/n each. See the module docstring."""
    loras = list(loras)
    if not loras:
        raise InputError("merge_loras needs at least one LoRA")
    weights = [1.0 / len(loras)] * len(loras) if weights is None else [float(w) for w in weights]
    if len(weights) != len(loras):
        raise InputError(f"got {len(loras)} LoRAs but {len(weights)} weights; give one weight per LoRA")
    if method not in METHODS:
        raise ConfigError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise ConfigError(f"rank must be a positive integer, got {rank!r}")
    if method in ("linear", "concat", "naive") and rank is not None:
        raise ConfigError(f"the {method} merge has no target rank; use method='svd' to truncate to rank {rank}")
    if method == "svd" and rank is None:
        raise ConfigError("the svd merge needs a target rank (e.g. rank=32)")
    if method == "ties":
        if not 0.0 < density <= 1.0:
            raise ConfigError(f"ties density is the kept fraction per LoRA, in (0, 1]; got {density}")
        if any(w < 0 for w in weights):
            raise ConfigError("ties needs non-negative weights (the sign vote is weighted)")
    if method == "dare" and not 0.0 <= drop_rate < 1.0:
        raise ConfigError(f"dare drop_rate p must be in [0, 1); got {drop_rate}")

    names = _layer_union(loras)
    result = MergeResult(LoraWeights(metadata={"method": f"merge:{method}", "merge_weights": repr(weights)}),
                         method)
    for name in names:
        present = [(lo, w) for lo, w in zip(loras, weights) if name in lo]
        if method in ("linear", "concat"):
            _put(result, name, *_concat(name, present))
        elif method == "naive":
            f = _naive(name, present)
            # its error is measured against the exact weighted sum it fails to reproduce
            exact = merged_delta(loras, weights, name).double()
            _put(result, name, f, float((f.delta(torch.float64) - exact).square().sum()),
                 float(exact.square().sum()))
        elif method == "svd":
            _put(result, name, *_svd_of_sum(name, present, rank))
        else:
            deltas = [(lo.delta(name), w) for lo, w in present]
            if method == "ties":
                full = ties_merge([d for d, _ in deltas], [w for _, w in deltas], density)
            else:
                full = dare_merge([d for d, _ in deltas], [w for _, w in deltas], drop_rate,
                                  seed=_layer_seed(seed, name))
            if rank is None:
                result.lora.diffs[name] = full
                result.rel_errors[name] = 0.0
                result._sq_norm[name] = float(full.square().sum())
            else:
                _put(result, name, *_truncate_full(full, rank))
    if dtype != torch.float32:
        result.lora = result.lora.to(dtype)
    return result


def merged_delta(loras: Sequence[LoraWeights], weights: Sequence[float], name: str) -> torch.Tensor:
    """The exact weighted sum of one layer's dW (fp32): the reference every method is judged by."""
    out = None
    for lo, w in zip(loras, weights):
        if name in lo:
            d = lo.delta(name) * w
            out = d if out is None else out + d
    if out is None:
        raise KeyError(name)
    return out


# ---------------------------------------------------------------- full-matrix methods

def ties_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES on same-shape tensors: trim to top-`density` magnitude, elect sign, disjoint weighted mean."""
    stacked = torch.stack([_trim_top(d.float(), density) for d in deltas])
    w = torch.tensor(weights, dtype=torch.float32).view(-1, *([1] * (stacked.ndim - 1)))
    weighted = stacked * w
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = (stacked.sign() == elected) & (stacked != 0)
    wsum_agree = (w * agree).sum(0)
    mean = (weighted * agree).sum(0) / wsum_agree.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(wsum_agree > 0, mean, torch.zeros_like(mean)) * float(sum(weights))


def dare_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], drop_rate: float,
               seed: int = 0) -> torch.Tensor:
    """DARE: Bernoulli(1 - p) keep mask per tensor from a seeded generator, rescale by 1/(1-p), weighted sum."""
    gen = torch.Generator().manual_seed(int(seed))
    out = torch.zeros_like(deltas[0], dtype=torch.float32)
    for d, w in zip(deltas, weights):
        d = d.float()
        if drop_rate > 0:
            keep = torch.rand(d.shape, generator=gen) >= drop_rate
            d = d * keep / (1.0 - drop_rate)
        out += w * d
    return out


def _trim_top(t: torch.Tensor, density: float) -> torch.Tensor:
    k = int(density * t.numel())
    if k >= t.numel():
        return t
    if k == 0:
        return torch.zeros_like(t)
    # threshold at the k-th largest magnitude (a selection, ~2x faster than topk at 14M entries);
    # entries tied with it are kept as well
    mag = t.abs()
    threshold = torch.kthvalue(mag.reshape(-1), t.numel() - k + 1).values
    return t * (mag >= threshold)


# ---------------------------------------------------------------- low-rank methods

def _concat(name: str, present) -> tuple[LoraFactors | torch.Tensor, float]:
    if any(name in lo.diffs for lo, _ in present):
        full = sum(lo.delta(name) * w for lo, w in present)
        return full, 0.0
    downs = [lo.factors[name].down.float() for lo, _ in present]
    ups = [lo.factors[name].up.float() * (w * lo.factors[name].scale) for lo, w in present]
    r = sum(d.shape[0] for d in downs)
    return LoraFactors(torch.cat(downs, 0), torch.cat(ups, 1), float(r)), 0.0


def _naive(name: str, present) -> LoraFactors:
    if any(name in lo.diffs for lo, _ in present) or len({lo.factors[name].rank for lo, _ in present}) != 1:
        raise ConfigError(
            f"naive A/B averaging needs every LoRA to have factors of one rank in layer {name}; "
            "use linear/concat (exact) instead"
        )
    down = sum(lo.factors[name].down.float() * w for lo, w in present)
    up = sum(lo.factors[name].up.float() * lo.factors[name].scale * w for lo, w in present)
    return LoraFactors(down, up, float(down.shape[0]))


def _svd_of_sum(name: str, present, rank: int):
    if any(name in lo.diffs for lo, _ in present):
        return _truncate_full(sum(lo.delta(name) * w for lo, w in present), rank)
    cat, _ = _concat(name, present)
    # dW = U D with U [out, R], D [R, in]; QR both sides so the SVD runs on an R x R core.
    q1, r1 = torch.linalg.qr(cat.up.double())
    q2, r2 = torch.linalg.qr(cat.down.double().T)
    u, s, vh = torch.linalg.svd(r1 @ r2.T)
    return _factors_from_svd(q1 @ u, s, vh @ q2.T, rank)


def _truncate_full(full: torch.Tensor, rank: int):
    u, s, vh = torch.linalg.svd(full.double(), full_matrices=False)
    return _factors_from_svd(u, s, vh, rank)


def _factors_from_svd(u, s, vh, rank):
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    factors = LoraFactors((root[:, None] * vh[:r]).float(), (u[:, :r] * root).float(), float(r))
    sq_norm = float(s.square().sum())
    sq_err = float(s[r:].square().sum())
    return factors, sq_err, sq_norm


def _put(result: MergeResult, name: str, value, sq_err: float = 0.0, sq_norm: float | None = None) -> None:
    if isinstance(value, LoraFactors):
        result.lora.factors[name] = value
    else:
        result.lora.diffs[name] = value
    if sq_norm is None:
        sq_norm = _sq_frobenius(value)
    result._sq_err[name] = sq_err
    result._sq_norm[name] = sq_norm
    result.rel_errors[name] = math.sqrt(sq_err / sq_norm) if sq_norm > 0 else 0.0


def _sq_frobenius(value) -> float:
    if isinstance(value, LoraFactors):
        # ||s U D||^2 = s^2 trace((U^T U)(D D^T)): no [out, in] product needed
        u, d = value.up.double(), value.down.double()
        return float((u.T @ u * (d @ d.T)).sum()) * value.scale ** 2
    return float(value.double().square().sum())


def dense_merge_bytes(loras: Sequence[LoraWeights]) -> int:
    """Bytes of what a ties / dare merge without a rank returns: one fp32 [out, in] diff per layer
    (for a 14B Wan DiT's 400 block Linears, 56 GB): check it against free memory first."""
    return 4 * sum(math.prod(shape) for shape in _layer_shapes(loras).values())


def _layer_union(loras: Sequence[LoraWeights]) -> list[str]:
    shapes = _layer_shapes(loras)
    return sorted(shapes, key=natural_key)


def _layer_shapes(loras: Sequence[LoraWeights]) -> dict[str, tuple[int, int]]:
    shapes: dict[str, tuple[int, int]] = {}
    for i, lo in enumerate(loras):
        for n in lo.layer_names():
            s = lo.shape(n)
            if shapes.setdefault(n, s) != s:
                raise InputError(
                    f"LoRA #{i + 1} patches {n} with shape {s} but an earlier one with {shapes[n]}; "
                    "they were trained for different models"
                )
    return shapes


def _layer_seed(seed: int, name: str) -> int:
    # per-layer stream: a layer's mask does not depend on which other layers the LoRAs have
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)
