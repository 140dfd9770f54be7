"""The adapter's plain fallbacks (outside ComfyUI), the preview map and the attention switch."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from libragen_core.errors import CheckpointError, InputError
from tests.pack import load_pack

REPO = Path(__file__).resolve().parents[1]



pack = load_pack()
adapter = pack.nodes.adapter
N = pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return N["LibraGenLoadModel"]().load("(embedded) libragen-sprite", "(embedded)", "(embedded)")[0]


def test_model_folders_fall_back_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(adapter.MODELS_DIR_ENV, raising=False)
    assert adapter.list_models("loras") == []
    with pytest.raises(CheckpointError, match="set LIBRAGEN_MODELS_DIR"):
        adapter.save_folder("loras")
    monkeypatch.setenv(adapter.MODELS_DIR_ENV, str(tmp_path))
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "vae" / "notes.txt").write_text("not a model")
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    assert adapter.list_models("vae") == ["a.safetensors"]
    assert adapter.model_path("vae", "a.safetensors") == (tmp_path / "vae" / "a.safetensors").resolve()
    with pytest.raises(CheckpointError, match="'../secret.safetensors' was not found"):
        adapter.model_path("vae", "../secret.safetensors")  # names never leave their folder
    assert adapter.model_mtime("vae", "gone.safetensors") != adapter.model_mtime("vae", "gone.safetensors")
    assert adapter.save_folder("loras") == tmp_path / "loras"


def test_plain_progress_interrupt_and_placement():
    assert not adapter.previews_enabled()
    adapter.check_interrupted()  # nothing to interrupt outside ComfyUI
    bar = adapter.Progress(3)
    for i in range(1, 4):
        bar.update(i, Image.new("RGB", (8, 8)))
    bar.close()
    layer = torch.nn.Linear(2, 2)
    with adapter.placed({"x": layer}, {}, "cpu only") as device:
        assert device.type == "cpu" and layer.weight.device.type == "cpu"
    with adapter.placed({"x": layer}, {}, "auto") as device:
        assert device == adapter.plain_device() and layer.weight.device.type == device.type


def test_preview_map_is_the_least_squares_fit_and_makes_an_image(model):
    from libragen_pack.nodes.preview import fit_latent_rgb, probe_images

    vae = model.bundle.vae
    rgb = fit_latent_rgb(vae)
    assert rgb.weight.shape == (16, 3) and rgb.bias.shape == (3,)
    images = probe_images(8)
    with torch.no_grad():
        z = vae.encode((images * 2 - 1).unsqueeze(2))[:, :, 0]
    x = z.permute(0, 2, 3, 1).reshape(-1, 16)
    target = F.avg_pool2d(images, 8).permute(0, 2, 3, 1).reshape(-1, 3)
    residual = x @ rgb.weight + rgb.bias - target
    # normal equations of the fit: the residual is orthogonal to every latent channel and the bias
    features = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    assert float((features.T @ residual).abs().max()) < 1e-3 * len(x)
    assert float(residual.square().mean()) < float(target.var(dim=0).mean())
    video = torch.randn(1, 16, 3, 8, 8)
    img = rgb.image(video)
    assert img.size == (64, 64) and img.mode == "RGB"
    frame = torch.from_numpy(np.array(img.resize((8, 8), Image.NEAREST))).float() / 255
    torch.testing.assert_close(frame, rgb(video[0, :, 1]), atol=1 / 255 + 1e-6, rtol=0)


def test_attention_choices(model):
    from libragen_pack.nodes import runtime

    x = torch.randn(1, 16, 2, 8, 8)
    t = torch.tensor([500.0])
    ctx = torch.randn(1, 12, 256)
    dit = model.bundle.dit
    with torch.no_grad():
        ref = dit(x, t, ctx)
        for choice in ("math", "flash", "efficient"):
            with runtime.attention(choice):
                torch.testing.assert_close(dit(x, t, ctx), ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(InputError, match="unknown attention choice 'fast'"):
        with runtime.attention("fast"):
            pass


def test_client_text_names_files_relative_to_the_known_folders(tmp_path, monkeypatch):
    monkeypatch.setenv(adapter.MODELS_DIR_ENV, str(tmp_path / "models"))
    lora = tmp_path / "models" / "loras" / "x.safetensors"
    assert adapter.client_path(lora) == "models/loras/x.safetensors"
    assert adapter.client_text(f"{lora} is truncated; see {tmp_path / 'models'}.") == \
        "models/loras/x.safetensors is truncated; see models."
    assert adapter.client_path(tmp_path / "models2" / "y.png") == ".../y.png"  # a neighbour is not the folder
    assert adapter.client_path(adapter.PACK_DIR / "libragen_core" / "assets" / "a.json") == \
        f"custom_nodes/{adapter.PACK_DIR.name}/libragen_core/assets/a.json"
    assert adapter.client_text("C:\\Users\\bob\\ComfyUI\\x.png and /home/bob/secret/y.png") == "...\\x.png and .../y.png"
    for kept in ("frames 18 is not 4k+1", "a 1/2 chance", "http://127.0.0.1:8188/prompt", "and/or", "Ref 1[the dot]"):
        assert adapter.client_text(kept) == kept


def test_node_errors_name_files_as_clients_see_them(model, tmp_path, monkeypatch):
    monkeypatch.setenv(adapter.MODELS_DIR_ENV, str(tmp_path))
    (tmp_path / "loras").mkdir()
    broken = tmp_path / "loras" / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    merge = N["LibraGenLoraMerge"]()
    with pytest.raises(CheckpointError) as info:
        merge.merge(model, lora_1="broken.safetensors", weight_1=1.0, lora_2="None", lora_3="None", lora_4="None")
    message = str(info.value)
    assert "models/loras/broken.safetensors" in message and str(tmp_path) not in message, message
    assert str(broken) in str(info.value.__cause__)  # the original, for the server log's traceback
    assert str(model) == "LIBRAGEN_MODEL(libragen-sprite)"  # what ComfyUI lists as the input value
