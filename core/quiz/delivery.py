"""Serving a round to a player: every image rendered before any is shown, fresh bytes each time.

What the browser gets for a round must not tell real from synthetic by anything but the
pixels (issue 12). Beyond the fair pixels and bytes of ``core.quiz.serving``:

* **Names.** Streamlit names a media file by a hash of its bytes
  (``streamlit/runtime/memory_media_file_storage.py``, ``_calculate_file_id``), so the same
  bytes get the same URL for every player and every round. Every call of ``serve_round``
  writes a new random nonce into each image: its URL is new for every serve and, being a
  hash of random bytes, says nothing about the image.
* **Timing.** All images of a round are rendered and encoded before the first one is
  returned, so they reach the browser together and no image arrives later because its
  file was slower to decode. A single-image round also renders (and throws away) one
  image of the *other* source, so the time it takes is that of one real plus one
  synthetic image whichever side is shown.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy import func, select

from core.config import Settings, get_settings
from core.db.engine import session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Image
from core.quiz.errors import QuizError
from core.quiz.models import MODE_SINGLE, VIEW_MODEL, QuizRound, QuizRoundImage
from core.quiz.serving import (MIMETYPE, NONCE_BYTES, content_px, encode_fixed_png, enlarge_sharp,
                               render_pixels, sharp_scale)
from core.store import ImageStore


@dataclass
class ServedImage:
    position: int
    data: bytes  # an uncompressed PNG of fixed length for the round's size
    px: int  # its side in pixels; shown at exactly this width, so the browser never rescales
    mimetype: str = MIMETYPE


@dataclass
class ServedRound:
    round_token: str
    view: str
    content_px: int  # the picture's own resolution
    scale: int  # the whole nearest-neighbour factor from content_px to the served size
    images: list[ServedImage]

    @property
    def px(self) -> int:
        return self.content_px * self.scale

    def note(self) -> str:
        """What the player is looking at, in words (shown under the images)."""
        if self.view == VIEW_MODEL:
            return (f"As the model sees them: the {self.content_px} x {self.content_px} px model "
                    f"input, enlarged {self.scale}x with nearest-neighbour (each block is one "
                    "input pixel).")
        if self.scale > 1:
            return (f"{self.content_px} x {self.content_px} px (the smallest images in this pool), "
                    f"enlarged {self.scale}x with nearest-neighbour: sharp blocks, no smoothing.")
        return f"{self.content_px} x {self.content_px} px, shown at its own size."


def image_seed(round_seed: int, position: int) -> int:
    """The seed of one image's preprocessing, derived from the round's recorded seed."""
    return (round_seed * 1_000_003 + position * 7_919) % (2**31 - 1)


def _encode(picture: PILImage.Image) -> bytes:
    # A fresh nonce per image per serve: a new media file name every time.
    return encode_fixed_png(enlarge_sharp(picture), secrets.token_bytes(NONCE_BYTES))


def serve_round(round_token: str, settings: Settings | None = None) -> ServedRound:
    """Render and encode every image of a round (in position order); ``QuizError`` when the
    round is unknown or one of its images was deleted since it was dealt."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        rnd = session.scalar(select(QuizRound).where(QuizRound.token == round_token))
        if rnd is None:
            raise QuizError("unknown round")
        rows = session.execute(
            select(QuizRoundImage.position, QuizRoundImage.image_id, Image.path, Image.source)
            .outerjoin(Image, Image.id == QuizRoundImage.image_id)
            .where(QuizRoundImage.round_id == rnd.id)
            .order_by(QuizRoundImage.position)).all()
        if any(path is None for _p, _i, path, _s in rows):
            raise QuizError("an image of this round was deleted since it was dealt; deal a new round")
        decoy = None
        if rnd.mode == MODE_SINGLE:
            other = SOURCE_SYNTHETIC if rows[0].source == SOURCE_REAL else SOURCE_REAL
            decoy = session.execute(
                select(Image.path, Image.source)
                .where(Image.class_id == rnd.class_id, Image.source == other,
                       Image.excluded.is_(False))
                .order_by(func.random()).limit(1)).first()
        view, seed, served_px, pipelines = rnd.view, rnd.seed, rnd.served_px, rnd.pipelines
    store = ImageStore(settings)
    side = content_px(view, served_px, settings)
    pictures = [render_pixels(store, path, source, view, image_seed(seed, position), side,
                              settings, pipelines)
                for position, _image_id, path, source in rows]
    if decoy is not None:
        # Same work as a shown image, result unused: see the module docstring (timing).
        _encode(render_pixels(store, decoy.path, decoy.source, view, image_seed(seed, 1), side,
                              settings, pipelines))
    images = [ServedImage(position=row.position, data=_encode(picture), px=side * sharp_scale(side))
              for row, picture in zip(rows, pictures)]
    return ServedRound(round_token=round_token, view=view, content_px=side,
                       scale=sharp_scale(side), images=images)


def served_image(image_token: str, settings: Settings | None = None) -> tuple[bytes, str]:
    """(bytes, mime type) of one image by its opaque token, encoded as ``serve_round`` does."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        row = session.execute(
            select(QuizRoundImage, QuizRound, Image)
            .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
            .join(Image, Image.id == QuizRoundImage.image_id)
            .where(QuizRoundImage.token == image_token)).first()
        if row is None:
            raise QuizError("unknown image, or it was deleted since the round was dealt")
        round_image, rnd, image = row
        side = content_px(rnd.view, rnd.served_px, settings)
        picture_args = (image.path, image.source, rnd.view,
                        image_seed(rnd.seed, round_image.position), side, settings, rnd.pipelines)
    return _encode(render_pixels(ImageStore(settings), *picture_args)), MIMETYPE


def round_images(round_token: str, settings: Settings | None = None) -> list[bytes]:
    """The served bytes of a round's images, in position order."""
    return [image.data for image in serve_round(round_token, settings).images]
