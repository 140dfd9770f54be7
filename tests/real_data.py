"""A small real-video subject-to-video dataset for tests: mp4 clips written by PyAV at several
sizes, aspect ratios and frame rates, reference images, a mask, and the broken files a real
collection has (`from tests.real_data import write_real_dataset`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# name: (height, width, fps, frames, subject colour)
CLIPS = {
    "wide": (48, 80, 24.0, 30, (220, 40, 40)),
    "tall": (80, 48, 12.0, 20, (40, 60, 220)),
    "square": (64, 64, 24.0, 27, (30, 170, 60)),
    "pano": (36, 96, 12.0, 19, (230, 200, 30)),
    "wide2": (48, 80, 12.0, 24, (200, 60, 200)),
    "square2": (64, 64, 24.0, 28, (20, 200, 200)),
}


def subject_box(h: int, w: int, t: int) -> tuple[int, int, int, int]:
    """Where the moving square is in frame t: (x0, y0, x1, y1)."""
    s = max(8, min(h, w) // 3)
    x0 = 2 + (t * 2) % max(1, w - s - 4)
    y0 = (h - s) // 2
    return x0, y0, x0 + s, y0 + s


def clip_frames(h: int, w: int, n: int, color, seed: int = 0) -> np.ndarray:
    """A coloured square sliding right over a soft gradient (uint8 [n, h, w, 3])."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.stack([90 + 60 * xs / w, 110 + 40 * ys / h, 140 - 30 * xs / w], -1)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        f = base + rng.normal(0, 2, base.shape)
        x0, y0, x1, y1 = subject_box(h, w, t)
        f[y0:y1, x0:x1] = color
        out[t] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def reference_image(color, size: int = 40) -> np.ndarray:
    img = np.full((size, size, 3), 255, np.uint8)
    img[size // 5: -size // 5, size // 5: -size // 5] = color
    return img


def write_real_dataset(root: Path, manifest: bool = True, sidecars: bool = False) -> Path:
    """clips/*.mp4 (+ a corrupt one), refs/*.png (one referenced but missing), masks/, and
    manifest.jsonl with in-pair and cross-pair entries. sidecars=True also writes, beside every
    video, <name>.json with its caption and references (what `libragen curate` reads).
    Returns the manifest path (or the clips folder when manifest=False)."""
    from PIL import Image

    from libragen_core.io.video import write_video

    root = Path(root)
    for sub in ("clips", "refs", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (name, (h, w, fps, n, color)) in enumerate(CLIPS.items()):
        frames = clip_frames(h, w, n, color, seed=k)
        write_video(root / "clips" / f"{name}.mp4", frames, fps=fps)
        caption = f"Ref 1: a {name} coloured square. Video: Ref 1[the square] slides to the right on a gradient."
        if k % 2 == 0:  # in-pair: a crop of one of its own frames
            t = 3
            x0, y0, x1, y1 = subject_box(h, w, t)
            ref = {"frame": t, "box": [x0 - 2, y0 - 2, x1 + 2, y1 + 2], "label": "the square"}
            if name == "square":
                mask = np.zeros((h, w), np.uint8)
                mask[y0:y1, x0:x1] = 255
                Image.fromarray(mask).save(root / "masks" / f"{name}.png")
                ref["mask"] = f"masks/{name}.png"
        else:  # cross-pair: a picture of the subject on white
            Image.fromarray(reference_image(color)).save(root / "refs" / f"{name}.png")
            ref = {"image": f"refs/{name}.png", "label": "the square"}
        entries.append({"video": f"clips/{name}.mp4", "caption": caption, "references": [ref]})
    # a cross-pair entry whose picture was never copied, and a video that is not a video
    write_video(root / "clips" / "lost_ref.mp4", clip_frames(48, 64, 30, (120, 120, 20), seed=9), fps=24.0)
    entries.append({"video": "clips/lost_ref.mp4", "caption": "Ref 1: a square. Video: Ref 1[the square] waits.",
                    "references": [{"image": "refs/never_copied.png", "label": "the square"}]})
    (root / "clips" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    entries.append({"video": "clips/corrupt.mp4", "caption": "Ref 1: a square. Video: Ref 1[the square] waits.",
                    "references": [{"frame": 0, "box": [0, 0, 8, 8], "label": "the square"}]})
    if sidecars:
        for e in entries:
            side = {k: v for k, v in e.items() if k != "video"}
            side["references"] = [{**r, **({"image": "../" + r["image"]} if "image" in r else {}),
                                   **({"mask": "../" + r["mask"]} if "mask" in r else {})} for r in e["references"]]
            (root / e["video"]).with_suffix(".json").write_text(json.dumps(side), encoding="utf-8")
    if not manifest:
        return root / "clips"
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return path


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """A textured still scene: random rectangles of many colours with hard edges (float32 [h, w, 3])."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128.0, np.float32)
    for _ in range(60):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = y0 + rng.integers(6, h // 3), x0 + rng.integers(6, w // 3)
        img[y0:y1, x0:x1] = rng.integers(20, 235, 3)
    return img


def footage(kind: str = "clean", h: int = 272, w: int = 352, seconds: float = 6.0, fps: float = 12.0,
            seed: int = 0) -> np.ndarray:
    """Synthetic 'real' footage (uint8 [T, h, w, 3]): a textured scene, a slow pan, a ball crossing
    it; `kind` adds one defect: cut, static, shaky, blur, noise, text."""
    import cv2

    n = int(round(seconds * fps))
    rng = np.random.default_rng(seed + 1)
    pad = 40
    world = [_scene(h + 2 * pad, w + 2 * pad, seed), _scene(h + 2 * pad, w + 2 * pad, seed + 100)]
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        scene = world[1 if kind == "cut" and t >= n // 2 else 0]
        dx = 0 if kind == "static" else int(t * 20 / n)
        if kind == "shaky":
            dx, dy = rng.integers(0, 2 * pad, 2)
        else:
            dy = pad
        f = scene[dy:dy + h, dx:dx + w].copy()
        if kind != "static":
            cx = int(20 + (w - 40) * t / max(1, n - 1))
            cv2.circle(f, (cx, h // 2), h // 8, (230, 60, 40), -1)
        if kind == "blur":
            f = cv2.GaussianBlur(f, (0, 0), 3.0)
        if kind == "noise":
            f = f + rng.normal(0, 25, f.shape)
        if kind == "text":
            f = np.ascontiguousarray(f.astype(np.uint8))
            for k, line in enumerate(("SUBSCRIBE NOW", "www.example.com  2024")):
                cv2.putText(f, line, (12, h - 50 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                            cv2.LINE_AA)
        out[t] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def run_real_chain(tmp: Path, steps: int = 4, probe_every: int = 0) -> dict[str, Path]:
    """The real-data chain as a user runs it, in-process, with the working directory at `tmp`:
    videos with captions beside them -> `libragen curate` -> the curated manifest ->
    `python -m training.sft --config training/configs/cpu-smoke.toml --stage sft_in|sft_cross`
    (cache, then LoRA SFT on the tiny base files the config writes) -> `python -m training.merge
    --stage merge_sft`, each given only data.manifest and run.out (plus shorter training).
    probe_every: sft_cross also logs the direction probe (2 clips, 1 one-step sample) that often."""
    import os

    from libragen_core.cli import main as libragen
    from training.merge import main as merge
    from training.sft import main as sft

    repo = Path(__file__).resolve().parents[1]
    config = str(repo / "training" / "configs" / "cpu-smoke.toml")
    tmp = Path(tmp)
    clips = write_real_dataset(tmp / "footage", manifest=False, sidecars=True)
    old = os.getcwd()
    os.chdir(tmp)
    try:
        assert libragen(["curate", str(clips), "--out", "curated", "--quiet", "--threshold", "resolution=32",
                         "--threshold", "duration=1"]) == 0
        sets = ["--set", "data.manifest=curated/accepted.jsonl", "--set", "run.out=run"]
        for stage in ("sft_in", "sft_cross"):
            short = ["--set", f"{stage}.optim.steps={steps}", "--set", f"{stage}.optim.validate_every=0"]
            if probe_every and stage == "sft_cross":
                short += [x for kv in (f"probe.every={probe_every}", "probe.clips=2", "probe.samples=1",
                                       "probe.sample_steps=1") for x in ("--set", f"{stage}.{kv}")]
            assert sft(["--config", config, "--stage", stage, *sets, *short]) == 0
        assert merge(["--config", config, "--stage", "merge_sft", *sets]) == 0
    finally:
        os.chdir(old)
    return {"curated": tmp / "curated", "run": tmp / "run", "base": tmp / "runs" / "tiny-wan",
            "lora": tmp / "run" / "merge_sft" / "lora.safetensors"}


def run_real_dpo_chain(tmp: Path, steps: int = 2, rejected: tuple[str, ...] = ("consis-000001",)) -> dict[str, Path]:
    """run_real_chain, then DPO as a user runs it: `python -m training.dpo_pairs` (both stages'
    pairs), review decisions written to decisions.json (`rejected` pair ids), `python -m
    training.dpo_consis` and `dpo_realfake` with dpo_*.filter.decisions set, then `python -m
    training.merge --stage merge_dpo`."""
    import json
    import os

    from training.dpo_consis import main as dpo_consis
    from training.dpo_pairs import main as dpo_pairs
    from training.dpo_realfake import main as dpo_realfake
    from training.merge import main as merge

    out = run_real_chain(tmp, steps=steps)
    repo = Path(__file__).resolve().parents[1]
    config = str(repo / "training" / "configs" / "cpu-smoke.toml")
    tmp = Path(tmp)
    old = os.getcwd()
    os.chdir(tmp)
    try:
        sets = ["--config", config, "--set", "data.manifest=curated/accepted.jsonl", "--set", "run.out=run"]
        assert dpo_pairs(sets) == 0
        Path("decisions.json").write_text(json.dumps({"rejected": list(rejected)}), encoding="utf-8")
        for stage, main in (("dpo_consis", dpo_consis), ("dpo_realfake", dpo_realfake)):
            assert main([*sets, "--set", f"{stage}.filter.decisions=decisions.json",
                         "--set", f"{stage}.optim.steps={steps}"]) == 0
        assert merge([*sets, "--stage", "merge_dpo"]) == 0
    finally:
        os.chdir(old)
    return {**out, "decisions": tmp / "decisions.json", "lora": tmp / "run" / "merge_dpo" / "lora.safetensors"}
