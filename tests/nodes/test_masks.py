"""Mask templates and pad for outpaint (pure PIL/numpy): exact pixel checks."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime.templates import NullReporter
from nodes.masks import (
    TEMPLATES,
    InvalidMaskError,
    adjust_mask,
    composite_keep_outside,
    feather_mask,
    grow_mask,
    image_to_mask,
    load_mask,
    mask_from_image,
    pad_for_outpaint,
    pad_image_for_outpaint,
)

CTX = NullReporter()


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def dot(size: tuple[int, int] = (20, 16), at: tuple[int, int] = (9, 7)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.putpixel(at, 255)
    return mask


def test_alpha_and_luminance_threshold_and_invert() -> None:
    rgba = Image.new("RGBA", (4, 2), (255, 255, 255, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 200))
    rgba.putpixel((2, 0), (0, 0, 0, 100))
    alpha = image_to_mask(CTX, {"image": rgba, "channel": "alpha", "threshold": 0.5,
                                "invert": False})["mask"]  # fmt: skip
    assert alpha.mode == "L" and arr(alpha).tolist() == [[0, 255, 0, 0], [0, 0, 0, 0]]
    soft = image_to_mask(CTX, {"image": rgba, "channel": "alpha", "threshold": 0.0,
                               "invert": False})["mask"]  # fmt: skip
    assert arr(soft).tolist() == [[0, 200, 100, 0], [0, 0, 0, 0]]
    lum = image_to_mask(CTX, {"image": rgba, "channel": "luminance", "threshold": 0.5,
                              "invert": True})["mask"]  # fmt: skip
    assert arr(lum).tolist() == [[0, 255, 255, 0], [0, 0, 0, 0]]  # black pixels, inverted
    red = mask_from_image(Image.new("RGB", (1, 1), (10, 20, 30)), "green")
    assert arr(red).tolist() == [[20]]


def test_alpha_of_an_image_without_alpha_is_refused_naming_the_port() -> None:
    with pytest.raises(InvalidMaskError) as caught:
        mask_from_image(Image.new("RGB", (2, 2)), "alpha")
    assert caught.value.code == "invalid_mask" and caught.value.details["port"] == "channel"


def test_load_mask_reads_an_uploaded_asset() -> None:
    painted = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    painted.paste((255, 255, 255, 255), (2, 2, 6, 6))
    buf = io.BytesIO()
    painted.save(buf, "PNG")

    class Assets:
        def read(self, ref: str) -> bytes:
            assert ref == "asset://uploads/mask.png"
            return buf.getvalue()

    ctx = NullReporter(services={"assets": Assets()})
    for channel in ("alpha", "luminance"):
        mask = load_mask(ctx, {"asset": "asset://uploads/mask.png", "channel": channel,
                               "threshold": 0.5, "invert": False})["mask"]  # fmt: skip
        expected = np.zeros((8, 8), np.uint8)
        expected[2:6, 2:6] = 255
        assert np.array_equal(arr(mask), expected)


def test_grow_shrink_and_feather() -> None:
    grown = grow_mask(dot(), 2)
    expected = np.zeros((16, 20), np.uint8)
    expected[5:10, 7:12] = 255
    assert np.array_equal(arr(grown), expected)
    assert np.array_equal(arr(grow_mask(grown, -2)), arr(dot()))
    assert arr(grow_mask(dot(), -1)).max() == 0  # shrinking a single pixel removes it
    big = grow_mask(dot(), 5)
    soft = arr(feather_mask(big, 3))
    assert soft[arr(big) == 0].max() == 0  # the feather stays inside the mask
    assert soft[7, 9] == 255 and 0 < soft[2, 9] < 255  # hard in the middle, soft at the edge
    inverted = adjust_mask(CTX, {"mask": dot(), "grow": 1, "feather": 0, "invert": True})["mask"]
    assert arr(inverted)[7, 9] == 0 and arr(inverted)[0, 0] == 255


def test_composite_keeps_every_pixel_outside_the_mask() -> None:
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8), "RGB")
    generated = Image.new("RGB", (16, 16), (1, 2, 3))  # another size: resized onto the original
    mask = feather_mask(grow_mask(dot(), 3), 2)
    out = arr(composite_keep_outside(generated, original, mask))
    outside = arr(mask) == 0
    assert np.array_equal(out[outside], arr(original)[outside])
    assert (out[7, 9] == (1, 2, 3)).all()


@pytest.mark.parametrize("fill", ["edge", "gray"])
def test_pad_for_outpaint_size_and_mask(fill: str) -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB")
    inputs: dict[str, Any] = {"image": image, "left": 8, "top": 0, "right": 16, "bottom": 4,
                              "feather": 0, "fill": fill}  # fmt: skip
    out = pad_image_for_outpaint(CTX, inputs)
    padded, mask = arr(out["image"]), arr(out["mask"])
    assert out["image"].size == out["mask"].size == (8 + 32 + 16, 24 + 4)
    assert np.array_equal(padded[0:24, 8:40], arr(image))  # the old image, where it was
    new = np.ones((28, 56), bool)
    new[0:24, 8:40] = False
    assert (mask[new] == 255).all() and (mask[~new] == 0).all()
    if fill == "gray":
        assert (padded[new] == 128).all()
    else:
        assert np.array_equal(padded[0:24, 0], arr(image)[:, 0])  # edge repeated


def test_pad_feather_ramps_only_along_padded_sides() -> None:
    image = Image.new("RGB", (32, 32), (50, 60, 70))
    _, mask = pad_for_outpaint(image, 16, 0, 0, 0, feather=8)
    m = arr(mask).astype(int)
    assert (m[:, :16] == 255).all()
    ramp = m[10, 16:26].tolist()
    assert ramp[0] == 255 and ramp == sorted(ramp, reverse=True) and ramp[8] == 0
    assert (m[:, 24:] == 0).all()  # the unpadded sides are not feathered
    with pytest.raises(InvalidMaskError) as caught:
        pad_for_outpaint(image, -1, 0, 0, 0)
    assert caught.value.details["port"] == "left"


def test_templates_are_published_with_mask_ports() -> None:
    ids = {t.id: t for t in TEMPLATES}
    assert set(ids) == {"load_mask", "image_to_mask", "adjust_mask", "pad_for_outpaint"}
    assert ids["pad_for_outpaint"].output("mask").type.value == "mask"  # type: ignore[union-attr]
