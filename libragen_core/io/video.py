"""Read and write video files with PyAV (mp4/H.264, webm/VP9) and Pillow (animated webp, gif).

Frames are uint8 numpy arrays [T, H, W, 3]. Writes go through a temporary file, so a failed or
interrupted write never leaves a partial video under the final name.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_path

VIDEO_FORMATS = {
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
}
IMAGE_ANIMATION_FORMATS = (".webp", ".gif")
SUPPORTED_SUFFIXES = tuple(VIDEO_FORMATS) + IMAGE_ANIMATION_FORMATS


def as_uint8_frames(frames) -> np.ndarray:
    """Accept uint8 or float [0, 1] frames as numpy or torch, [T, H, W, 3]; return uint8 numpy."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().float().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise InputError(f"video frames must be [frames, height, width, 3]; got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise InputError("cannot write a video with no frames")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    elif frames.shape[-1] == 4:
        frames = frames[..., :3]
    return np.ascontiguousarray(frames)


def write_video(path: str | os.PathLike, frames, fps: float = 16.0, quality: int = 18) -> Path:
    """Write frames to `path`; the container follows the suffix (.mp4, .webm, .webp, .gif).

    `quality` is the constant rate factor for H.264/VP9 (lower is better; 18 is visually lossless).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unsupported video suffix {suffix!r} for {path}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if not (0 < fps <= 240):
        raise InputError(f"frame rate must be in (0, 240]; got {fps}")
    frames = as_uint8_frames(frames)
    with atomic_path(path) as tmp:
        if suffix in VIDEO_FORMATS:
            _write_av(tmp, frames, fps, quality, *VIDEO_FORMATS[suffix])
        else:
            _write_pillow(tmp, frames, fps)
    return path


def _write_av(path: Path, frames: np.ndarray, fps: float, quality: int, fmt: str, codec: str, pix_fmt: str):
    import av

    # 4:2:0 chroma needs even sizes; pad by edge replication rather than fail on odd sizes
    t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": str(quality)}
        if codec == "libx264":
            # macroblock-tree rate control makes the bytes depend on encoder state left over from
            # earlier encodes in the process; without it a dataset rerun is byte-identical
            stream.options["x264-params"] = "mbtree=0"
        elif codec == "libvpx-vp9":
            stream.options["b:v"] = "0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_pillow(path: Path, frames: np.ndarray, fps: float):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    duration = max(1, round(1000.0 / fps))
    fmt = "WEBP" if path.suffix.lower().endswith("webp") else "GIF"
    extra = {"lossless": False, "quality": 90} if fmt == "WEBP" else {"disposal": 2}
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=duration, loop=0, **extra)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame of a video file; returns (uint8 [T, H, W, 3], frames per second)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file not found: {path}")
    if path.suffix.lower() in IMAGE_ANIMATION_FORMATS:
        return _read_pillow(path)
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 16)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError) as e:
        raise InputError(f"cannot read video {path}: {e}. Is it a complete, playable video file?") from e
    if not frames:
        raise InputError(f"video {path} has no frames")
    return np.stack(frames), fps


def probe_video(path: str | os.PathLike) -> dict:
    """{width, height, frames, fps} from the container, without decoding pictures."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            n = int(stream.frames or 0)
            width, height = stream.codec_context.width, stream.codec_context.height
            if n <= 0:  # containers without a frame count: count the packets (no decoding)
                n = sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, IndexError) as e:
        raise InputError(f"the video cannot be decoded ({type(e).__name__}: {e})") from None
    if n <= 0 or width <= 0 or height <= 0:
        raise InputError(f"the video has no frames ({n} frames of {width}x{height})")
    return {"width": int(width), "height": int(height), "frames": n, "fps": fps}


def read_frames(path: str | os.PathLike, indices, transform=None) -> dict[int, np.ndarray]:
    """Decode a video up to the last wanted frame, keeping only the wanted ones (0-based frame
    numbers -> uint8 [H, W, 3]); memory holds those frames only, however long the video.
    transform(frame) -> what to keep of each wanted frame (e.g. a smaller copy), applied as it is decoded."""
    import av

    path = Path(path)
    want = {int(i) for i in indices}
    if not want:
        return {}
    last = max(want)
    out = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i in want:
                    rgb = frame.to_ndarray(format="rgb24")
                    out[i] = rgb if transform is None else transform(rgb)
                if i >= last:
                    break
    except (av.error.FFmpegError, IndexError) as e:
        raise InputError(f"cannot be decoded ({type(e).__name__}: {e})") from None
    if len(out) < len(want):
        raise InputError(f"decodes to {len(out)} of the {len(want)} frames it should have (frame {last} is past "
                         "its end): the file is truncated or its header is wrong")
    return out


def _read_pillow(path: Path) -> tuple[np.ndarray, float]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            frames, durations = [], []
            for f in ImageSequence.Iterator(im):
                frames.append(np.asarray(f.convert("RGB")))
                durations.append(f.info.get("duration", 0) or 0)
    except OSError as e:
        raise InputError(f"cannot read animation {path}: {e}") from e
    # Writers (Pillow's WebP and GIF among them) store a run of identical frames once with the
    # run's summed duration; spread each frame over the constant-rate grid of the shortest one.
    step = min((d for d in durations if d > 0), default=62)
    counts = [max(1, round(d / step)) if d > 0 else 1 for d in durations]
    return np.repeat(np.stack(frames), counts, axis=0), 1000.0 / step
