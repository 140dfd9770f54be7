"""LoRA Merge node: real LoRA files for the embedded DiT in a models folder; the input model is
never modified (also across sampling runs and interrupts), the merge can be saved and reloaded."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from libragen_core.errors import CheckpointError, InputError
from libragen_core.lora import LoraFactors, LoraWeights, load_lora, merge_loras, save_lora
from tests.pack import load_pack

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("blocks.0.self_attn.q", "blocks.1.cross_attn.v", "blocks.3.ffn.0")
RUN = {"frames": 5, "width": 64, "height": 64, "steps": 2, "shift": 3.0, "solver": "euler", "seed": 3,
       "cfg_preset": "none"}



pack = load_pack()
N = pack.NODE_CLASS_MAPPINGS


def make_lora(dit, seed: int, rank: int = 4) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    factors = {}
    for name in LAYERS:
        w = dit.get_submodule(name).weight
        factors[name] = LoraFactors(down=torch.randn(rank, w.shape[1], generator=g) * 0.2,
                                    up=torch.randn(w.shape[0], rank, generator=g) * 0.2, alpha=float(rank))
    return LoraWeights(factors=factors)


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return N["LibraGenLoadModel"]().load("(embedded) libragen-sprite", "(embedded)", "(embedded)")[0]


@pytest.fixture
def loras(model, tmp_path, monkeypatch):
    monkeypatch.setenv("LIBRAGEN_MODELS_DIR", str(tmp_path))
    (tmp_path / "loras" / "sub").mkdir(parents=True)
    a, b = make_lora(model.bundle.dit, 1), make_lora(model.bundle.dit, 2)
    save_lora(a, tmp_path / "loras" / "cross.safetensors")
    save_lora(b, tmp_path / "loras" / "sub" / "in.safetensors")
    return tmp_path / "loras", a, b


def snapshot(dit):
    return {k: v.detach().clone() for k, v in dit.state_dict().items()}


def merge(model, **kw):
    args = {"lora_1": "cross.safetensors", "weight_1": 0.7, "lora_2": "sub/in.safetensors", "weight_2": 0.3,
            "lora_3": "None", "weight_3": 0.5, "lora_4": "None", "weight_4": 0.5, "method": "linear", "rank": 0,
            "strength": 1.0, "ties_density": 0.2, "dare_drop_rate": 0.5, "save_name": ""}
    args.update(kw)
    return N["LibraGenLoraMerge"]().merge(model, **args)


def test_lora_files_are_listed_from_the_models_folder(loras):
    files = N["LibraGenLoraMerge"].INPUT_TYPES()["required"]["lora_1"][0]
    assert files == ["None", "cross.safetensors", "sub/in.safetensors"]


def test_merge_never_mutates_the_input_model(model, loras):
    before = snapshot(model.bundle.dit)
    base = N["LibraGenSampler"]().sample(model, "a dot", "", **RUN)[0]["samples"]
    merged, report = merge(model)
    assert merged is not model and model.patches == () and len(merged.patches) == 1
    assert merged.bundle is model.bundle  # modules shared, not copied
    assert "merged 2 LoRA(s) with linear: 3 layers" in report
    for k, v in snapshot(model.bundle.dit).items():
        assert torch.equal(v, before[k]), k  # merging itself folds nothing in

    patched = N["LibraGenSampler"]().sample(merged, "a dot", "", **RUN)[0]["samples"]
    assert not torch.allclose(patched, base, atol=1e-4)
    for k, v in snapshot(model.bundle.dit).items():
        assert torch.equal(v, before[k]), k  # unpatched bit-exactly after the run
    again = N["LibraGenSampler"]().sample(model, "a dot", "", **RUN)[0]["samples"]
    assert torch.equal(again, base)


def test_patch_is_the_exact_weighted_sum_of_the_files(model, loras):
    _, a, b = loras
    merged, _ = merge(model, strength=0.5)
    patch = merged.patches[0]
    name = LAYERS[1]
    expected = 0.7 * a.delta(name) + 0.3 * b.delta(name)
    torch.testing.assert_close(patch.lora.delta(name), expected, rtol=1e-5, atol=1e-6)
    assert patch.strength == 0.5


def test_interrupt_mid_run_leaves_the_model_unpatched(model, loras, monkeypatch):
    before = snapshot(model.bundle.dit)
    merged, _ = merge(model)
    calls = []

    class Interrupted(Exception):
        pass

    def interrupt_on_second_step():
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted  # what ComfyUI's throw_exception_if_processing_interrupted does

    monkeypatch.setattr(pack.nodes.adapter, "check_interrupted", interrupt_on_second_step)
    with pytest.raises(Interrupted):
        N["LibraGenSampler"]().sample(merged, "a dot", "", **{**RUN, "steps": 4})
    assert len(calls) == 2
    for k, v in snapshot(model.bundle.dit).items():
        assert torch.equal(v, before[k]), k
    assert not model.bundle.dit.training


def test_svd_merge_is_saved_in_comfyui_format_inside_the_folder(model, loras):
    folder, a, b = loras
    _, report = merge(model, method="svd", rank=3, save_name="../../escape/my merge")
    saved = folder / "escape_my merge.safetensors"
    assert saved.is_file() and "saved to models/loras/escape_my merge.safetensors" in report
    assert str(folder) not in report  # clients see the file relative to ComfyUI's folders
    assert not (folder.parent.parent / "escape").exists()
    from safetensors import safe_open

    with safe_open(str(saved), "pt") as f:
        keys = set(f.keys())
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in keys
    reloaded = load_lora(saved)
    expected = merge_loras([a, b], [0.7, 0.3], "svd", rank=3).lora
    for name in LAYERS:
        torch.testing.assert_close(reloaded.delta(name), expected.delta(name), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["ties", "dare", "concat"])
def test_other_methods_build_a_patch(model, loras, method):
    merged, report = merge(model, method=method)
    assert len(merged.patches[0].lora) == len(LAYERS) and method in report


def test_merge_validation_messages(loras):
    v = N["LibraGenLoraMerge"].VALIDATE_INPUTS
    ok = {"lora_1": "cross.safetensors", "lora_2": "None", "lora_3": "None", "lora_4": "None", "method": "linear",
          "rank": 0, "ties_density": 0.2, "dare_drop_rate": 0.5, "save_name": ""}
    assert v(**ok) is True
    assert "no LoRA is selected" in v(**{**ok, "lora_1": "None"})
    assert "lora_1 'gone.safetensors' is not one of the choices" in v(**{**ok, "lora_1": "gone.safetensors"})
    assert "svd method needs a target rank" in v(**{**ok, "method": "svd"})
    assert "set rank 0" in v(**{**ok, "rank": 8})
    assert "would overwrite the input LoRA" in v(**{**ok, "save_name": "cross"})
    assert "no usable characters" in v(**{**ok, "save_name": "///"})


def test_lora_for_another_model_is_refused_with_its_name(model, loras, tmp_path):
    folder, _, _ = loras
    wrong = LoraWeights(factors={"blocks.0.self_attn.q": LoraFactors(torch.zeros(2, 100), torch.zeros(256, 2), 2)})
    save_lora(wrong, folder / "wrong.safetensors")
    with pytest.raises(CheckpointError, match=r"lora_1 \(wrong.safetensors\): the LoRA does not fit"):
        merge(model, lora_1="wrong.safetensors", lora_2="None")
    with pytest.raises(CheckpointError, match=r"lora_2 \(wrong.safetensors\): the LoRA does not fit"):
        merge(model, lora_2="wrong.safetensors")


def test_dense_merge_larger_than_free_memory_is_refused_before_it_starts(model, loras, monkeypatch):
    """ties / dare with rank 0 return one fp32 [out, in] diff per layer (56 GB for a 14B DiT):
    refused with the size and the fix when free RAM cannot hold it; a rank makes it fit."""
    _, a, b = loras
    need = 4 * sum(a.shape(n)[0] * a.shape(n)[1] for n in LAYERS)
    assert pack.nodes.lora_nodes.dense_merge_bytes([a, b]) == need
    monkeypatch.setattr(pack.nodes.adapter, "free_ram_bytes", lambda: need)  # a machine with that little left
    for method in ("ties", "dare"):
        with pytest.raises(InputError, match=rf"{method} with rank 0 keeps a full weight diff per layer: .* set rank"):
            merge(model, method=method)
        merge(model, method=method, rank=4)  # factors: fits


def test_save_name_never_replaces_a_lora_the_merge_did_not_write(model, loras):
    folder, a, _ = loras
    downloaded = folder / "downloaded.safetensors"
    save_lora(a, downloaded)  # a LoRA from elsewhere: no merge stamp in its metadata
    before = downloaded.read_bytes()
    v = N["LibraGenLoraMerge"].VALIDATE_INPUTS
    ok = {"lora_1": "cross.safetensors", "lora_2": "None", "lora_3": "None", "lora_4": "None", "method": "linear",
          "rank": 0, "ties_density": 0.2, "dare_drop_rate": 0.5}
    refused = v(**ok, save_name="downloaded", overwrite=False)
    assert "models/loras/downloaded.safetensors already exists and was not written by LoRA Merge" in refused
    assert "turn on overwrite" in refused and str(folder) not in refused
    with pytest.raises(InputError, match="already exists and was not written by LoRA Merge"):
        merge(model, save_name="downloaded")
    assert downloaded.read_bytes() == before

    # a name LoRA Merge wrote before is replaced by the next merge of that name
    merge(model, save_name="mine", weight_1=0.7)
    first = (folder / "mine.safetensors").read_bytes()
    assert v(**ok, save_name="mine", overwrite=False) is True
    merge(model, save_name="mine", weight_1=0.1)
    assert (folder / "mine.safetensors").read_bytes() != first

    # overwrite on: the foreign file is replaced, and from then on carries the stamp
    assert v(**ok, save_name="downloaded", overwrite=True) is True
    _, report = merge(model, save_name="downloaded", overwrite=True)
    assert "saved to models/loras/downloaded.safetensors" in report
    assert downloaded.read_bytes() != before and load_lora(downloaded).metadata.get("libragen_merge")
