"""Reading user images (references, masks) with errors that say what is wrong with the file.

Pillow decodes lazily: `Image.open` reads only the header, so a truncated or corrupt file would
otherwise fail later, deep inside resizing. We decode here, inside one try, and check the pixel
count against our own limit before decoding, so an image whose header claims a huge size (a
"decompression bomb") is refused before any memory is spent on it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

# 8192 x 8192. References are shrunk to the video frame (about 0.4 MP for 480x832), so anything
# larger is a mistake or an attack; Pillow's own default (about 89 MP, error at twice that) is
# process-wide and we leave it alone for the rest of ComfyUI.
MAX_IMAGE_PIXELS = 8192 * 8192

# MPO is how Pillow names many camera JPEGs (multi-picture JPEG); its first picture is the photo.
SUPPORTED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF", "AVIF")


def _too_large(path: Path, width: int, height: int, limit: int) -> InputError:
    return InputError(
        f"{path} claims {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
        f"{limit / 1e6:.1f} megapixels ({limit} pixels). Downscale the image (references are shrunk to "
        "the video size anyway) or check that the file is what you meant to load."
    )


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open, fully decode and upright an image file; return it in mode "RGB" or "RGBA".

    Transparency is kept (as RGBA) because reference preprocessing composites it on white;
    grayscale, palette, CMYK and 16-bit images come back as RGB. EXIF orientation is applied,
    so a phone photo is the right way up. Animated files give their first frame.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass an image file inside it")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); the download or copy did not finish. Save the image again.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two thresholds; a warning here must stop the load too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise _too_large(path, width, height, max_pixels)
                if im.format is not None and im.format not in SUPPORTED_FORMATS:
                    raise InputError(
                        f"{path} is a {im.format} image; supported formats are "
                        f"{', '.join(SUPPORTED_FORMATS)}. Convert it to PNG or JPEG."
                    )
                im.seek(0)
                im.load()
                image = ImageOps.exif_transpose(im)
                return to_rgb_or_rgba(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(
            f"{path} was refused as a decompression bomb ({e}); the limit here is "
            f"{max_pixels / 1e6:.1f} megapixels ({max_pixels} pixels). Downscale the image."
        ) from e
    except UnidentifiedImageError as e:
        raise InputError(
            f"{path} is not an image that can be read (unknown or unsupported format); supported formats "
            f"are {', '.join(SUPPORTED_FORMATS)}."
        ) from e
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path} is damaged or truncated and cannot be decoded ({e}). Save or download it again.") from e


def to_rgb_or_rgba(im: Image.Image) -> Image.Image:
    """Return `im` as RGBA when it carries transparency (alpha band or palette/tRNS), else as RGB."""
    if im.mode in ("RGB", "RGBA"):
        return im.copy() if im.mode == "RGBA" else im.convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _high_depth_to_rgb(im)
    has_alpha = im.mode in ("LA", "PA", "La", "RGBa") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)
    return im.convert("RGBA" if has_alpha else "RGB")


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """Pillow's own convert() clips 16-bit and 32-bit grayscale to 0..255; scale it instead."""
    import numpy as np

    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    else:
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top, 0.0, 1.0)
    gray = np.round(arr * 255.0).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))


def save_png(path: str | os.PathLike, image) -> Path:
    """Write a uint8 [H, W, 3] (or [H, W]) array as a PNG, atomically: a reader never sees half a file."""
    import numpy as np

    from .atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")
    return path
