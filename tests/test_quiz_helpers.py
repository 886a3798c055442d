"""Quiz test data (no tests here): real JPEGs with EXIF, synthetic PNGs with generation parameters."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin

from tests.imagemaker import fruit_image

PARAMETERS_TEXT = "a photo of an apple\nSteps: 4, Sampler: Euler a, Seed: 1234, Model: sd-turbo"


def real_jpeg(label: str, seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0131] = "PhoneCamera 1.0"  # Software
    buffer = io.BytesIO()
    fruit_image(label, seed, (96, 72)).save(buffer, format="JPEG", quality=92, exif=exif)
    return buffer.getvalue()


def synthetic_png(label: str, seed: int, *, tint: bool = False) -> bytes:
    image = fruit_image(label, 50_000 + seed, (64, 64))
    if tint:  # a strong colour cast: "separable" synthetic images for the judge test
        pixels = np.asarray(image, dtype=np.int16).copy()
        pixels[..., 2] = np.clip(pixels[..., 2] + 90, 0, 255)
        pixels[..., 0] = np.clip(pixels[..., 0] - 60, 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", PARAMETERS_TEXT)  # what A1111-style front-ends write
    info.add_itxt("prompt", '{"prompt": "a photo of an apple"}')
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def add_pool(settings, *, classes=("apple",), real_per_class: int = 4,  # noqa: ANN001
             synthetic: dict[str, int] | None = None, tint: bool = False) -> None:
    """Import real and synthetic images; ``synthetic`` maps model name -> images per class."""
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.store import ImageStore

    synthetic = synthetic or {"sd-turbo": 4}
    store = ImageStore(settings)
    with session_scope(settings, write=True) as session:
        real_set = get_or_create_dataset(session, "photos")
        for c_index, label in enumerate(classes):
            image_class = get_or_create_class(session, label)
            for i in range(real_per_class):
                raw = real_jpeg(label, c_index * 1000 + i)
                add_image(session, store, decode_image(raw), image_class=image_class,
                          dataset=real_set, raw=raw, original_name=f"IMG_{label}_{i}.jpg")
            for m_index, (model, count) in enumerate(synthetic.items()):
                generated = get_or_create_dataset(session, f"gen-{model}", source="synthetic")
                for i in range(count):
                    seed = c_index * 1000 + m_index * 100 + i
                    raw = synthetic_png(label, seed, tint=tint)
                    add_image(session, store, decode_image(raw), image_class=image_class,
                              dataset=generated, raw=raw, original_name=f"{model}_{seed}.png",
                              generation={"prompt": f"a photo of a {label}", "seed": seed,
                                          "model": model, "steps": 4, "guidance": 0.0})
