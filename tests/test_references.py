"""Reference preprocessing: aspect kept, white padding, alpha and masks, input forms, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from libragen_core.conditioning.references import (
    MAX_REFERENCES,
    fit_inside,
    prepare_references,
    prepare_references_with_placements,
)
from libragen_core.errors import InputError

H, W = 48, 80  # a small 5:3 frame


def _non_white_box(ref: torch.Tensor, tol=0.02):
    """(x0, y0, x1, y1) of pixels that are not white in a [3, H, W] tensor in [-1, 1]."""
    non_white = (ref < 1.0 - tol).any(dim=0)
    ys, xs = torch.nonzero(non_white, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _solid(w, h, color=(30, 60, 200)):
    return Image.new("RGB", (w, h), color)


def test_wide_and_tall_keep_aspect_and_pad_white_centred():
    refs, placements = prepare_references_with_placements([_solid(200, 50), _solid(30, 120)], H, W)
    assert refs.shape == (2, 3, H, W) and refs.dtype == torch.float32
    assert refs.min() >= -1.0 and refs.max() <= 1.0
    # wide 4:1 -> full width, 20 rows, centred vertically
    assert _non_white_box(refs[0]) == (0, 14, 80, 34) == placements[0].box
    # tall 1:4 -> full height, 12 columns, centred horizontally
    assert _non_white_box(refs[1]) == (34, 0, 46, 48) == placements[1].box
    for ref, p in zip(refs, placements):
        x0, y0, x1, y1 = p.box
        outside = torch.ones(H, W, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.all(ref[:, outside] == 1.0), "padding must be exactly white"
        inside = ref[:, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
        expected = torch.tensor([30, 60, 200]) / 127.5 - 1
        assert torch.allclose(inside, expected[:, None, None], atol=1e-3)


def test_aspect_ratio_is_kept_for_odd_sizes():
    for w, h in [(333, 101), (17, 290), (640, 480), (81, 49)]:
        refs = prepare_references(_solid(w, h), H, W)
        x0, y0, x1, y1 = _non_white_box(refs[0])
        assert abs((x1 - x0) / (y1 - y0) - w / h) < 0.1 * w / h + 1.0 / min(y1 - y0, x1 - x0)
        assert (x1 - x0) == W or (y1 - y0) == H  # it fills one side


def test_same_aspect_fills_frame_and_tiny_image_upscales():
    refs = prepare_references([_solid(160, 96), _solid(1, 1, (255, 0, 0))], H, W)
    assert _non_white_box(refs[0]) == (0, 0, W, H)
    # 1x1 -> a 48x48 red square in the middle
    assert _non_white_box(refs[1]) == (16, 0, 64, 48)
    assert torch.allclose(refs[1][:, 10, 40], torch.tensor([1.0, -1.0, -1.0]), atol=1e-3)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)
    rgba[5:15, 5:15, 3] = 255  # opaque black square, transparent (black) elsewhere
    rgba[0, 0, 3] = 128
    refs, (p,) = prepare_references_with_placements(Image.fromarray(rgba, "RGBA"), 20, 20)
    assert p.box == (0, 0, 20, 20)
    assert torch.all(refs[0][:, 10, 10] == -1.0)  # opaque black stays black
    assert torch.all(refs[0][:, 2, 18] == 1.0)  # fully transparent black becomes white, not black
    assert abs(float(refs[0][0, 0, 0]) - (1 - 2 * 128 / 255)) < 1e-4  # half-transparent black: gray
    refs[0][:, 0, 0] = 1.0
    assert _non_white_box(refs[0]) == (5, 5, 15, 15)


def test_grayscale_and_palette_inputs():
    gray = Image.new("L", (10, 10), 0)
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 255, 0] + [0] * 765)
    refs = prepare_references([gray, pal], 10, 10)
    assert torch.allclose(refs[0][:, 5, 5], torch.tensor([-1.0, -1.0, -1.0]))
    assert torch.allclose(refs[1][:, 5, 5], torch.tensor([-1.0, 1.0, -1.0]))


def test_numpy_torch_comfy_and_path_inputs_agree(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "r.png")
    comfy_batch = torch.from_numpy(arr).float()[None] / 255.0  # ComfyUI IMAGE [1, H, W, C]
    from_pil = prepare_references(Image.fromarray(arr), H, W)
    for other in (arr, comfy_batch, comfy_batch[0], arr.astype(np.float32) / 255.0, tmp_path / "r.png", str(tmp_path / "r.png")):
        assert torch.allclose(prepare_references(other, H, W), from_pil, atol=1e-5)
    # a ComfyUI batch of 3 is 3 references
    assert prepare_references(comfy_batch.repeat(3, 1, 1, 1), H, W).shape == (3, 3, H, W)


def test_numpy_gray_and_gray_alpha():
    gray = np.full((6, 6), 255, np.uint8)
    gray[2:4, 2:4] = 0
    ref = prepare_references(gray, 6, 6)[0]
    assert torch.all(ref[:, 3, 3] == -1.0) and torch.all(ref[:, 0, 0] == 1.0)
    la = np.zeros((6, 6, 2), np.uint8)  # black, transparent
    assert torch.all(prepare_references(la, 6, 6) == 1.0)


def test_mask_whites_out_background_and_reports_subject_box():
    img = _solid(40, 40, (0, 0, 0))
    mask = np.zeros((40, 40), bool)
    mask[10:20, 20:30] = True
    refs, (p,) = prepare_references_with_placements(img, 80, 80, masks=[mask])
    # 2x upscale: the subject lands at x 40..60, y 20..40
    assert p.subject_box == (40.0, 20.0, 60.0, 40.0)
    x0, y0, x1, y1 = _non_white_box(refs[0], tol=0.5)
    assert abs(x0 - 40) <= 1 and abs(y0 - 20) <= 1 and abs(x1 - 60) <= 1 and abs(y1 - 40) <= 1
    assert torch.all(refs[0][:, 5, 5] == 1.0)  # background black became white
    assert torch.all(refs[0][:, 30, 50] == -1.0)


def test_soft_and_torch_masks_and_none_entries():
    img = torch.zeros(10, 10, 3)  # black ComfyUI IMAGE
    soft = torch.full((10, 10), 0.5)
    refs = prepare_references([img, img], 10, 10, masks=[soft, None])
    assert torch.allclose(refs[0], torch.zeros_like(refs[0]), atol=1e-5)  # half black on white = mid gray
    assert torch.all(refs[1] == -1.0)
    # a ComfyUI MASK batch [B, H, W] spreads over the images
    masks = torch.zeros(2, 10, 10)
    masks[:, :5] = 1.0
    refs = prepare_references(torch.zeros(2, 10, 10, 3), 10, 10, masks=masks)
    assert torch.all(refs[:, :, :5] == -1.0) and torch.all(refs[:, :, 5:] == 1.0)


def test_placement_mapping_and_fit_inside():
    p = fit_inside(100, 50, 80, 48)
    assert (p.width, p.height, p.left, p.top) == (80, 40, 0, 4)
    assert p.map_box((0, 0, 100, 50)) == (0.0, 4.0, 80.0, 44.0)
    assert p.map_box((50, 25, 100, 50)) == (40.0, 24.0, 80.0, 44.0)


def test_count_errors():
    with pytest.raises(InputError, match="no reference images were given"):
        prepare_references([], H, W)
    with pytest.raises(InputError, match="no reference images were given"):
        prepare_references(None, H, W)
    with pytest.raises(InputError, match=f"5 reference images were given; at most {MAX_REFERENCES}"):
        prepare_references([_solid(4, 4)] * 5, H, W)
    with pytest.raises(InputError, match="5 reference images were given"):
        prepare_references(torch.zeros(5, 4, 4, 3), H, W)


def test_input_errors():
    with pytest.raises(InputError, match="values in \\[0, 255\\]; float images must be in 0..1"):
        prepare_references(torch.full((4, 4, 3), 255.0).index_fill_(0, torch.tensor([0]), 0.0), H, W)
    with pytest.raises(InputError, match="values in \\[-1, 1\\]"):
        prepare_references(torch.linspace(-1, 1, 48).reshape(4, 4, 3), H, W)
    with pytest.raises(InputError, match="5 channels in its last axis"):
        prepare_references(torch.zeros(4, 4, 5), H, W)
    with pytest.raises(InputError, match="NaN"):
        prepare_references(torch.full((4, 4, 3), float("nan")), H, W)
    with pytest.raises(InputError, match="must be \\[H, W\\], \\[H, W, C\\] or a batch"):
        prepare_references(torch.zeros(1, 1, 4, 4, 3), H, W)
    with pytest.raises(InputError, match="got dict"):
        prepare_references({"a": 1}, H, W)
    with pytest.raises(InputError, match="frame size must be positive integers"):
        prepare_references(_solid(4, 4), 0, W)
    with pytest.raises(InputError, match="image file not found"):
        prepare_references("/nonexistent/ref.png", H, W)


def test_mask_errors():
    img = _solid(10, 8)
    with pytest.raises(InputError, match="mask 1 is 5x5 \\(WxH\\) but its image is 10x8"):
        prepare_references(img, H, W, masks=[np.ones((5, 5), bool)])
    with pytest.raises(InputError, match="2 masks were given for 1 reference images"):
        prepare_references(img, H, W, masks=[None, None])
    with pytest.raises(InputError, match="mask 1 selects no pixels"):
        prepare_references(img, H, W, masks=[np.zeros((8, 10), bool)])
    with pytest.raises(InputError, match="mask 1 has values outside 0..1"):
        prepare_references(img, H, W, masks=[np.full((8, 10), 3.0)])
