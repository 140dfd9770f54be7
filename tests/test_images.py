"""load_image: real files written with Pillow, every error path with its message."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from libragen_core.errors import InputError
from libragen_core.io.images import MAX_IMAGE_PIXELS, load_image


def _png_with_header(path, width, height):
    """A syntactically valid PNG whose IHDR claims width x height but whose data is one tiny row."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp")])
def test_rgb_formats_round_trip(tmp_path, fmt, suffix):
    arr = np.zeros((20, 30, 3), np.uint8)
    arr[:, :15] = (200, 30, 40)
    Image.fromarray(arr).save(tmp_path / f"a{suffix}", format=fmt)
    im = load_image(tmp_path / f"a{suffix}")
    assert im.mode == "RGB" and im.size == (30, 20)
    got = np.asarray(im).astype(int)
    assert np.abs(got[10, 5] - (200, 30, 40)).max() < 12  # lossy formats stay close
    assert np.abs(got[10, 25]).max() < 12


def test_rgba_kept_and_grayscale_palette_become_rgb(tmp_path):
    Image.new("RGBA", (8, 6), (10, 20, 30, 100)).save(tmp_path / "a.png")
    Image.new("L", (8, 6), 77).save(tmp_path / "l.png")
    Image.new("P", (8, 6), 3).save(tmp_path / "p.png")
    Image.new("LA", (8, 6), (50, 0)).save(tmp_path / "la.png")
    rgba = load_image(tmp_path / "a.png")
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (10, 20, 30, 100)
    gray = load_image(tmp_path / "l.png")
    assert gray.mode == "RGB" and gray.getpixel((2, 2)) == (77, 77, 77)
    assert load_image(tmp_path / "p.png").mode == "RGB"
    la = load_image(tmp_path / "la.png")
    assert la.mode == "RGBA" and la.getpixel((0, 0))[3] == 0


def test_palette_with_transparency_becomes_rgba(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.info["transparency"] = 1
    im.save(tmp_path / "pt.png", transparency=1)
    out = load_image(tmp_path / "pt.png")
    assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 0


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 32768, np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    im = load_image(tmp_path / "g16.png")
    assert im.mode == "RGB"
    assert abs(im.getpixel((0, 0))[0] - 128) <= 1


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    im = load_image(tmp_path / "rot.jpg")
    assert im.size == (20, 40)
    a = np.asarray(im).astype(int)
    assert a[5, 10].mean() > 200 and a[35, 10].mean() < 50  # the white half is now on top


def test_tiny_image(tmp_path):
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "t.png")
    assert load_image(tmp_path / "t.png").getpixel((0, 0)) == (1, 2, 3)


def test_missing_empty_folder(tmp_path):
    with pytest.raises(InputError, match="image file not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png is empty \(0 bytes\)"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("this is text, not pixels\n")
    with pytest.raises(InputError, match=r"notes\.png is not an image that can be read .*supported formats are PNG"):
        load_image(tmp_path / "notes.png")


def test_truncated_file(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png is damaged or truncated"):
        load_image(tmp_path / "cut.png")


def test_unsupported_format(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.ppm")
    with pytest.raises(InputError, match=r"a\.ppm is a PPM image; supported formats are PNG, JPEG"):
        load_image(tmp_path / "a.ppm")


def test_header_over_our_limit_is_refused_before_decoding(tmp_path):
    # 9000 x 9000 = 81 MP: under Pillow's own warning threshold (~89 MP), over ours (64 Mi pixels).
    path = _png_with_header(tmp_path / "big.png", 9000, 9000)
    with pytest.raises(InputError, match=r"big\.png claims 9000x9000 = 81\.0 megapixels, over the limit of 67\.1"):
        load_image(path)


def test_decompression_bomb_header(tmp_path):
    # 100000 x 100000: Pillow itself raises at open(); we report it with our limit.
    path = _png_with_header(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(InputError, match=rf"bomb\.png was refused as a decompression bomb .*limit here is 67\.1 megapixels \({MAX_IMAGE_PIXELS} pixels\)"):
        load_image(path)


def test_limit_is_configurable(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", max_pixels=200).size == (20, 10)
    with pytest.raises(InputError, match="over the limit"):
        load_image(tmp_path / "a.png", max_pixels=199)
