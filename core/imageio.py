"""Safe decoding of untrusted image files into checked RGB images.

Every image that enters SynthLab goes through ``decode_image``: it is opened fully (so a
truncated file fails here, not later in training), its pixel count is capped before
decoding (decompression bombs), EXIF orientation is applied, and any mode (CMYK, 16-bit,
palette, transparent, grayscale) is converted to 8-bit RGB. High bit depths are scaled by
the format's range (16-bit: value / 257), never by the picture's own brightest value, so
brightness survives the import.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# PIL's own global bomb check is disabled: we enforce our own cap per call, with a clear
# message, and never want PIL to decode a bomb before we looked at its header.
Image.MAX_IMAGE_PIXELS = None

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm", ".jfif"}


class ImageRejected(ValueError):
    """The file is not an image we can use; ``str(exc)`` is the reason shown to the user."""


@dataclass
class DecodedImage:
    image: Image.Image  # 8-bit RGB, EXIF-rotated
    original_format: str  # JPEG, PNG, ...
    original_mode: str
    sha256: str  # of the RGB pixels and size: equal for the same picture in any encoding
    was_converted: bool  # mode or orientation changed

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def pixel_hash(image: Image.Image) -> str:
    digest = hashlib.sha256()
    digest.update(f"{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _gray_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L").convert("RGB")


def _from_16bit(array: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 as ``round(value / 257)``, in integers (exact, and a quarter of the
    memory of floats for a large scan). No ties exist: ``value / 257`` is never ``k + .5``."""
    return (array.astype(np.uint32) + 128) // 257


def _stretch(array: np.ndarray, low: float, high: float) -> np.ndarray:
    span = (high - low) or 1.0
    return np.rint((array.astype(np.float64) - low) / span * 255)


def _float_gray(image: Image.Image) -> np.ndarray:
    """'F' (32-bit float) to 0..255 by the range the values were written in.

    Float images carry no declared white: 0..1 is the usual convention (scientific TIFFs,
    normalised exports), 0..255 is 8-bit data saved as floats (PIL's own ``convert("F")``),
    0..65535 is 16-bit data. The first of these that holds every value is taken as the
    range, so a dim picture stays dim; only values outside all three (negatives, huge
    values: depth maps, measurements) have no brightness to keep and are stretched
    min..max. NaN counts as the darkest value present, infinities as the extremes.
    """
    array = np.asarray(image, dtype=np.float64)
    finite = array[np.isfinite(array)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    array = np.nan_to_num(array, nan=low, posinf=high, neginf=low)
    if low >= 0:
        for white in (1.0, 255.0, 65535.0):
            if high <= white:
                return np.rint(array * (255.0 / white))
    return _stretch(array, low, high)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        # 48-bit RGB PNG/PPM files arrive here already 8-bit: PIL keeps each sample's high
        # byte (value >> 8), within 1 of value / 257, so their brightness is kept.
        return image
    if mode in SIXTEEN_BIT_MODES:
        # Scaled by the format's range, not the image's brightest pixel: a mid-grey or a
        # dark 16-bit picture must stay mid-grey or dark (PIL's convert clips instead).
        return _gray_rgb(_from_16bit(np.asarray(image)))
    if mode == "I":
        # 32-bit integers: PIL gives 16-bit PGM/PNM and some 16-bit TIFFs this mode, so
        # values that fit 0..65535 are 16-bit data. Anything else (signed or wider samples)
        # has no standard white, so it is stretched min..max: the structure stays visible.
        array = np.asarray(image)
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 65535:
            return _gray_rgb(_from_16bit(array))
        return _gray_rgb(_stretch(array, low, high))
    if mode == "F":
        return _gray_rgb(_float_gray(image))
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels go onto white, as a viewer would show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        return image.convert("RGB")
    return image.convert("RGB")


def decode_image(source: bytes | str | Path, *, max_pixels: int = 50_000_000,
                 name: str | None = None) -> DecodedImage:
    """Open, fully decode and normalise one image; raise ``ImageRejected`` with a reason."""
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise ImageRejected(f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise ImageRejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            width, height = probe.size
            fmt = probe.format or "UNKNOWN"
    except UnidentifiedImageError as exc:
        raise ImageRejected("not an image (unrecognised format)") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder error is a rejection
        raise ImageRejected(f"unreadable image header: {exc}") from exc
    if width <= 0 or height <= 0:
        raise ImageRejected("image has no pixels")
    if width * height > max_pixels:
        raise ImageRejected(
            f"image too large: {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {max_pixels:,} (possible decompression bomb; raise "
            f"SYNTHLAB_MAX_IMAGE_PIXELS to allow it)")
    try:
        image = Image.open(io.BytesIO(data))
        original_mode = image.mode
        image.load()  # full decode: truncated data fails here
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        oriented = ImageOps.exif_transpose(image)
        rotated = oriented is not image and oriented.size != image.size or _has_orientation(image)
        rgb = _to_rgb(oriented)
        rgb.load()
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or "broken data" in message.lower():
            raise ImageRejected(f"truncated or corrupt image data ({message})") from exc
        raise ImageRejected(f"corrupt image: {message}") from exc
    except Exception as exc:  # noqa: BLE001
        raise ImageRejected(f"cannot decode image: {exc}") from exc
    if rgb.mode != "RGB":  # pragma: no cover - _to_rgb guarantees it
        raise ImageRejected(f"unsupported colour mode {original_mode}")
    del label
    return DecodedImage(image=rgb, original_format=fmt, original_mode=original_mode,
                        sha256=pixel_hash(rgb),
                        was_converted=original_mode != "RGB" or rotated)


def _has_orientation(image: Image.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001
        return False


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=4)
    return buffer.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
