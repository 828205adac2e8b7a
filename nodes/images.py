"""Decoding images within a pixel budget: the size in an image's header is checked before any
pixel is decoded, at every decode (uploads, ``load_asset`` and so ComfyUI's LoadImage), so a
small file claiming a huge size (a decompression bomb) is refused instead of filling memory.

The budget is ``images.max_pixels`` of the home's ``config.json`` (default 64 MP, e.g. 8000 x
8000), set for the process by ``configure_image_limits`` when a runtime opens.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from typing import Any, BinaryIO

from PIL import Image

from graph_runtime.errors import TakeflowError

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
_limit = DEFAULT_MAX_IMAGE_PIXELS


class ImageTooLargeError(TakeflowError):
    """An image whose header claims more pixels than the configured budget."""

    code = "image_too_large"
    http_status = 413


def max_image_pixels() -> int:
    return _limit


def set_max_image_pixels(limit: int) -> None:
    """Set this process's pixel budget per image (``DEFAULT_MAX_IMAGE_PIXELS`` to restore)."""
    global _limit
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"images.max_pixels must be a positive integer, not {limit!r}")
    _limit = limit


def configure_image_limits(config: Mapping[str, Any]) -> None:
    """Apply the ``images`` section of a home's config (``{"max_pixels": N}``; absent: default)."""
    section = config.get("images") or {}
    set_max_image_pixels(section.get("max_pixels", DEFAULT_MAX_IMAGE_PIXELS))


def check_image_size(width: int, height: int, name: str | None = None) -> None:
    """Refuse ``width x height`` over the budget (``ImageTooLargeError`` naming both)."""
    limit = _limit
    if width * height > limit:
        what = f"image {name!r}" if name else "the image"
        raise ImageTooLargeError(
            f"{what} is {width}x{height} ({width * height:,} pixels), over the limit of "
            f"{limit:,} pixels (images.max_pixels in the home config)",
            width=width,
            height=height,
            limit=limit,
            image=name,
        )


def open_image(source: bytes | BinaryIO, name: str | None = None) -> Image.Image:
    """``Image.open`` (which reads only the header) with its size checked against the budget;
    the caller decodes (``load``/``convert``) only what passed."""
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream)
        except Image.DecompressionBombError as exc:  # beyond even PIL's own hard limit
            what = f"image {name!r}" if name else "the image"
            raise ImageTooLargeError(
                f"{what} is too large: {exc}", limit=_limit, image=name
            ) from None
    check_image_size(image.width, image.height, name)
    return image


def check_image_header(head: bytes, name: str | None = None) -> None:
    """Refuse bytes whose image header claims more pixels than the budget; bytes that are no
    image (or whose header is not within ``head``) pass: decoding them checks again."""
    try:
        open_image(head, name)
    except ImageTooLargeError:
        raise
    except Exception:  # not an image, or a header beyond the bytes given
        return
