"""High bit-depth images keep their brightness: 16-bit samples are scaled by the format's
range (value / 257), not by the picture's brightest pixel. Files are made by the test."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

SIZE = (24, 16)  # width, height


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png16(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 48-bit RGB or 16-bit grey+alpha);
    ``samples`` is height x width x channels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _gray16(value: int) -> Image.Image:
    return Image.fromarray(np.full(SIZE[::-1], value, dtype=np.uint16))


def _pixels(data: bytes) -> np.ndarray:
    from core.imageio import decode_image

    decoded = decode_image(data)
    assert decoded.image.mode == "RGB" and decoded.image.size == SIZE
    return np.asarray(decoded.image).astype(int)


def test_uniform_16bit_grey_png_keeps_its_brightness():
    data = _encoded(_gray16(40000), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    # Before: scaled by its own brightest value, 40000 became 254 (white).
    assert set(_pixels(data).ravel()) == {round(40000 / 257)}  # 156


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (1000, 4), (200, 1), (65535, 255)])
def test_dark_16bit_images_stay_dark(value, expected):
    assert set(_pixels(_encoded(_gray16(value), "PNG")).ravel()) == {expected}


def test_16bit_gradient_keeps_relative_brightness():
    # From black to a dim grey (20000 of 65535): it must not be stretched up to white.
    ramp = np.linspace(0, 20000, SIZE[0]).round().astype(np.uint16)
    data = _encoded(Image.fromarray(np.tile(ramp, (SIZE[1], 1))), "PNG")
    row = _pixels(data)[0, :, 0]
    assert np.all(np.diff(row) >= 0)
    assert np.abs(row - ramp / 257).max() <= 0.5
    assert row[0] == 0 and row[-1] == round(20000 / 257)  # 78, not 255


def test_big_endian_16bit_tiff():
    image = Image.frombytes("I;16B", SIZE, np.full(SIZE[::-1], 40000, dtype=">u2").tobytes())
    data = _encoded(image, "TIFF")
    assert set(_pixels(data).ravel()) == {156}


def test_32bit_integer_images():
    # PIL opens 16-bit PGM files as 32-bit 'I': values within 0..65535 are 16-bit data.
    pgm = b"P5\n%d %d\n65535\n" % SIZE + np.full(SIZE[::-1], 40000, dtype=">u2").tobytes()
    assert Image.open(io.BytesIO(pgm)).mode == "I"
    assert set(_pixels(pgm).ravel()) == {156}
    tiff = _encoded(Image.fromarray(np.full(SIZE[::-1], 40000, dtype=np.int32)), "TIFF")
    assert set(_pixels(tiff).ravel()) == {156}
    # Outside the 16-bit range there is no standard white: stretched, order kept.
    wide = np.tile(np.linspace(-5000, 100_000, SIZE[0]).astype(np.int32), (SIZE[1], 1))
    row = _pixels(_encoded(Image.fromarray(wide), "TIFF"))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


@pytest.mark.parametrize(("value", "expected"), [
    (0.5, 128),  # the usual 0..1 range (before: a uniform float image became black)
    (0.05, 13),
    (100.0, 100),  # 8-bit data stored as floats
    (40000.0, 156),  # 16-bit data stored as floats
])
def test_float_images_keep_their_brightness(value, expected):
    data = _encoded(Image.fromarray(np.full(SIZE[::-1], value, dtype=np.float32)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert set(_pixels(data).ravel()) == {expected}


def test_float_image_with_nan_and_negative_values_is_stretched():
    values = np.tile(np.linspace(-1.0, 3.0, SIZE[0]).astype(np.float32), (SIZE[1], 1))
    values[0, 0] = np.nan
    row = _pixels(_encoded(Image.fromarray(values), "TIFF"))[1, :, 0]
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


def test_48bit_rgb_and_16bit_grey_alpha_pngs():
    rgb = np.zeros((SIZE[1], SIZE[0], 3), dtype=np.uint16)
    rgb[...] = (40000, 1000, 65535)
    data = _png16(rgb, colour_type=2)
    pixel = _pixels(data)[0, 0]
    # PIL keeps the high byte of each sample: within 1 of value / 257.
    assert np.abs(pixel - np.array([40000, 1000, 65535]) / 257).max() <= 1
    grey_alpha = np.zeros((SIZE[1], SIZE[0], 2), dtype=np.uint16)
    grey_alpha[...] = (40000, 65535)
    assert set(_pixels(_png16(grey_alpha, colour_type=4)).ravel()) == {156}
    ppm = b"P6\n%d %d\n65535\n" % SIZE + np.full((SIZE[1], SIZE[0], 3), 40000, ">u2").tobytes()
    assert set(_pixels(ppm).ravel()) == {156}


def test_16bit_png_imports_as_mid_grey(settings, tmp_path):
    from core.db.engine import session_scope
    from core.db.models import Image as ImageRow
    from core.ingest import import_dataset
    from core.store import ImageStore

    folder = tmp_path / "greys" / "apple"
    folder.mkdir(parents=True)
    (folder / "mid.png").write_bytes(_encoded(_gray16(40000), "PNG"))
    (folder / "dark.png").write_bytes(_encoded(_gray16(1000), "PNG"))
    report = import_dataset(tmp_path / "greys", settings)
    assert report.added == 2 and report.rejected == []
    with session_scope(settings) as session:
        paths = {row.original_name: row.path for row in session.query(ImageRow)}
    store = ImageStore(settings)
    assert set(np.asarray(store.open_rgb(paths["mid.png"])).ravel()) == {156}
    assert set(np.asarray(store.open_rgb(paths["dark.png"])).ravel()) == {4}
