"""Build the example workflows in both of ComfyUI's formats from one description each.

    .venv/bin/python workflows/build.py           write workflows/<name>.json (UI: drag into ComfyUI)
                                                  and workflows/api/<name>.json (API: POST /prompt)
    .venv/bin/python workflows/build.py --check   exit 1 if the files on disk are not what this builds

Widget order for our nodes comes from their INPUT_TYPES, so the UI files follow the node
definitions; the few core nodes used are described in CORE below (the integration tests compare
every UI file's widgets with a real server's /object_info).
The examples run on the embedded model on a CPU (64x64, 17 frames, a few steps) with what ships in
examples/: the reference images examples/refs/*.png (copied into ComfyUI/input) and the LoRAs
examples/loras/*.safetensors (copied into ComfyUI/models/loras). The native_* examples and
lora_merge_native run on the native path over Wan2.1 / Phantom-Wan files the user downloads.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# core node: (link inputs [(name, type, optional)], widgets [(name, default[, type[, control after
# generate]])], outputs [(name, type)]); a widget's type is needed only where a link drives it
CORE = {
    "LoadImage": ([], [("image", "red_circle.png"), ("upload", "image")], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "EmptyImage": ([], [("width", 512), ("height", 512), ("batch_size", 1), ("color", 0)], [("IMAGE", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE", False), ("audio", "AUDIO", True)], [("fps", 30.0)], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", False)], [("filename_prefix", "video/ComfyUI"), ("format", "auto"),
                                                ("codec", "auto")], []),
    "SaveAnimatedWEBP": ([("images", "IMAGE", False)], [("filename_prefix", "ComfyUI"), ("fps", 6.0),
                                                         ("lossless", True), ("quality", 80),
                                                         ("method", "default")], []),
    # the native path: core loaders, text encoding and custom sampling around the LibraGen nodes
    "UNETLoader": ([], [("unet_name", ""), ("weight_dtype", "default")], [("MODEL", "MODEL")]),
    "CLIPLoader": ([], [("clip_name", ""), ("type", "stable_diffusion"), ("device", "default")], [("CLIP", "CLIP")]),
    "VAELoader": ([], [("vae_name", "")], [("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP", False)], [("text", "", "STRING")], [("CONDITIONING", "CONDITIONING")]),
    "PrimitiveStringMultiline": ([], [("value", "", "STRING")], [("STRING", "STRING")]),
    "ModelSamplingSD3": ([("model", "MODEL", False)], [("shift", 3.0)], [("MODEL", "MODEL")]),
    "KSamplerSelect": ([], [("sampler_name", "euler")], [("SAMPLER", "SAMPLER")]),
    "BasicScheduler": ([("model", "MODEL", False)], [("scheduler", "simple"), ("steps", 20), ("denoise", 1.0)],
                       [("SIGMAS", "SIGMAS")]),
    "RandomNoise": ([], [("noise_seed", 0, "INT", True)], [("NOISE", "NOISE")]),
    "SamplerCustomAdvanced": ([("noise", "NOISE", False), ("guider", "GUIDER", False), ("sampler", "SAMPLER", False),
                               ("sigmas", "SIGMAS", False), ("latent_image", "LATENT", False)],
                              [], [("output", "LATENT"), ("denoised_output", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT", False), ("vae", "VAE", False)], [], [("IMAGE", "IMAGE")]),
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# the frontend adds a "control after generate" widget behind these; saved as "fixed" so examples repeat
CONTROL_VALUE = "fixed"


def load_pack():
    if "libragen_pack" not in sys.modules:
        spec = importlib.util.spec_from_file_location("libragen_pack", REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["libragen_pack"] = module
        spec.loader.exec_module(module)
    return sys.modules["libragen_pack"]


def node_spec(class_type: str):
    """(link inputs, widgets with defaults and control flags, outputs) of a node type."""
    if class_type in CORE:
        links, widgets, outputs = CORE[class_type]
        return links, [(w[0], w[1], len(w) > 3 and w[3]) for w in widgets], outputs
    cls = load_pack().NODE_CLASS_MAPPINGS[class_type]
    types = cls.INPUT_TYPES()
    links, widgets = [], []
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(kind, list):
                widgets.append((name, opts.get("default", kind[0]), False))
            elif kind in WIDGET_TYPES:
                widgets.append((name, opts.get("default"), bool(opts.get("control_after_generate"))))
            else:
                links.append((name, kind, section == "optional"))
    return links, widgets, list(zip(cls.RETURN_NAMES, cls.RETURN_TYPES))


def widget_type(class_type: str, name: str) -> str:
    """The socket type a widget gets when a link drives it: its own type, COMBO for a list."""
    if class_type in CORE:
        typed = [w[2] for w in CORE[class_type][1] if w[0] == name and len(w) > 2]
        if not typed:
            raise SystemExit(f"{class_type}.{name}: give the widget's type in CORE to drive it by a link")
        return typed[0]
    types = load_pack().NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    for section in ("required", "optional"):
        if name in types.get(section, {}):
            kind = types[section][name][0]
            return "COMBO" if isinstance(kind, list) else kind
    raise SystemExit(f"{class_type} has no widget {name}")


def display_name(class_type: str) -> str:
    return load_pack().NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type)


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    title: str | None
    values: dict
    inputs: dict = field(default_factory=dict)  # name -> (node id, slot), widgets driven by a link included
    size: tuple[int, int] | None = None  # None: estimated from the widget count

    def out(self, slot: int = 0) -> tuple[int, int]:
        return (self.id, slot)


class Graph:
    def __init__(self, name: str, note: str, scale: float = 0.8):
        self.name, self.note, self.nodes = name, note, []
        self.scale = scale  # the frontend's zoom on opening: small enough to show every node

    def add(self, class_type: str, col: float, row: float, title: str | None = None,
            size: tuple[int, int] | None = None, **kw) -> Node:
        """kw: widget values, and links as (node id, slot) from Node.out(); a link given for a
        widget (a STRING prompt fed by Prompt Rewrite) drives that widget."""
        links, widgets, _ = node_spec(class_type)
        link_names = {n for n, _, _ in links}
        widget_names = {n for n, _, _ in widgets}
        unknown = set(kw) - link_names - widget_names
        if unknown:
            raise SystemExit(f"{self.name}: {class_type} has no input(s) {sorted(unknown)}")
        driven = {k for k, v in kw.items() if k in widget_names and isinstance(v, tuple)}
        node = Node(len(self.nodes) + 1, class_type, (int(40 + col * 360), int(40 + row * 170)), title,
                    {k: v for k, v in kw.items() if k in widget_names - driven},
                    {k: v for k, v in kw.items() if k in link_names | driven}, size)
        self.nodes.append(node)
        return node

    # ---- API format
    def api(self) -> dict:
        out = {}
        for node in self.nodes:
            links, widgets, _ = node_spec(node.type)
            inputs = {}
            for name, default, _ in widgets:
                if name == "upload":
                    continue  # a frontend-only button
                inputs[name] = node.values.get(name, default)  # a driven widget's value is replaced below
            for name, (src, slot) in node.inputs.items():
                inputs[name] = [str(src), slot]
            out[str(node.id)] = {"class_type": node.type, "inputs": inputs,
                                 "_meta": {"title": node.title or display_name(node.type)}}
        return out

    # ---- UI (litegraph) format
    @staticmethod
    def ui_inputs(node: Node) -> list[tuple[str, str, bool]]:
        """A node's input slots as the frontend saves them: (name, type, is a driven widget). The
        link sockets come first; a widget fed by a link gets a slot after them that keeps the
        widget's name (its value stays in widgets_values, unused while linked)."""
        links, widgets, _ = node_spec(node.type)
        slots = [(n, k, False) for n, k, _ in links]
        slots += [(n, widget_type(node.type, n), True) for n, _, _ in widgets if n in node.inputs]
        return slots

    def ui(self) -> dict:
        links, link_id = [], 0
        outgoing: dict[tuple[int, int], list[int]] = {}
        incoming: dict[tuple[int, str], int] = {}
        by_id = {n.id: n for n in self.nodes}
        for node in self.nodes:
            for target_slot, (name, kind, _) in enumerate(self.ui_inputs(node)):
                if name in node.inputs:
                    src, slot = node.inputs[name]
                    src_type = node_spec(by_id[src].type)[2][slot][1]
                    if src_type != kind:
                        raise SystemExit(f"{self.name}: {by_id[src].type}[{slot}] gives {src_type}, "
                                         f"{node.type}.{name} takes {kind}")
                    link_id += 1
                    links.append([link_id, src, slot, node.id, target_slot, kind])
                    outgoing.setdefault((src, slot), []).append(link_id)
                    incoming[(node.id, name)] = link_id
        nodes = []
        for order, node in enumerate(self.nodes):
            _, widgets, outputs = node_spec(node.type)
            in_links = self.ui_inputs(node)
            values = []
            for name, default, control in widgets:
                values.append(node.values.get(name, default))
                if control:
                    values.append(CONTROL_VALUE)
            entry = {
                "id": node.id, "type": node.type, "pos": list(node.pos),
                "size": list(node.size or (330, 46 + 26 * (len(values) + max(len(in_links), len(outputs))))),
                "flags": {}, "order": order, "mode": 0,
                "inputs": [{"name": n, "type": k, **({"widget": {"name": n}} if driven else {}),
                            "link": incoming.get((node.id, n))} for n, k, driven in in_links],
                "outputs": [{"name": n, "type": k, "links": outgoing.get((node.id, s), []), "slot_index": s}
                            for s, (n, k) in enumerate(outputs)],
                "properties": {"Node name for S&R": node.type},
                "widgets_values": values,
            }
            if node.title:
                entry["title"] = node.title
            nodes.append(entry)
        note_id = len(self.nodes) + 1
        nodes.append({"id": note_id, "type": "Note", "pos": [40, -150], "size": [700, 120], "flags": {},
                      "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                      "widgets_values": [self.note]})
        return {"last_node_id": note_id, "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [],
                "config": {}, "extra": {"ds": {"scale": self.scale, "offset": [60, 220]}}, "version": 0.4}


# ---------------------------------------------------------------- the examples

SMALL = {"frames": 17, "width": 64, "height": 64, "steps": 4, "shift": 3.0, "seed": 42}
NEGATIVE = "blurry, static, distorted"


def embedded_model(g: Graph) -> Node:
    return g.add("LibraGenLoadModel", 0, 0)


def decode_and_save(g: Graph, model: Node, lat: Node, prefix: str, decode_at=(3, 0), video_at=(3, 1.2),
                    save_at=(4, 0)) -> None:
    """The common ending: Decode -> CreateVideo (8 fps) -> SaveVideo under output/libragen/."""
    frames = g.add("LibraGenDecode", *decode_at, model=model.out(), latent=lat.out())
    video = g.add("CreateVideo", *video_at, images=frames.out(), fps=8.0)
    g.add("SaveVideo", *save_at, video=video.out(), filename_prefix=f"libragen/{prefix}")


def single_subject() -> Graph:
    g = Graph("single_subject", "LibraGen: one subject. Copy examples/refs/red_circle.png into ComfyUI/input. "
                                "Embedded model (untrained placeholder until trained weights ship: its videos are "
                                "noise), 64x64, 17 frames, CPU-friendly.")
    model = embedded_model(g)
    img = g.add("LoadImage", 0, 1.2, image="red_circle.png")
    subj = g.add("LibraGenSubjectEncode", 1, 0.6, model=model.out(), image_1=img.out(0), mask_1=img.out(1),
                 label_1="the red circle", width=64, height=64)
    lat = g.add("LibraGenSampler", 2, 0, model=model.out(), subjects=subj.out(),
                prompt="Video: Ref 1[the red circle] moves to the right across a green field.",
                negative_prompt=NEGATIVE, **SMALL)
    decode_and_save(g, model, lat, "single_subject")
    return g


def three_subjects() -> Graph:
    g = Graph("three_subjects", "LibraGen: three subjects with labels. Copy examples/refs/*.png into ComfyUI/input; "
                                "the third subject is a plain green square made by EmptyImage.")
    model = embedded_model(g)
    a = g.add("LoadImage", 0, 1.2, image="red_circle.png")
    b = g.add("LoadImage", 0, 3.0, image="blue_striped_star.png")
    c = g.add("EmptyImage", 1, 4.3, width=40, height=40, batch_size=1, color=0x2E9D4A)
    subj = g.add("LibraGenSubjectEncode", 1, 1.0, model=model.out(), image_1=a.out(0), image_2=b.out(0),
                 image_3=c.out(0), label_1="the red circle", label_2="the blue striped star",
                 label_3="the green square", width=64, height=64)
    lat = g.add("LibraGenSampler", 2, 0, model=model.out(), subjects=subj.out(),
                prompt="Video: Ref 1[the red circle] bounces while Ref 2[the blue striped star] spins and "
                       "Ref 3[the green square] moves left.", negative_prompt=NEGATIVE, **SMALL)
    decode_and_save(g, model, lat, "three_subjects")
    return g


def static_vs_dynamic() -> Graph:
    g = Graph("static_vs_dynamic_cfg", "LibraGen: the same seed and subject with static CFG (Phantom's 5.0 / 7.5) "
                                       "and with a dynamic schedule (text guidance easing 9 -> 6, subject guidance "
                                       "rising 2 -> 5 as sigma falls), saved side by side.")
    model = embedded_model(g)
    img = g.add("LoadImage", 0, 1.2, image="blue_striped_star.png")
    subj = g.add("LibraGenSubjectEncode", 1, 0.6, model=model.out(), image_1=img.out(0),
                 label_1="the blue striped star", width=64, height=64)
    sched = g.add("LibraGenCFGSchedule", 1, 3.2, title="Dynamic CFG (custom cosine)", preset="custom",
                  s_img_start=2.0, s_img_end=5.0, s_txt_start=9.0, s_txt_end=6.0, shape="cosine", axis="sigma")
    prompt = "Video: Ref 1[the blue striped star] circles around the centre of a sandy beach."
    static = g.add("LibraGenSampler", 2, 0, title="Static CFG (phantom)", model=model.out(), subjects=subj.out(),
                   prompt=prompt, negative_prompt=NEGATIVE, cfg_preset="phantom", **SMALL)
    dynamic = g.add("LibraGenSampler", 2, 3.0, title="Dynamic CFG", model=model.out(), subjects=subj.out(),
                    cfg=sched.out(), prompt=prompt, negative_prompt=NEGATIVE, **SMALL)
    for row, (name, lat) in enumerate((("static", static), ("dynamic", dynamic))):
        frames = g.add("LibraGenDecode", 3, row * 3.0, model=model.out(), latent=lat.out())
        g.add("SaveAnimatedWEBP", 4, row * 3.0, images=frames.out(), filename_prefix=f"libragen/cfg_{name}",
              fps=8.0, lossless=False, quality=85)
    return g


# the LoRAs that ship in examples/loras (copied into ComfyUI/models/loras, as docs/lora.md says)
SPRITE_LORAS = {"cross": "libragen-sprite_sft_cross.safetensors", "in": "libragen-sprite_sft_in.safetensors"}


def lora_merge() -> Graph:
    g = Graph("lora_merge", "LibraGen: the embedded model's cross-pair and in-pair SFT LoRAs merged as LibraGen "
                            "merges them (dW = 0.5 dW_cross + 0.5 dW_in, exact concatenation) for this branch only; "
                            "the loader's model is unchanged for other branches. Copy examples/loras/*.safetensors "
                            "into ComfyUI/models/loras and examples/refs/red_circle.png into ComfyUI/input.")
    model = embedded_model(g)
    merged = g.add("LibraGenLoraMerge", 1, 0, model=model.out(), lora_1=SPRITE_LORAS["cross"], weight_1=0.5,
                   lora_2=SPRITE_LORAS["in"], weight_2=0.5, method="concat", strength=1.0)
    img = g.add("LoadImage", 0, 1.8, image="red_circle.png")
    subj = g.add("LibraGenSubjectEncode", 1, 3.2, model=model.out(), image_1=img.out(0),
                 label_1="the red circle", width=64, height=64)
    lat = g.add("LibraGenSampler", 2, 0, model=merged.out(0), subjects=subj.out(),
                prompt="Video: Ref 1[the red circle] grows in the middle of a dark room.",
                negative_prompt=NEGATIVE, **SMALL)
    frames = g.add("LibraGenDecode", 3, 0, model=merged.out(0), latent=lat.out())
    g.add("SaveAnimatedWEBP", 4, 0, images=frames.out(), filename_prefix="libragen/lora_merge", fps=8.0,
          lossless=False, quality=85)
    return g


USER_PROMPT = "make the blue star zig-zag to the right"


def prompt_rewrite() -> Graph:
    g = Graph("prompt_rewrite", "LibraGen: a prompt in your own words, rewritten into the model's caption style "
                                "(offline rules, labels from Subject Encode) and fed to the sampler. Copy "
                                "examples/refs/blue_striped_star.png into ComfyUI/input. After a run the rewritten "
                                "prompt and the report (backend, warnings) show at the bottom of Prompt Rewrite; "
                                "queue Prompt Rewrite alone to preview a rewrite before sampling.", scale=0.72)
    model = embedded_model(g)
    img = g.add("LoadImage", 0, 1.4, image="blue_striped_star.png")
    subj = g.add("LibraGenSubjectEncode", 1, 0.6, model=model.out(), image_1=img.out(0), mask_1=img.out(1),
                 label_1="the blue striped star", width=64, height=64)
    # style_guide auto: the embedded model's own (SpriteWorld) guide
    # tall: the rewritten prompt and the report show in a box under the widgets after a run
    rw = g.add("LibraGenPromptRewrite", 2, 0, size=(330, 620), subjects=subj.out(), model=model.out(),
               prompt=USER_PROMPT, backend="offline", style_guide="auto")
    lat = g.add("LibraGenSampler", 3.15, 0, model=model.out(), subjects=subj.out(), prompt=rw.out(0),
                negative_prompt=NEGATIVE, **SMALL)
    decode_and_save(g, model, lat, "prompt_rewrite", (4.3, 0), (4.3, 1.0), (4.3, 2.0))
    return g


# ---------------------------------------------------------------- the native path (core loaders)

# Phantom-Wan 1.3B as Kijai/WanVideo_comfy repackages it for ComfyUI (models/diffusion_models); the
# text encoder and the VAE as Comfy-Org/Wan_2.1_ComfyUI_repackaged ships them (models/text_encoders,
# models/vae). docs/comfyui.md lists the alternatives (14B, fp8, GGUF).
NATIVE_DIT = "Phantom-Wan-1_3B_fp16.safetensors"
NATIVE_TEXT = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
NATIVE_VAE = "wan_2.1_vae.safetensors"
# Phantom-Wan's published 480p setting: 832x480, 81 frames (5 s at 16 fps), shift 5
NATIVE_VIDEO = {"width": 832, "height": 480, "length": 81, "batch_size": 1}
NATIVE_STEPS, NATIVE_FPS = 30, 16.0
NATIVE_NEGATIVE = "blurry, static, distorted, low quality, deformed, watermark, subtitles"


def native_loaders(g: Graph, loras: dict | None = None) -> tuple[Node, Node, Node]:
    """UNETLoader [-> LibraGen LoRA Merge (MODEL) with `loras`, its inputs] -> ModelSamplingSD3
    (shift 5), CLIPLoader (wan), VAELoader: (model, clip, vae)."""
    unet = g.add("UNETLoader", 0, 0, unet_name=NATIVE_DIT, weight_dtype="default")
    if loras:
        unet = g.add("LibraGenLoraMergeNative", 0.5, 0, model=unet.out(), **loras)
    model = g.add("ModelSamplingSD3", 1, 0, model=unet.out(), shift=5.0)
    clip = g.add("CLIPLoader", 0, 1.0, clip_name=NATIVE_TEXT, type="wan", device="default")
    vae = g.add("VAELoader", 0, 2.0, vae_name=NATIVE_VAE)
    return model, clip, vae


def native_sample_and_save(g: Graph, model: Node, vae: Node, subj: Node, guider: Node, prefix: str,
                           col: float = 4) -> None:
    """KSamplerSelect + BasicScheduler + RandomNoise -> SamplerCustomAdvanced -> VAEDecode -> video."""
    sampler = g.add("KSamplerSelect", col - 1, 3.2, sampler_name="uni_pc")
    sigmas = g.add("BasicScheduler", col - 1, 3.9, model=model.out(), scheduler="simple", steps=NATIVE_STEPS,
                   denoise=1.0)
    noise = g.add("RandomNoise", col - 1, 4.9, noise_seed=42)
    lat = g.add("SamplerCustomAdvanced", col, 0, noise=noise.out(), guider=guider.out(), sampler=sampler.out(),
                sigmas=sigmas.out(), latent_image=subj.out(3))
    frames = g.add("VAEDecode", col, 1.4, samples=lat.out(0), vae=vae.out())
    video = g.add("CreateVideo", col + 1, 0, images=frames.out(), fps=NATIVE_FPS)
    g.add("SaveVideo", col + 1, 1.0, video=video.out(), filename_prefix=f"libragen/{prefix}")


def native_single_subject() -> Graph:
    g = Graph("native_single_subject",
              "LibraGen on core Wan: Phantom-Wan loaded by core loaders, one subject fitted on white by LibraGen "
              "Subject Conditioning, the dynamic CFG guider (libragen schedule) in core SamplerCustomAdvanced. "
              f"Files: models/diffusion_models/{NATIVE_DIT}, models/text_encoders/{NATIVE_TEXT}, "
              f"models/vae/{NATIVE_VAE} (docs/comfyui.md); copy examples/refs/red_circle.png into ComfyUI/input.",
              scale=0.62)
    return native_one_subject(g, "A red circle rolls to the right across a green meadow, soft daylight, the camera "
                                 "follows it.")


def native_one_subject(g: Graph, text: str, loras: dict | None = None) -> Graph:
    """Core loaders [+ LoRA Merge (MODEL)] -> CLIPTextEncode(text) -> Subject Conditioning of the red
    circle -> the dynamic CFG guider (libragen) -> SamplerCustomAdvanced -> video named after g."""
    model, clip, vae = native_loaders(g, loras)
    pos = g.add("CLIPTextEncode", 1, 1.0, clip=clip.out(), text=text)
    neg = g.add("CLIPTextEncode", 1, 2.2, clip=clip.out(), text=NATIVE_NEGATIVE)
    img = g.add("LoadImage", 0, 3.2, image="red_circle.png")
    subj = g.add("LibraGenSubjectConditioning", 2, 0, positive=pos.out(), negative=neg.out(), vae=vae.out(),
                 image_1=img.out(0), mask_1=img.out(1), labels="the red circle", **NATIVE_VIDEO)
    guider = g.add("LibraGenDynamicCFGGuider", 3, 0, model=model.out(), positive=subj.out(0),
                   negative_text=subj.out(1), negative_img_text=subj.out(2), cfg_preset="libragen")
    native_sample_and_save(g, model, vae, subj, guider, g.name)
    return g


NATIVE_LABELS = "the red circle\nthe blue striped star\nthe green square"


def native_three_subjects() -> Graph:
    g = Graph("native_three_subjects",
              "LibraGen on core Wan, three subjects: one list of labels feeds Prompt Rewrite and Subject "
              "Conditioning; the rewritten prompt goes into core CLIPTextEncode; a CFG Schedule drives the guider. "
              f"Files: models/diffusion_models/{NATIVE_DIT}, models/text_encoders/{NATIVE_TEXT}, "
              f"models/vae/{NATIVE_VAE}; copy examples/refs/*.png into ComfyUI/input.", scale=0.61)
    model, clip, vae = native_loaders(g)
    labels = g.add("PrimitiveStringMultiline", 0, 3.2, title="Subject labels (one per line)", value=NATIVE_LABELS)
    rw = g.add("LibraGenPromptRewrite", 1, 1.0, size=(330, 520), labels=labels.out(),
               prompt="the circle bounces while the star spins and the square slides to the left",
               backend="offline", style_guide="phantom")
    pos = g.add("CLIPTextEncode", 2, 1.0, clip=clip.out(), text=rw.out(0))
    neg = g.add("CLIPTextEncode", 2, 2.2, clip=clip.out(), text=NATIVE_NEGATIVE)
    a = g.add("LoadImage", 0, 4.2, image="red_circle.png")
    b = g.add("LoadImage", 0, 6.0, image="blue_striped_star.png")
    c = g.add("EmptyImage", 1, 4.6, width=200, height=120, batch_size=1, color=0x2E9D4A)
    subj = g.add("LibraGenSubjectConditioning", 3, 0, positive=pos.out(), negative=neg.out(), vae=vae.out(),
                 image_1=a.out(0), mask_1=a.out(1), image_2=b.out(0), mask_2=b.out(1), image_3=c.out(0),
                 labels=labels.out(), **NATIVE_VIDEO)
    sched = g.add("LibraGenCFGSchedule", 3, 3.4, title="Dynamic CFG (custom cosine)", preset="custom",
                  s_img_start=2.0, s_img_end=5.0, s_txt_start=9.0, s_txt_end=6.0, shape="cosine", axis="sigma")
    guider = g.add("LibraGenDynamicCFGGuider", 4, 0, model=model.out(), positive=subj.out(0),
                   negative_text=subj.out(1), negative_img_text=subj.out(2), cfg=sched.out())
    native_sample_and_save(g, model, vae, subj, guider, "native_three_subjects", col=5)
    return g


# LoRAs for that DiT, made with training/sft.py on it (docs/training-real-data.md); none ship
NATIVE_LORAS = {"cross": "libragen_phantom1.3b_sft_cross.safetensors", "in": "libragen_phantom1.3b_sft_in.safetensors"}


def lora_merge_native() -> Graph:
    g = Graph("lora_merge_native",
              "LibraGen on core Wan with LoRAs: the cross-pair and in-pair SFT LoRAs merged 0.5 / 0.5 by LibraGen LoRA "
              "Merge (MODEL) into core weight patches on the loaded model (low-VRAM loading and fp8 files work as "
              "with core's LoRA loader), then Subject Conditioning and the dynamic CFG guider. "
              f"Files: models/diffusion_models/{NATIVE_DIT}, models/text_encoders/{NATIVE_TEXT}, "
              f"models/vae/{NATIVE_VAE}, and two LoRAs you trained for that DiT in models/loras "
              "(docs/training-real-data.md); copy examples/refs/red_circle.png into ComfyUI/input.", scale=0.6)
    return native_one_subject(g, "Ref 1: a red circle.\nVideo: Ref 1[the red circle] rolls to the right across a "
                                 "green meadow.", {"lora_1": NATIVE_LORAS["cross"], "weight_1": 0.5,
                                                   "lora_2": NATIVE_LORAS["in"], "weight_2": 0.5, "method": "concat",
                                                   "strength": 1.0})


EXAMPLES = (single_subject, three_subjects, static_vs_dynamic, lora_merge, prompt_rewrite, native_single_subject,
            native_three_subjects, lora_merge_native)
# native examples: core loaders and the text encoder a real model needs (tests/integration/test_native_server.py
# runs them with stand-in files and the Stand-in Text node in CLIPTextEncode's place)
NATIVE = ("native_single_subject", "native_three_subjects")
# what each API workflow should produce: (output file prefix, frames) per saved video
EXPECTED_OUTPUTS = {
    "single_subject": [("libragen/single_subject", 17)],
    "three_subjects": [("libragen/three_subjects", 17)],
    "static_vs_dynamic_cfg": [("libragen/cfg_static", 17), ("libragen/cfg_dynamic", 17)],
    "lora_merge": [("libragen/lora_merge", 17)],
    "lora_merge_native": [("libragen/lora_merge_native", NATIVE_VIDEO["length"])],
    "prompt_rewrite": [("libragen/prompt_rewrite", 17)],
    "native_single_subject": [("libragen/native_single_subject", NATIVE_VIDEO["length"])],
    "native_three_subjects": [("libragen/native_three_subjects", NATIVE_VIDEO["length"])],
}
# what a native example needs beyond examples/: (models folder, file) downloads and trained LoRAs
NEEDS_FILES = {"lora_merge_native": [("diffusion_models", NATIVE_DIT), ("text_encoders", NATIVE_TEXT),
                                     ("vae", NATIVE_VAE), *(("loras", n) for n in NATIVE_LORAS.values())]}


def render() -> dict[Path, str]:
    files = {}
    for make in EXAMPLES:
        g = make()
        files[HERE / f"{g.name}.json"] = json.dumps(g.ui(), indent=1) + "\n"
        files[HERE / "api" / f"{g.name}.json"] = json.dumps(g.api(), indent=1) + "\n"
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
        for p in stale:
            print(f"out of date: {p.relative_to(REPO)} (run workflows/build.py)")
        return 1 if stale else 0
    from libragen_core.io.atomic import atomic_path

    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
