"""Wan2.1 VAE: shapes, causality, streaming == whole-sequence, normalization, input errors."""
import pytest
import torch

from libragen_core.errors import ConfigError, InputError
from libragen_core.models.wan_vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    StreamState,
    VAEConfig,
    WanVAE,
)


def random_vae(dim: int = 8, seed: int = 0) -> WanVAE:
    """A small Wan2.1-layout VAE with every weight random (norm gains too, so none is a no-op)."""
    torch.manual_seed(seed)
    vae = WanVAE(VAEConfig.small(dim)).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
    return vae


@pytest.fixture(scope="module")
def vae():
    return random_vae()


def video(frames: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1


def test_real_config_layout_on_meta():
    with torch.device("meta"):
        real = WanVAE(VAEConfig.wan21())
    sd = real.state_dict()
    assert sd["encoder.conv1.weight"].shape == (96, 3, 3, 3, 3)
    assert sd["conv1.weight"].shape == (32, 32, 1, 1, 1) and sd["conv2.weight"].shape == (16, 16, 1, 1, 1)
    assert sd["decoder.upsamples.3.time_conv.weight"].shape == (768, 384, 3, 1, 1)
    assert "encoder.downsamples.2.resample.1.weight" in sd and "encoder.downsamples.2.time_conv.weight" not in sd
    assert sd["encoder.downsamples.5.time_conv.weight"].shape == (192, 192, 3, 1, 1)
    assert sd["decoder.head.2.weight"].shape == (3, 96, 3, 3, 3)
    assert len(sd) == 194
    # published size of the Wan2.1 VAE: about 127M parameters
    assert 126e6 < sum(p.numel() for p in real.parameters()) < 128e6
    assert real.config.time_factor == 4 and real.config.space_factor == 8


@pytest.mark.parametrize("frames, latent_frames", [(1, 1), (5, 2), (9, 3), (17, 5)])
def test_shapes(vae, frames, latent_frames):
    x = video(frames, size=16)
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape == (1, 16, latent_frames, 2, 2)
        y = vae.decode(z)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert vae.latent_shape(frames, 16, 16) == (latent_frames, 2, 2)


def test_non_square_and_batch(vae):
    x = torch.rand(2, 3, 5, 16, 40) * 2 - 1
    with torch.no_grad():
        z = vae.encode_raw(x)
        assert z.shape == (2, 16, 2, 2, 5)
        single = vae.encode_raw(x[1:])
    torch.testing.assert_close(z[1:], single, atol=1e-5, rtol=0)


def test_streamed_equals_whole_sequence(vae):
    x = video(17, size=16)
    with torch.no_grad():
        z = vae.encode_raw(x)
        z_whole = vae.encode_raw(x, chunked=False)
        y = vae.decode_raw(z, clamp=False)
        y_whole = vae.decode_raw(z, chunked=False, clamp=False)
        pieces = list(vae.iter_decode_raw(z, clamp=False))
    assert (z - z_whole).abs().max() < 1e-5
    assert (y - y_whole).abs().max() < 1e-5
    assert [p.shape[2] for p in pieces] == [1, 4, 4, 4, 4]
    torch.testing.assert_close(torch.cat(pieces, 2), y, atol=0, rtol=0)


def test_stream_cache_does_not_grow_with_frames(vae):
    # what a stream keeps between chunks is a fixed number of frames per causal conv
    x = video(21, size=16)
    z = torch.randn(1, 16, 6, 2, 2)
    enc, dec = StreamState(), StreamState()
    enc_sizes, dec_sizes = [], []
    with torch.no_grad():
        vae.encoder(x[:, :, :1], enc)
        for s in range(1, 21, 4):
            vae.encoder(x[:, :, s:s + 4], enc)
            enc_sizes.append(enc.nbytes())
        for i in range(6):
            vae.decoder(vae.conv2(z[:, :, i:i + 1]), dec)
            dec_sizes.append(dec.nbytes())
    assert len(set(enc_sizes[1:])) == 1 and enc_sizes[-1] > 0
    assert len(set(dec_sizes[2:])) == 1 and dec_sizes[-1] > 0


def test_encoder_is_causal(vae):
    x = video(9)
    later = x.clone()
    later[:, :, 5:] = video(4, seed=7)  # frames 5..8 feed only latent frame 2
    first_changed = x.clone()
    first_changed[:, :, 1:] = video(8, seed=8)
    with torch.no_grad():
        z, z_later, z_first = vae.encode_raw(x), vae.encode_raw(later), vae.encode_raw(first_changed)
        z_alone = vae.encode_raw(x[:, :, :1])
        z_whole_later = vae.encode_raw(later, chunked=False)
    assert torch.equal(z[:, :, :2], z_later[:, :, :2])
    assert (z[:, :, 2] - z_later[:, :, 2]).abs().max() > 1e-3
    assert torch.equal(z[:, :, :1], z_first[:, :, :1])
    assert (z[:, :, 1:] - z_first[:, :, 1:]).abs().max() > 1e-3
    torch.testing.assert_close(z[:, :, :1], z_alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(z[:, :, :2], z_whole_later[:, :, :2], atol=1e-5, rtol=0)


def test_decoder_is_causal(vae):
    z = torch.randn(1, 16, 3, 4, 4)
    z2 = z.clone()
    z2[:, :, 2] = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        y, y2 = vae.decode_raw(z, clamp=False), vae.decode_raw(z2, clamp=False)
    assert torch.equal(y[:, :, :5], y2[:, :, :5])
    assert (y[:, :, 5:] - y2[:, :, 5:]).abs().max() > 1e-3


def test_normalization_uses_published_wan21_stats(vae):
    assert torch.allclose(vae.latents_mean.flatten(), torch.tensor(WAN21_LATENTS_MEAN))
    assert torch.allclose(vae.latents_std.flatten(), torch.tensor(WAN21_LATENTS_STD))
    x = video(5)
    with torch.no_grad():
        raw = vae.encode_raw(x)
        z = vae.encode(x)
        mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
        std = torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)
        torch.testing.assert_close(z, (raw - mean) / std)
        torch.testing.assert_close(vae.decode(z, clamp=False), vae.decode_raw(raw, clamp=False), atol=1e-5, rtol=0)


def test_own_latent_stats():
    cfg = VAEConfig(dim=8, z_dim=4, latents_mean=(1, 2, 3, 4), latents_std=(1, 1, 2, 2))
    v = WanVAE(cfg)
    raw = torch.ones(1, 4, 1, 1, 1)
    assert v.normalize(raw).flatten().tolist() == [0.0, -1.0, -1.0, -1.5]
    assert VAEConfig(dim=8, z_dim=4).stats() == ((0.0,) * 4, (1.0,) * 4)
    v.set_latent_stats([0.0] * 4, [2.0] * 4)
    assert v.normalize(raw).flatten().tolist() == [0.5] * 4
    with pytest.raises(ConfigError, match="positive"):
        v.set_latent_stats([0.0] * 4, [0.0] * 4)
    with pytest.raises(ConfigError, match="3 values; z_dim is 4"):
        VAEConfig(dim=8, z_dim=4, latents_mean=(0, 0, 0))
    with pytest.raises(ConfigError, match="temperal_downsample"):
        VAEConfig(dim_mult=(1, 2, 4, 4), temperal_downsample=(True, True))


@pytest.mark.parametrize("frames, message", [
    (18, "18 frames: use 17 or 21"), (2, "2 frames: use 1 or 5"), (0, "0 frames: use 1 "),
])
def test_bad_frame_counts(vae, frames, message):
    with pytest.raises(InputError, match=message):
        vae.encode(torch.zeros(1, 3, frames, 32, 32))


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 5, 100, 32), "height 100 is not a multiple of 8: use 96 or 104"),
    ((1, 3, 5, 32, 5), "width 5 is not a multiple of 8: use 8"),
    ((1, 4, 5, 32, 32), "4 channels; the VAE takes 3 .*alpha"),
    ((1, 1, 5, 32, 32), "1 channels; the VAE takes 3"),
    ((3, 5, 32, 32), r"\[batch, 3, frames, height, width\] tensor; got \(3, 5, 32, 32\)"),
])
def test_bad_video_shapes(vae, shape, message):
    with pytest.raises(InputError, match=message):
        vae.encode(torch.zeros(shape))


def test_bad_latents(vae):
    with pytest.raises(InputError, match="48 channels; this VAE takes 16 .*Wan2.2"):
        vae.decode(torch.zeros(1, 48, 2, 4, 4))
    with pytest.raises(InputError, match="floating point"):
        vae.decode(torch.zeros(1, 16, 2, 4, 4, dtype=torch.int64))
    with pytest.raises(InputError, match="floating point"):
        vae.encode(torch.zeros(1, 3, 5, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputError, match=r"\[batch, 16, frames, height, width\]"):
        vae.decode(torch.zeros(16, 2, 4, 4))


def test_bf16_close_to_fp32(vae):
    import copy

    half = copy.deepcopy(vae).to(torch.bfloat16)
    x = video(5, size=16)
    with torch.no_grad():
        ref, low = vae.encode_raw(x), half.encode_raw(x)
        y_ref, y_low = vae.decode_raw(ref, clamp=False), half.decode_raw(ref, clamp=False)
    assert low.dtype == torch.bfloat16 and y_low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()
    assert (y_low.float() - y_ref).abs().max() < 0.05 * y_ref.abs().max()


def test_gradients_flow_through_whole_sequence_path():
    v = random_vae(dim=4)
    x = video(5, size=16)
    z = v.encode(x, chunked=False)
    loss = (v.decode(z, chunked=False, clamp=False) - x).pow(2).mean()
    loss.backward()
    assert v.encoder.conv1.weight.grad.abs().sum() > 0 and v.decoder.head[2].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("grad", [False, True])
def test_lone_first_frame_matches_padded_3d_conv(grad):
    """A one-frame input takes a 2D shortcut; it must equal the 3D conv over zero-padded time."""
    import torch.nn.functional as F

    from libragen_core.models.wan_vae import CausalConv3d

    torch.manual_seed(0)
    conv = CausalConv3d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, 1, 9, 11)
    with torch.set_grad_enabled(grad):
        fast = conv(x)
        padded = F.conv3d(F.pad(x, (0, 0, 0, 0, 2, 0)), conv.weight, conv.bias, padding=(0, 1, 1))
        state = StreamState()
        streamed = conv(x, state)
    assert fast.shape == padded.shape == (2, 7, 1, 9, 11)
    assert torch.allclose(fast, padded, atol=1e-5) and torch.allclose(streamed, padded, atol=1e-5)
    # the stream still remembers the frame for the next chunk
    nxt = torch.randn(2, 5, 4, 9, 11)
    whole = F.conv3d(F.pad(torch.cat([x, nxt], 2), (0, 0, 0, 0, 2, 0)), conv.weight, conv.bias, padding=(0, 1, 1))
    assert torch.allclose(conv(nxt, state), whole[:, :, 1:], atol=1e-5)
