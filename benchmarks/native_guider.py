"""The LibraGen Dynamic CFG Guider against core DualCFGGuider: DiT evaluations and time per video,
same process, same graph (core UNETLoader -> ModelSamplingSD3 -> BasicScheduler / KSamplerSelect /
RandomNoise -> SamplerCustomAdvanced), only the guider differs. Run it with ComfyUI's interpreter:

    COMFYUI_DIR=/work/comfy/ComfyUI PYTHONPATH=$COMFYUI_DIR:. \\
        /work/comfy/venv/bin/python benchmarks/native_guider.py                       # CPU, tiny DiT
    ... benchmarks/native_guider.py --device cuda --preset wan2.1-t2v-1.3b --dtype bf16 \\
        --size 832x480 --length 81 --refs 2 --steps 10                                # GPU, random 1.3B

The DiT is random (the preset's layout) and saved as a safetensors file that core UNETLoader loads,
so ComfyUI's own model management, dtype handling and attention run. Conditioning: Stand-in Text
features of umT5's width and random reference latents, in the keys LibraGen Subject Conditioning
and core WanPhantomSubjectToVideo give (time_dim_concat). DiT evaluations are counted by a core unet
wrapper on both guiders (rows of the DiT's input batch). Each preset is timed against DualCFGGuider
("regular", cfg_conds = 7.5, cfg_cond2_negative = 5.0: Phantom's static setting) and, for stiv-jit,
against DualCFGGuider at its own 7.5 / 7.5. Runs alternate ours / core; medians of --repeats.
Times: wall clock (after a synchronize on CUDA); on CPU also the process's CPU time, steadier on a
shared machine. Peak memory: torch.cuda.max_memory_allocated on CUDA, peak RSS on CPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_import import import_comfy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _load_pack():
    spec = importlib.util.spec_from_file_location("libragen_pack", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["libragen_pack"] = pack
    spec.loader.exec_module(pack)
    return pack


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny", help="DiT layout (libragen_core presets)")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--size", default="128x128", help="video WIDTHxHEIGHT in pixels")
    ap.add_argument("--length", type=int, default=17, help="video frames (4k+1)")
    ap.add_argument("--refs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--presets", default="phantom,stiv-jit,libragen,humo")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is; 1 is steadier on a busy CPU)")
    args = ap.parse_args()

    import_comfy(args.device)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import folder_paths
    from comfy_extras import nodes_custom_sampler as cs
    from comfy_extras import nodes_model_advanced as ma

    core = importlib.import_module("nodes")  # ComfyUI's nodes.py, not this pack's nodes/

    sys.path.insert(0, str(REPO))
    from libragen_core.io.safetensors_file import save_state_dict
    from libragen_core.models.presets import build_dit

    pack = _load_pack()
    N = pack.NODE_CLASS_MAPPINGS
    with_values = pack.nodes.native_subjects.with_values
    null_references = pack.nodes.native_subjects.null_references

    folder = Path(tempfile.mkdtemp(prefix="libragen-bench-"))
    torch.manual_seed(0)
    dit = build_dit(args.preset).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_state_dict({k: v.to(getattr(torch, DTYPES[args.dtype])) for k, v in dit.state_dict().items()},
                    folder / "dit.safetensors")
    del dit
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    model = core.UNETLoader().load_unet("dit.safetensors", "default")[0]
    model = ma.ModelSamplingSD3().patch(model, 5.0)[0].clone()
    rows = [0]

    def count_rows(apply_model, a):
        rows[0] += a["input"].shape[0]
        return apply_model(a["input"], a["timestep"], **a["c"])

    model.set_model_unet_function_wrapper(count_rows)

    width, height = (int(v) for v in args.size.split("x"))
    text = N["LibraGenStandInText"]()
    positive = text.encode("Ref 1 and Ref 2 walk along a pier at sunset, the camera follows", 64, 4096)[0]
    negative = text.encode("blurry, static, distorted", 64, 4096)[0]
    if args.refs:
        refs = torch.randn(1, 16, args.refs, height // 8, width // 8, generator=torch.Generator().manual_seed(1))
        conds = (with_values(positive, time_dim_concat=refs), with_values(negative, time_dim_concat=refs),
                 with_values(negative, time_dim_concat=null_references(refs)))
    else:
        conds = (positive, negative, negative)
    latent = {"samples": torch.zeros(1, 16, (args.length - 1) // 4 + 1, height // 8, width // 8)}
    sigmas = cs.BasicScheduler().get_sigmas(model, "simple", args.steps, 1.0)[0]
    sampler = cs.KSamplerSelect().get_sampler(args.sampler)[0]
    noise = cs.RandomNoise().get_noise(0)[0]
    cuda = args.device.startswith("cuda")

    def run(guider):
        rows[0] = 0
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        cs.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu, rows[0]

    def ours(preset):
        return N["LibraGenDynamicCFGGuider"]().get_guider(model, *conds, preset)[0]

    def dual(cfg_txt, cfg_img):
        return cs.DualCFGGuider().get_guider(model, *conds, cfg_txt, cfg_img, "regular")[0]

    run(dual(7.5, 5.0))  # warm-up: loads the model, first-call allocations
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    results = []
    for preset in args.presets.split(","):
        baselines = [("DualCFG 7.5/5.0", (7.5, 5.0))] + ([("DualCFG 7.5/7.5", (7.5, 7.5))]
                                                        if preset == "stiv-jit" else [])
        for name, scales in baselines:
            a, b = [], []
            for _ in range(args.repeats):  # alternating, so drift on a shared machine hits both
                a.append(run(ours(preset)))
                b.append(run(dual(*scales)))
            results.append((preset, name, a, b))

    print(f"device={args.device} preset={args.preset} dtype={args.dtype} video={width}x{height}x{args.length} "
          f"latent={list(latent['samples'].shape)} refs={args.refs} steps={args.steps} sampler={args.sampler} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'guider preset':14s} {'vs':16s} {'DiT rows':>9s} {'core rows':>9s} {'wall s':>8s} {'core s':>8s} "
          f"{'wall x':>7s}" + ("" if cuda else f" {'cpu x':>6s}"))
    for preset, name, a, b in results:
        wa, wb = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
        ca, cb = statistics.median(x[1] for x in a), statistics.median(x[1] for x in b)
        line = (f"{preset:14s} {name:16s} {a[0][2]:9d} {b[0][2]:9d} {wa:8.3f} {wb:8.3f} {wa / wb:7.2f}")
        print(line + ("" if cuda else f" {ca / cb:6.2f}"))
    if cuda:
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    else:
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
