"""Pictures for the thumbnail cache: the server's image scaled into each size class, as PNG.

Needs Pillow (the `thumbnails` extra): importing this module fails without it, and the
mount then fills no thumbnail cache (see `desktop.py`).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, PngImagePlugin

from .freedesktop import SIZE_CLASSES, Target

MAX_PIXELS = 40_000_000  # a server's "small" thumbnail bigger than this is none


class NotAnImage(ValueError):
    """The bytes are no image Pillow can read (or an absurdly large one)."""


def scaled_pngs(image: bytes, target: Target, classes: list[str]) -> dict[str, bytes]:
    """PNGs of `image` for those of `classes` it is big enough for: scaled down to the
    class's size, never up (a blurred picture would stand in for a sharp one)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    raise NotAnImage(f"{opened.width}x{opened.height} pixels")
                largest = max((SIZE_CLASSES[c] for c in classes), default=0)
                opened.draft("RGB", (largest, largest))  # JPEG: decode at a smaller scale
                picture = _displayable(opened)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise NotAnImage(str(exc)) from exc
    info = PngImagePlugin.PngInfo()
    for key, value in target.text.items():
        info.add_text(key, value)
    pngs = {}
    for size_class in sorted(classes, key=SIZE_CLASSES.__getitem__, reverse=True):
        side = SIZE_CLASSES[size_class]
        if max(picture.size) < side:
            continue
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        picture.save(out, "PNG", pnginfo=info, compress_level=3)  # 6: twice the time
        pngs[size_class] = out.getvalue()
    return pngs


def _displayable(opened: Image.Image) -> Image.Image:
    opened.seek(0)  # an animated image: its first frame
    has_alpha = opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info
    return opened.convert("RGBA" if has_alpha else "RGB")
