"""Training the small VAE: the image -> video inflation is exact key-frame hold."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libragen_core.models.wan_vae import VAEConfig, WanVAE  # noqa: E402
from tests.test_vae_model import random_vae  # noqa: E402
from training.common.vae_init import inflate_image_vae, kaiming_init  # noqa: E402


def test_kaiming_init_scales_by_fan_in_and_zeroes_attention_output():
    torch.manual_seed(0)
    vae = kaiming_init(WanVAE(VAEConfig.small(8)), gain=1.6)
    assert all(not b.proj.weight.detach().any() for b in vae.modules() if type(b).__name__ == "AttentionBlock")
    conv = vae.decoder.upsamples[0].residual[2]  # 32 -> 32 channels, 3x3x3: fan-in 864
    w = conv.weight.detach()
    assert abs(float(w.std()) - 1.6 / 864 ** 0.5) < 0.1 * 1.6 / 864 ** 0.5
    assert not conv.bias.detach().any()


def test_inflated_vae_is_key_frame_hold():
    vae = random_vae(dim=4)
    g = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 9, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        images = [vae.decode_raw(vae.encode_raw(video[:, :, t:t + 1]), clamp=False) for t in (0, 4, 8)]
        inflate_image_vae(vae)
        z = vae.encode_raw(video)
        out = vae.decode_raw(z, clamp=False)
    assert z.shape[2] == 3 and out.shape[2] == 9
    # latent frame k is the image latent of frame 4k ...
    for k, t in enumerate((0, 4, 8)):
        assert torch.allclose(z[:, :, k:k + 1], vae.encode_raw(video[:, :, t:t + 1]), atol=1e-5)
    # ... and decodes to four copies of that frame's image decoding (frame 0 to one)
    assert torch.allclose(out[:, :, 0:1], images[0], atol=1e-4)
    for k in (1, 2):
        for t in range(4 * k - 3, 4 * k + 1):
            assert torch.allclose(out[:, :, t:t + 1], images[k], atol=1e-4), (k, t)
