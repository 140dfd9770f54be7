"""The memory estimate: exact against traced peaks at real Wan shapes, close to a measured CPU peak,
and every stage that allocates refuses a size the machine cannot hold before allocating it.

Refusal tests ask for sizes far beyond any test machine (hundreds of GiB); they would take minutes
and then fail on allocation without the check. Each asserts the refusal came within seconds, that
the process's peak RSS rose by less than 1 GiB meanwhile, and that the message names the size
asked for, the estimate, what is free and the largest size that fits.
"""
from __future__ import annotations

import dataclasses
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from libragen_core import memory
from libragen_core.cli import main
from libragen_core.models.presets import DIT_PRESETS
from libragen_core.models.wan_vae import VAEConfig
from tests.memory_probe import dit_peak, measured_dit_peak, traced_peak, vae_peaks
from tests.pack import load_pack

GIB = 2**30
TEXT = 513  # umT5 tokens + the zero row compact_padding keeps


N = load_pack().NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return N["LibraGenLoadModel"]().load("(embedded) libragen-sprite", "(embedded)", "(embedded)")[0]


# ---------------------------------------------------------------- the estimate is right

@pytest.mark.parametrize("name", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dit_call_matches_the_traced_peak_of_real_wan_shapes(name, dtype):
    """480p, 81 frames, one reference, three guidance passes batched: the real module built on fake
    tensors, every storage it creates followed until freed."""
    cfg = DIT_PRESETS[name]
    rows, frames, h, w = 3, 21 + 1, 60, 104
    a = memory.activation_bytes(dtype)
    estimate = sum(memory.dit_call(cfg, rows, frames * h * w // 4, TEXT, a, a != 4).values())
    traced = dit_peak(cfg, rows, frames, h, w, TEXT, dtype)
    assert estimate == pytest.approx(traced, rel=0.005), (estimate / GIB, traced / GIB)
    assert traced > 4 * GIB  # a real size: gigabytes of activations, none of them allocated


def test_the_peak_is_one_blocks_whatever_the_depth():
    """Why a 2-block model with the 1.3B's block shapes stands for the 30-block one when measuring."""
    cfg = DIT_PRESETS["wan2.1-t2v-1.3b"]
    shallow = dataclasses.replace(cfg, num_layers=2)
    assert dit_peak(cfg, 2, 4, 16, 16, 21, torch.float32) == dit_peak(shallow, 2, 4, 16, 16, 21, torch.float32)


@pytest.mark.parametrize("dim", [96, 16])  # the Wan2.1 VAE, the embedded model's
@pytest.mark.parametrize("latent, refs, tile", [((21, 60, 104), 1, None), ((3, 256, 128), 2, None),
                                                ((1, 128, 128), 4, None), ((21, 60, 104), 2, 32),
                                                ((6, 128, 96), 1, 32)])
def test_vae_stages_match_their_traced_peaks(dim, latent, refs, tile):
    cfg = VAEConfig(dim=dim)
    frames, h, w = latent
    decode, encode = vae_peaks(cfg, frames, h, w, refs, tile)
    est_decode = memory.decoding(cfg, 1, frames, h * 8, w * 8, 4, tile=tile).total
    est = memory.reference_encoding(cfg, refs, h * 8, w * 8, 4, tile=None if tile is None else tile * 8)
    # within 1% under (small terms) and 10% over (the caches of a two-frame latent at 2048 x 1024)
    assert 0.99 * decode <= est_decode <= 1.10 * decode
    assert 0.99 * encode <= est.total - est.parts["reference pixels"] <= 1.05 * encode


@pytest.mark.parametrize("solver", ["euler", "unipc"])
@pytest.mark.parametrize("refs", [0, 2])
def test_sampling_estimate_covers_a_real_run(solver, refs):
    """The whole sampler (noise, reference slots, batched passes, solver history) run for real with
    a small DiT: the estimate is at least the traced peak, and within 10% of it."""
    from libragen_core.conditioning.subjects import Subjects
    from libragen_core.models.wan_dit import WanDiT, WanDiTConfig
    from libragen_core.sampling.sampler import sample

    cfg = WanDiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=1, text_dim=64)
    torch.manual_seed(0)
    dit = WanDiT(cfg).eval()
    f, h, w = 5, 32, 32
    ctx, neg = torch.randn(1, 20, 64), torch.randn(1, 20, 64)
    subjects = Subjects(latents=torch.randn(refs, 16, 1, h, w)) if refs else None
    existing = [*dit.parameters(), *dit.buffers(), ctx, neg] + ([subjects.latents] if refs else [])
    traced = traced_peak(lambda: sample(dit, (1, 16, f, h, w), ctx, neg, subjects=subjects, steps=3, solver=solver,
                                        cfg="phantom", seed=0), existing)
    passes = 3 if refs else 2
    est = memory.sampling(cfg, (1, 16, f, h, w), refs, passes, context_tokens=21, act_bytes=4).total
    assert traced <= est <= 1.10 * traced, (traced, est)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_dit_call_estimate_is_close_to_the_measured_cpu_peak(dtype):
    """The 1.3B's block shapes (2 of its 30 blocks: the peak is one block's, see above), random
    weights, run for real in a fresh process: the rise of its peak RSS over one forward."""
    cfg = dataclasses.replace(DIT_PRESETS["wan2.1-t2v-1.3b"], num_layers=2)
    rows, f, h, w = 3, 4, 32, 32
    measured = measured_dit_peak(cfg, rows, f, h, w, 21, dtype)
    a = 4 if dtype == "float32" else 2
    estimate = sum(memory.dit_call(cfg, rows, f * h * w // 4, 21, a, a != 4).values())
    print(f"\n1.3B block shapes, {dtype}, {rows} rows x {f * h * w // 4} tokens: estimate {estimate / 2**20:.1f} MiB, "
          f"measured {measured / 2**20:.1f} MiB")
    assert estimate == pytest.approx(measured, rel=0.05)


def test_guidance_passes_follow_the_schedule():
    from libragen_core.sampling.guidance import PRESETS
    from libragen_core.sampling.schedules import flow_sigmas

    sigmas = flow_sigmas(20, 3.0).tolist()
    assert memory.max_passes(PRESETS["libragen"], sigmas, has_refs=True) == 3
    assert memory.max_passes(PRESETS["libragen"], sigmas, has_refs=False) == 2
    assert memory.max_passes(PRESETS["stiv-jit"], sigmas, has_refs=True) == 2  # s_img == s_txt
    assert memory.max_passes(PRESETS["none"], sigmas, has_refs=True) == 1


def test_largest_fit_is_the_largest():
    cfg = DIT_PRESETS["wan2.1-t2v-1.3b"]

    def estimate(f, h, w):
        lat = (1, 16, (f - 1) // 4 + 1, h // 8, w // 8)
        return memory.sampling(cfg, lat, 1, 3, TEXT, 2, True)

    budget = 8 * GIB
    text = memory.largest_fit(estimate, 81, 720, 1280, budget)
    found = re.findall(r"(\d+) frames at (\d+)x(\d+)", text)
    (f1, w1, h1), (f2, w2, h2) = [tuple(map(int, m)) for m in found]
    assert (w1, h1) == (1280, 720) and f2 == 81
    assert estimate(f1, h1, w1).total <= budget < estimate(f1 + 4, h1, w1).total
    assert estimate(f2, h2, w2).total <= budget < estimate(f2, h2 + 16, round((h2 + 16) * 16 / 9 / 16) * 16).total
    assert "not even" in memory.largest_fit(estimate, 81, 720, 1280, 1 << 20)


def test_free_memory_is_read_from_the_system():
    free = memory.available_bytes("cpu")
    assert free is not None and 0 < free
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert free <= total


# ---------------------------------------------------------------- refused before allocating

class NoAllocation:
    """Asserts that the block ran in seconds and raised the process's peak RSS by < 1 GiB."""

    def __init__(self, seconds: float = 20.0):
        self.seconds = seconds

    @staticmethod
    def _hwm() -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) * 1024

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        self.start_peak, self.t0 = self._hwm(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.t0
        rise = self._hwm() - self.start_peak
        assert self.elapsed < self.seconds, f"took {self.elapsed:.1f} s"
        assert rise < GIB, f"peak RSS rose by {rise / GIB:.2f} GiB"
        return False


def needs_more_than_this_machine(estimate: memory.Estimate) -> None:
    if estimate.total <= memory.usable_bytes(memory.available_bytes("cpu")):
        pytest.skip(f"this machine could hold {memory.format_bytes(estimate.total)}")


def assert_clear(message: str, request: str) -> None:
    assert request in message
    assert re.search(r"needs about [\d.]+ (GiB|MiB)", message)
    assert re.search(r"but [\d.]+ (GiB|MiB) is free there", message)
    assert "the largest that fits:" in message or "not even" in message


def test_subject_encode_node_refuses_a_frame_the_vae_cannot_encode(model):
    from libragen_core.pipeline import references_estimate

    needs_more_than_this_machine(references_estimate(model.bundle, 4, 4096, 4096))
    image = torch.rand(1, 48, 40, 3)
    with NoAllocation(), pytest.raises(memory.OutOfMemory) as e:
        N["LibraGenSubjectEncode"]().encode(model, image, 4096, 4096, image_2=image, image_3=image, image_4=image)
    assert_clear(str(e.value), "4096x4096: encoding 4 references needs about")
    assert "VAE attention scores" in str(e.value)


def test_sampler_node_refuses_1025_frames_at_4096(model):
    from libragen_core.pipeline import sampling_estimate

    needs_more_than_this_machine(sampling_estimate(model.bundle, 1025, 4096, 4096, 0, "libragen", 2, 3.0))
    with NoAllocation(), pytest.raises(memory.OutOfMemory) as e:
        N["LibraGenSampler"]().sample(model, "a fox", "", frames=1025, width=4096, height=4096, steps=2, shift=3.0,
                                 solver="euler", seed=0, cfg_preset="libragen")
    assert_clear(str(e.value), "1025 frames at 4096x4096")
    assert "DiT FFN hidden" in str(e.value)


def test_decode_node_refuses_a_latent_too_large_to_decode(model):
    from libragen_core.pipeline import decoding_estimate

    needs_more_than_this_machine(decoding_estimate(model.bundle, 1, 5, 4096, 4096))
    latent = {"samples": torch.zeros(1, 16, 2, 512, 512)}  # 5 frames at 4096 x 4096
    with NoAllocation(), pytest.raises(memory.OutOfMemory) as e:
        N["LibraGenDecode"]().decode(model, latent)
    assert_clear(str(e.value), "5 frames at 4096x4096")


def test_cli_refuses_4001_frames_at_4096_before_sampling(tmp_path, capsys):
    out = tmp_path / "big.mp4"
    with NoAllocation(60.0):
        code = main(["generate", "--prompt", "a fox", "--frames", "4001", "--width", "4096", "--height", "4096",
                     "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert_clear(err, "4001 frames at 4096x4096")
    assert not any(tmp_path.iterdir())


def test_sizes_that_fit_still_run(model):

    latent = N["LibraGenSampler"]().sample(model, "a fox", "", frames=5, width=64, height=64, steps=1, shift=3.0,
                                      solver="euler", seed=0, cfg_preset="libragen")[0]
    assert latent["samples"].shape == (1, 16, 2, 8, 8)
    assert np.isfinite(latent["samples"].numpy()).all()
