"""Spatial tiling: blend weights, exactness on a local function, closeness to untiled VAE output."""
import pytest
import torch
import torch.nn.functional as F

from libragen_core.errors import InputError
from libragen_core.models.vae_tiling import _blend, axis_weights, tile_starts
from libragen_core.models.wan_vae import VAEConfig, WanVAE


@pytest.mark.parametrize("size, tile, overlap", [(40, 16, 4), (16, 16, 4), (10, 16, 4), (34, 12, 4), (64, 20, 0)])
def test_tiles_cover_and_weights_sum_to_one(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and min(starts[-1] + tile, size) == size
    assert all(b - a <= tile for a, b in zip(starts, starts[1:]))
    total = torch.zeros(size * 2)
    for s, w in zip(starts, axis_weights(starts, tile, size, scale=2)):
        total[s * 2:s * 2 + len(w)] += w
    torch.testing.assert_close(total, torch.ones(size * 2))


def test_triple_overlaps_still_cover():
    # the shifted last tile can overlap two others; _blend divides by the summed weights
    starts = tile_starts(33, 12, 6)
    total = torch.zeros(33)
    for s, w in zip(starts, axis_weights(starts, 12, 33)):
        total[s:s + 12] += w
    assert starts == [0, 6, 12, 18, 21] and total.min() > 0.1


def test_blend_reproduces_a_local_function_exactly():
    # nearest-neighbour upsampling is local, so tiled and untiled must agree to rounding
    z = torch.randn(1, 2, 3, 21, 30)

    def up(t):
        return F.interpolate(t, scale_factor=(1, 8, 8), mode="nearest") * 3

    torch.testing.assert_close(_blend(up, z, 8, 3, 8, 1), up(z), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return WanVAE(VAEConfig.small(8)).eval()


def _report(name, tiled, full):
    d = (tiled - full).abs()
    print(f"{name}: max {d.max():.4f}, mean {d.mean():.4f} (output std {full.std():.4f})")
    return d.max().item(), d.mean().item()


def test_tiled_decode_close_to_untiled(vae):
    torch.manual_seed(1)
    z = torch.randn(1, 16, 1, 16, 16)
    with torch.no_grad():
        full = vae.decode(z, clamp=False)
        assert torch.equal(vae.decode(z, clamp=False, tile=16, overlap=4), full)
        butt = _report("decode, 8-latent-px tiles, no overlap", vae.decode(z, clamp=False, tile=8, overlap=0), full)
        blend = _report("decode, 12-latent-px tiles, overlap 4", vae.decode(z, clamp=False, tile=12, overlap=4), full)
    # Random weights and a frame-global attention block make tiles see a different context, so
    # tiling is never exact here; overlapping, blended tiles must be clearly closer than butted ones.
    assert blend[0] < 0.5 * butt[0] and blend[1] < 0.5 * butt[1] and blend[1] < 0.2 * full.std()


def test_tiled_encode_close_to_untiled(vae):
    torch.manual_seed(2)
    x = torch.rand(1, 3, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        full = vae.encode_raw(x)
        assert torch.equal(vae.encode_raw(x, tile=128, overlap=32), full)
        butt = _report("encode, 64-px tiles, no overlap", vae.encode_raw(x, tile=64, overlap=0), full)
        blend = _report("encode, 96-px tiles, overlap 32", vae.encode_raw(x, tile=96, overlap=32), full)
    assert blend[0] < 0.5 * butt[0] and blend[1] < 0.5 * butt[1] and blend[1] < 0.1 * full.std()


def test_bad_tiles(vae):
    with pytest.raises(InputError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 1, 64, 64), tile=60, overlap=16)
    with pytest.raises(InputError, match="more than half the tile"):
        vae.decode(torch.zeros(1, 16, 1, 8, 8), tile=8, overlap=6)
