"""Figures drawn with PIL (the training code has no matplotlib)."""
from __future__ import annotations


def blank_figure(size: tuple[int, int], font_size: int = 12):
    """(image, its ImageDraw, a font) for a figure drawn with PIL (there is no matplotlib here)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (255, 255, 255))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    return img, ImageDraw.Draw(img), font
