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


def smooth_photo(seed: int, size: tuple[int, int] = (170, 128)) -> bytes:
    """A "photo" that compresses well: soft gradients and blurred blobs, as a JPEG."""
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-80, 80, size=(2, 3))
    pixels = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        pixels += blob[..., None] * rng.uniform(-60, 60, size=3)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(2)).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def noisy_generation(seed: int, side: int = 384) -> bytes:
    """A "generation" that compresses badly: strong per-pixel noise, as a larger PNG."""
    rng = np.random.default_rng(10_000 + seed)
    pixels = rng.normal(rng.uniform(60, 190, size=3), 55, size=(side, side, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def add_contrast_pool(settings, *, real: int = 12, synthetic: int = 12,  # noqa: ANN001
                      label: str = "apple", model: str = "sd-turbo") -> None:
    """One class whose real and synthetic files differ strongly in everything but meaning:
    small smooth JPEG photos vs large noisy PNG generations (byte size, format, entropy,
    decoding time). Served metadata must not tell them apart."""
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.store import ImageStore

    store = ImageStore(settings)
    with session_scope(settings, write=True) as session:
        image_class = get_or_create_class(session, label)
        photos = get_or_create_dataset(session, "smooth-photos")
        generated = get_or_create_dataset(session, f"noisy-{model}", source="synthetic")
        for i in range(real):
            raw = smooth_photo(i)
            add_image(session, store, decode_image(raw), image_class=image_class, dataset=photos,
                      raw=raw, original_name=f"photo_{i}.jpg")
        for i in range(synthetic):
            raw = noisy_generation(i)
            add_image(session, store, decode_image(raw), image_class=image_class,
                      dataset=generated, raw=raw, original_name=f"gen_{i}.png",
                      generation={"prompt": f"a photo of a {label}", "seed": i, "model": model,
                                  "steps": 4, "guidance": 0.0})
