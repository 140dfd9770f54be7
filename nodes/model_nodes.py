"""Load LibraGen Model: DiT + VAE + text encoder from ComfyUI's model folders, or the embedded model."""
from __future__ import annotations

from libragen_core.models.bundle import EMBEDDED_NAME, ModelBundle, ModelCard, load_embedded
from libragen_core.models.fp8 import FP8_DTYPES, quantize_block_linears
from libragen_core.models.loading import DTYPE_CHOICES, load_dit, resolve_dtype
from libragen_core.models.text_encoders import load_text_encoder
from libragen_core.models.wan_vae import load_vae

from . import adapter
from .types import ATTENTION_CHOICES, MODEL, OFFLOAD_POLICIES, LibraGenModel

EMBEDDED_DIT = f"(embedded) {EMBEDDED_NAME}"
EMBEDDED_PART = "(embedded)"


class LibraGenLoadModel:
    DESCRIPTION = ("Loads a LibraGen / Wan2.1-layout subject-to-video model: the diffusion transformer, its VAE "
                   "and its text encoder. The embedded libragen-sprite model needs no files.")
    CATEGORY = "LibraGen/loaders"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model (DiT + VAE + text encoder), for Subject Encode, the sampler and Decode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "diffusion_model": ([EMBEDDED_DIT, *adapter.list_models("diffusion_models")], {
                "default": EMBEDDED_DIT,
                "tooltip": "Wan2.1 T2V / Phantom-Wan / LibraGen DiT from models/diffusion_models, or the embedded "
                           "libragen-sprite model (64x64, 17 frames)."}),
            "vae": ([EMBEDDED_PART, *adapter.list_models("vae")], {
                "default": EMBEDDED_PART,
                "tooltip": "Wan2.1 VAE from models/vae (wan_2.1_vae for Wan files); (embedded) = the embedded "
                           "model's VAE."}),
            "text_encoder": ([EMBEDDED_PART, *adapter.list_models("text_encoders")], {
                "default": EMBEDDED_PART,
                "tooltip": "Text encoder from models/text_encoders (umT5-XXL for Wan files); (embedded) = the "
                           "embedded model's small text encoder."}),
            "weight_dtype": (list(DTYPE_CHOICES), {
                "default": "default",
                "tooltip": "DiT weight precision. default keeps the file's own (fp8 files stay fp8, the embedded "
                           "model is fp32); fp8_e4m3fn stores block weights in 8 bits and computes in bf16; "
                           "bf16 / fp16 / fp32 convert (fp8 weights are dequantized)."}),
            "attention": (list(ATTENTION_CHOICES), {
                "default": "auto",
                "tooltip": "PyTorch attention backend for the DiT: auto lets PyTorch choose; math is the exact "
                           "reference; flash / efficient prefer those kernels and fall back to math where they "
                           "cannot run."}),
            "offload": (list(OFFLOAD_POLICIES), {
                "default": "auto",
                "tooltip": "auto: ComfyUI's memory manager keeps the model on the GPU and evicts it when another "
                           "model needs room; offload after use: back to the CPU after every node; cpu only: "
                           "never on the GPU."}),
        }}

    @classmethod
    def IS_CHANGED(cls, diffusion_model, vae, text_encoder, **_):
        # the files may be replaced under the same name; the embedded model never changes
        stamps = [adapter.model_mtime(kind, name) for kind, name in
                  (("diffusion_models", diffusion_model), ("vae", vae), ("text_encoders", text_encoder))
                  if name not in (EMBEDDED_DIT, EMBEDDED_PART)]
        return repr(stamps)

    def load(self, diffusion_model, vae, text_encoder, weight_dtype="default", attention="auto", offload="auto"):
        embedded = None
        if EMBEDDED_DIT == diffusion_model or EMBEDDED_PART in (vae, text_encoder):
            embedded = load_embedded(device="cpu")
        dtype = resolve_dtype(weight_dtype)
        if diffusion_model == EMBEDDED_DIT:
            dit = embedded.dit
            if dtype in FP8_DTYPES:
                quantize_block_linears(dit, dtype)
            elif dtype is not None:
                dit.to(dtype)
            card = embedded.card
        else:
            dit = load_dit(adapter.model_path("diffusion_models", diffusion_model), device="cpu", dtype=dtype)
            card = ModelCard(name=diffusion_model, dit=diffusion_model, vae=vae, text_encoder=text_encoder)
        vae_model = embedded.vae if vae == EMBEDDED_PART else load_vae(adapter.model_path("vae", vae), device="cpu")
        text = (embedded.text if text_encoder == EMBEDDED_PART else
                load_text_encoder(adapter.model_path("text_encoders", text_encoder), device="cpu"))
        bundle = ModelBundle(dit=dit.eval(), vae=vae_model.eval(), text=text.eval(), card=card)
        bundle.check_compatible()
        return (LibraGenModel(bundle=bundle, name=card.name, attention=attention, offload=offload),)
