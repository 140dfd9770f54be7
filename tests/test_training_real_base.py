"""A real base from files (tiny files in the Wan2.1 / umT5 layouts): frozen bf16 or fp8 DiT, fp32
LoRA, gradient checkpointing by default, LoRA-only checkpoint state, memory checks, offloaded
blocks; and the cache of latents and text features keyed by digests."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from libragen_core.errors import CheckpointError, ConfigError, InputError
from libragen_core.lora import add_lora, lora_trainable_parameters
from libragen_core.models.fp8 import Fp8Linear
from tests.real_data import write_real_dataset
from training.common.base_model import (
    AdapterState,
    BaseFiles,
    base_files,
    check_fits,
    dit_weight_bytes,
    gradient_checkpointing_on,
    load_frozen_dit,
    make_encoders,
    offload_frozen_blocks,
)
from training.common.cache import FeatureCache, FileFacts, prepare_stage_data
from training.common.config import from_dict
from training.common.losses import flow_matching_loss
from training.common.s2v_manifest import S2VManifest
from training.common.schema import DataConfig, PostChainConfig
from training.tiny_base import write_tiny_base

DATA = DataConfig(frames=9, fps=8.0, resolution=(48, 64), heldout=0, max_bad_fraction=0.5)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    paths = write_tiny_base(tmp_path_factory.mktemp("tiny"))
    return BaseFiles(paths["dit"], paths["vae"], paths["text_encoder"], None, "tiny-wan", True)


def _step(dit, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, 16, 3, 4, 6, generator=g)
    ctx = torch.zeros(1, 512, 4096)
    ctx[:, :7] = torch.randn(1, 7, 4096, generator=g)
    refs = torch.randn(1, 16, 1, 4, 6, generator=g)
    loss = flow_matching_loss(dit, x0, ctx, torch.tensor([0.6]), torch.randn(x0.shape, generator=g), refs=refs)
    loss.backward()
    return loss


@pytest.mark.slow
def test_real_base_loads_frozen_in_bf16_or_fp8_with_an_fp32_lora(base):
    dit = load_frozen_dit(base, "bf16")
    assert {p.dtype for p in dit.parameters()} == {torch.bfloat16}  # the fp16 file, never an fp32 copy
    assert not any(p.requires_grad for p in dit.parameters())
    add_lora(dit, rank=4)
    lora = lora_trainable_parameters(dit)
    assert lora and {p.dtype for p in lora} == {torch.float32}
    dit.gradient_checkpointing = gradient_checkpointing_on("auto", base.from_files)
    assert dit.gradient_checkpointing is True and gradient_checkpointing_on("auto", False) is False
    dit.train()
    _step(dit)
    grads = {n: p.grad for n, p in dit.named_parameters() if p.grad is not None}
    assert grads and all(".lora_" in n for n in grads) and all(g.dtype == torch.float32 for g in grads.values())

    fp8 = load_frozen_dit(base, "fp8")
    assert isinstance(fp8.blocks[0].ffn[0], Fp8Linear) and fp8.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    add_lora(fp8, rank=4)
    assert {p.dtype for p in lora_trainable_parameters(fp8)} == {torch.float32}
    fp8.train()
    assert torch.isfinite(_step(fp8))
    block_linears = sum(m.weight.numel() for m in fp8.modules() if isinstance(m, Fp8Linear))
    assert dit_weight_bytes(base.dit, "bf16") == 2 * sum(p.numel() for p in dit.parameters() if not p.requires_grad)
    assert dit_weight_bytes(base.dit, "fp8") == dit_weight_bytes(base.dit, "bf16") - block_linears


def test_memory_is_checked_before_loading():
    with pytest.raises(InputError, match=r"needs 9313225\.7 GiB but cpu has .* free; use model.dtype = 'fp8'"):
        check_fits(10**16, "cpu", "the DiT x", "use model.dtype = 'fp8'")


def test_checkpoint_state_is_the_lora_only(base):
    dit = load_frozen_dit(base, "bf16")
    add_lora(dit, rank=2)
    state = AdapterState(dit)
    sd = state.state_dict()
    assert sd and all(".lora_A." in k or ".lora_B." in k for k in sd)
    assert sum(v.numel() for v in sd.values()) < 0.05 * sum(p.numel() for p in dit.parameters())
    assert list(state.parameters()) == lora_trainable_parameters(dit)
    saved = {k: torch.randn_like(v) for k, v in sd.items()}
    state.load_state_dict(saved)
    assert all(torch.equal(state.state_dict()[k], saved[k]) for k in saved)
    with pytest.raises(RuntimeError, match="missing"):
        state.load_state_dict({})


@pytest.mark.slow
def test_offloaded_blocks_train_the_same_and_go_back_to_cpu(base):
    torch.manual_seed(1)
    plain = load_frozen_dit(base, "bf16")
    add_lora(plain, rank=2)
    torch.manual_seed(1)
    off = load_frozen_dit(base, "bf16", offload_blocks=1)
    add_lora(off, rank=2)
    for m in (plain, off):
        m.gradient_checkpointing = True
        m.train()
    la, lb = _step(plain), _step(off)
    assert torch.equal(la, lb)
    for (n, a), (_, b) in zip(plain.named_parameters(), off.named_parameters()):
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), n
    handler = off._libragen_offload
    assert handler.frozen and all(p.data.data_ptr() == host.data_ptr() for p, host in handler.frozen)
    with pytest.raises(InputError, match="offload_blocks = 5 but the DiT has 2 blocks"):
        offload_frozen_blocks(load_frozen_dit(base, "bf16"), 5, "cpu")


def test_base_files_errors_name_the_key(tmp_path, base):
    with pytest.raises(ConfigError, match=r"model\.vae, model\.text_encoder missing"):
        from_dict(PostChainConfig, {"model": {"dit": "x.safetensors"}})
    cfg = from_dict(PostChainConfig, {"model": {"dit": str(base.dit), "vae": str(tmp_path / "no.safetensors"),
                                                "text_encoder": str(base.text_encoder)}})
    with pytest.raises(CheckpointError, match=r"model\.vae = .*no\.safetensors' does not exist; it should be the Wan2\.1 VAE"):
        base_files(cfg)
    cfg = from_dict(PostChainConfig, {"model": {"dit": str(base.dit), "vae": str(base.vae),
                                                "text_encoder": str(base.text_encoder), "name": "phantom-test"}})
    assert base_files(cfg).name == "phantom-test" and base_files(cfg).from_files
    # model.tiny writes what is missing, in the real layouts
    made = from_dict(PostChainConfig, {"model": {k: str(tmp_path / f"{k}.safetensors") for k in
                                                 ("dit", "vae", "text_encoder")} | {"tiny": True}})
    files = base_files(made)
    assert files.dit.is_file() and load_frozen_dit(files, "bf16").config.text_dim == 4096


# ---------------------------------------------------------------- the cache
class Counting:
    """The base's real encoders, counting how often each is loaded."""

    def __init__(self, base, facts, device="cpu", tile=0):
        self.enc = make_encoders(base, facts, device, tile)
        self.loads = {"vae": 0, "text": 0}
        for kind in ("vae", "text"):
            real = getattr(self.enc, f"_load_{kind}")

            def counted(dev, real=real, kind=kind):
                self.loads[kind] += 1
                return real(dev)

            setattr(self.enc, f"_load_{kind}", counted)


@pytest.mark.slow
def test_cache_encodes_once_shares_clips_rebuilds_damage_and_frees_the_encoders(base, tmp_path):
    manifest = write_real_dataset(tmp_path / "data")
    # one video with both an in-pair and a cross-pair entry: the two stages share its latents
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    square = next(e for e in lines if e["video"] == "clips/square.mp4")
    lines.append({**square, "references": [{"image": "refs/tall.png", "label": "the square"}]})
    manifest.write_text("".join(json.dumps(e) + "\n" for e in lines))
    facts = FileFacts(tmp_path / "cache" / "files.json")
    cache = FeatureCache(tmp_path / "cache")
    enc = Counting(base, facts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inp = prepare_stage_data(S2VManifest(manifest, "in_pair", DATA, facts), cache, enc.enc, anonymous=True,
                                 progress=False)
        cross = prepare_stage_data(S2VManifest(manifest, "cross_pair", DATA, facts), cache, enc.enc, progress=False)
    assert enc.enc._vae is None and enc.enc._text is None  # released: not on the device during DiT steps
    assert len(inp) == 3 and len(cross) == 4  # corrupt.mp4 and the lost reference are left out
    shared = {it.clip for it in inp.items} & {it.clip for it in cross.items}
    assert len(shared) == 1
    assert len(list((tmp_path / "cache" / "clips").rglob("*.safetensors"))) == 6  # 7 items, 6 distinct clips
    z, refs = inp.latents(0)
    assert z.shape[:2] == (16, 3) and refs.shape[:2] == (16, 1) and z.dtype == torch.float32

    # text features: trimmed on disk, padded back to the encoder's 512 tokens, as the encoder gives them
    it = inp.items[0]
    direct = enc.enc.text().encode([it.caption])
    assert enc.enc.text().dtype == torch.bfloat16  # the fp16 file on a CPU: its features are bf16 values
    torch.testing.assert_close(inp.text(it.text), direct, rtol=0, atol=0)
    assert inp.items[0].anonymous is not None and cross.items[0].anonymous is None
    enc.enc.release()

    # a second run encodes nothing and loads no encoder
    before = dict(enc.loads)
    again = prepare_stage_data(S2VManifest(manifest, "in_pair", DATA, facts), cache, enc.enc, anonymous=True,
                               progress=False)
    assert enc.loads == before and [i.clip for i in again.items] == [i.clip for i in inp.items]

    # a damaged cache file is reported and rebuilt to the same values
    victim = cache.path("clips", inp.items[0].clip)
    good = z.clone()
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.warns(UserWarning, match="is damaged"):
        rebuilt = prepare_stage_data(S2VManifest(manifest, "in_pair", DATA, facts), cache, enc.enc, anonymous=True,
                                     progress=False)
    assert enc.loads["vae"] == before["vae"] + 1 and enc.loads["text"] == before["text"]
    assert torch.equal(rebuilt.latents(0)[0], good)

    # another VAE file: other keys, nothing reused
    other = tmp_path / "vae2.safetensors"
    other.write_bytes(base.vae.read_bytes())  # a copy of the same file
    swapped = BaseFiles(base.dit, other, base.text_encoder, None, "x", True)
    same = prepare_stage_data(S2VManifest(manifest, "in_pair", DATA, facts), cache, make_encoders(swapped, facts, "cpu"),
                              progress=False)
    assert [i.clip for i in same.items] == [i.clip for i in inp.items]  # keyed by content, not by path
    from training.tiny_base import write_tiny_vae

    write_tiny_vae(other, seed=5)
    changed = prepare_stage_data(S2VManifest(manifest, "in_pair", DATA, facts), cache,
                                 make_encoders(swapped, facts, "cpu"), progress=False)
    assert not {i.clip for i in changed.items} & {i.clip for i in inp.items}


def test_large_frames_are_encoded_in_tiles(base, tmp_path):
    enc = make_encoders(base, FileFacts(None), "cpu", tile=128)
    x = torch.rand(1, 3, 5, 144, 160) * 2 - 1
    tiled = enc.encode_pixels(x)
    vae = enc.vae()
    torch.testing.assert_close(tiled, vae.encode(x, chunked=True, tile=128, overlap=64))
    assert not torch.allclose(tiled, vae.encode(x, chunked=True), atol=1e-6)
    small = torch.rand(1, 3, 5, 64, 64) * 2 - 1
    torch.testing.assert_close(enc.encode_pixels(small), vae.encode(small, chunked=True))  # not tiled


@pytest.mark.slow
def test_cached_data_is_what_sft_batches(base, tmp_path):
    manifest = write_real_dataset(tmp_path / "data")
    facts = FileFacts(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = prepare_stage_data(S2VManifest(manifest, "cross_pair", DATA, facts), FeatureCache(tmp_path / "c"),
                                  make_encoders(base, facts, "cpu"), progress=False)
    groups = data.groups()
    assert len(groups) == 3  # tall, pano and square2: three aspect ratios, three buckets
    for idx in groups.values():
        lat, refs, ctx = data.batch(idx)
        assert lat.shape[0] == len(idx) and refs.shape[2] == 1 and ctx.shape[1:] == (512, 4096)
    assert data.null_context().shape == (1, 512, 4096)
    assert Path(data.cache.folder).is_dir()


def test_shipped_configs_load_and_name_their_base():
    from training.post_common import load_layered

    configs = sorted(Path("training/configs").glob("*.toml"))
    assert {p.name for p in configs} >= {"cpu-smoke.toml", "phantom-wan-1.3b.toml", "phantom-wan-14b.toml"}
    for path in configs:
        cfg = load_layered(path)
        if path.name.startswith(("phantom", "cpu-smoke")):
            assert cfg.model.from_files and cfg.model.dtype == "bf16" and cfg.data.frames % 4 == 1
            assert cfg.sft_in.optim.gradient_checkpointing == "auto" and cfg.merge_sft.method == "concat"
    big = load_layered("training/configs/phantom-wan-14b.toml", ["data.manifest=x.jsonl", "model.dtype=fp8"])
    assert big.data.manifest == "x.jsonl" and big.model.dtype == "fp8" and "14B" in big.model.dit


@pytest.mark.slow
def test_cache_step_runs_alone(base, tmp_path, capsys):
    from training.cache import main as cache_main

    manifest = write_real_dataset(tmp_path / "data")
    args = ["--config", "training/configs/cpu-smoke.toml", "--stage", "sft_cross",
            "--set", f"data.manifest={json.dumps(str(manifest))}", "--set", f"run.out={json.dumps(str(tmp_path / 'run'))}",
            "--set", f"model.dit={json.dumps(str(base.dit))}", "--set", f"model.vae={json.dumps(str(base.vae))}",
            "--set", f"model.text_encoder={json.dumps(str(base.text_encoder))}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cache_main(args) == 0
    out = capsys.readouterr().out
    assert "[sft_cross] " in out and "training items in" in out
    files = sorted((tmp_path / "run" / "cache").rglob("*.safetensors"))
    assert files and (tmp_path / "run" / "cache" / "files.json").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cache_main(args) == 0  # a rerun finds everything
    assert sorted((tmp_path / "run" / "cache").rglob("*.safetensors")) == files
