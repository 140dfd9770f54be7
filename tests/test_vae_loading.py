"""load_vae / save_vae on real small safetensors files: round trip, config detection, strict errors."""
import pytest
import torch

from libragen_core.errors import CheckpointError
from libragen_core.io.safetensors_file import save_state_dict
from libragen_core.models.wan_vae import VAEConfig, WanVAE, detect_vae_config, load_vae, save_vae


def _weights(cfg: VAEConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in WanVAE(cfg).state_dict().items()}


@pytest.fixture(scope="module")
def small_sd():
    return _weights(VAEConfig.small(8))


def test_round_trip_keeps_weights_stats_and_outputs(tmp_path):
    torch.manual_seed(3)
    vae = WanVAE(VAEConfig(dim=8, dim_mult=(1, 2, 2, 4), num_res_blocks=1))
    vae.set_latent_stats(torch.linspace(-1, 1, 16), torch.linspace(0.5, 2, 16))
    path = save_vae(vae, tmp_path / "sprite_vae.safetensors")
    loaded = load_vae(path)
    assert loaded.config.dim_mult == (1, 2, 2, 4) and loaded.config.num_res_blocks == 1
    assert loaded.latent_stats_from_file
    torch.testing.assert_close(loaded.latents_std.flatten(), torch.linspace(0.5, 2, 16))
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), vae.eval().encode(x), atol=0, rtol=0)


def test_released_layout_detection_and_published_stats(tmp_path, small_sd):
    path = save_state_dict(small_sd, tmp_path / "wan_vae.safetensors")
    vae = load_vae(path, dtype=torch.bfloat16)
    assert vae.config == VAEConfig.small(8)
    assert not vae.latent_stats_from_file and vae.latents_std.flatten()[0].item() == pytest.approx(2.8184, abs=1e-2)
    assert vae.conv2.weight.dtype == torch.bfloat16 and not vae.training
    shapes = {k: tuple(v.shape) for k, v in small_sd.items()}
    assert detect_vae_config(shapes) == VAEConfig.small(8)
    with torch.device("meta"):
        real = {k: tuple(v.shape) for k, v in WanVAE(VAEConfig.wan21()).state_dict().items()}
    assert detect_vae_config(real) == VAEConfig.wan21()


def test_prefixed_keys_load(tmp_path, small_sd):
    path = save_state_dict({f"first_stage_model.{k}": v for k, v in small_sd.items()}, tmp_path / "p.safetensors")
    assert load_vae(path).config.dim == 8


def test_missing_and_unexpected_keys_are_named(tmp_path, small_sd):
    sd = dict(small_sd)
    del sd["decoder.head.2.bias"]
    sd["decoder.extra.weight"] = torch.zeros(1)
    path = save_state_dict(sd, tmp_path / "broken_vae.safetensors")
    with pytest.raises(CheckpointError, match=r"broken_vae\.safetensors looks like a Wan2.1 VAE.*"
                                              r"missing keys: decoder\.head\.2\.bias.*unexpected keys: decoder\.extra"):
        load_vae(path)


def test_wrong_shape_is_named(tmp_path, small_sd):
    sd = dict(small_sd)
    sd["decoder.conv1.weight"] = torch.zeros(64, 16, 3, 3, 2)
    with pytest.raises(CheckpointError, match=r"wrong shapes: decoder\.conv1\.weight \(64, 16, 3, 3, 2\)"):
        load_vae(save_state_dict(sd, tmp_path / "v.safetensors"))


@pytest.mark.parametrize("keys, family", [
    ({"decoder.upsamples.0.upsamples.0.residual.2.weight": (4, 4), "decoder.middle.0.residual.0.gamma": (4,)},
     "a Wan2.2 VAE .*not supported"),
    ({"blocks.0.self_attn.q.weight": (4, 4), "patch_embedding.weight": (4, 16, 1, 2, 2)}, "a Wan DiT"),
    ({"model.diffusion_model.blocks.0.self_attn.q.weight": (4, 4)}, "a Wan DiT"),
    ({"encoder.conv_in.weight": (4, 3, 3, 3, 3), "decoder.up_blocks.0.resnets.0.conv1.weight": (4, 4)},
     "a diffusers-format VAE"),
    ({"encoder.conv_in.weight": (4, 3, 3, 3), "decoder.conv_in.weight": (4, 4, 3, 3)}, "an image VAE"),
    ({"shared.weight": (8, 4), "encoder.block.0.layer.0.SelfAttention.q.weight": (4, 4)}, "a T5 text encoder"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": (2, 4)}, "a LoRA"),
    ({"something.else": (3,)}, "not a model family"),
])
def test_other_families_are_recognised(tmp_path, keys, family):
    path = save_state_dict({k: torch.zeros(s) for k, s in keys.items()}, tmp_path / "picked.safetensors")
    with pytest.raises(CheckpointError, match=f"picked.safetensors is not a Wan2.1 VAE: it looks like {family}"):
        load_vae(path)


def test_file_errors_come_from_the_safe_reader(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "nope.safetensors")
    (tmp_path / "vae.pth").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="pickle-based"):
        load_vae(tmp_path / "vae.pth")
