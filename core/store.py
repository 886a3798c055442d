"""Content-addressed image files under ``SYNTHLAB_HOME/images``.

Files are named by their pixel hash and written atomically (temporary file in the same
filesystem, fsync, rename), so a crash never leaves a half-written image under its final
name. The database row is added only after the file is in place; the reverse order on
delete. ``core.maintenance`` finds and repairs the rare orphan a crash can leave between
the two steps.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from core.config import Settings, get_settings
from core.imageio import DecodedImage, encode_png

# Formats kept byte-for-byte when the decoded image needed no conversion; anything else
# is stored as a lossless PNG of the normalised RGB image.
KEEP_ORIGINAL_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


class StoreError(OSError):
    """The image folder could not be written (disk full, permissions)."""


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite says SQLITE_FULL this way; PostgreSQL's disk-full class is SQLSTATE 53100.
_DB_FULL_MESSAGES = ("database or disk is full", "no space left on device",
                     "could not extend file", "disk quota exceeded")


class DiskFullError(StoreError):
    """The disk holding the data folder (images or database) is full.

    Raised by ``ImageStore`` on a full disk (so an import stops instead of rejecting every
    later file), and by the importer, with a message naming no server path (a job's error
    is shown to every user), after it removed the files it wrote but could not index.
    """

    def __init__(self, *args: object) -> None:
        # (message) when raised here, (errno, message) when unpickled from another process.
        if len(args) == 1:
            args = (errno.ENOSPC, args[0])
        super().__init__(*args)

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: SQLAlchemy's ``orig``, a ``__cause__``) says the
    disk is full: ENOSPC/EDQUOT from a file write, SQLite's "database or disk is full",
    PostgreSQL's DiskFull."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if getattr(current, "sqlstate", None) == "53100" or getattr(current, "pgcode", None) == "53100":
            return True
        if type(current).__name__ == "OperationalError" and any(
                m in str(current).lower() for m in _DB_FULL_MESSAGES):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _store_error(exc: OSError, root: Path) -> StoreError:
    """A ``DiskFullError`` when the disk is full (so it can be told from a bad file: an
    import stops instead of rejecting every later file), else a ``StoreError``."""
    message = f"cannot write image to {root}: {exc.strerror or exc}"
    return DiskFullError(message) if is_disk_full(exc) else StoreError(message)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None, *,
                 fsync: bool = True) -> None:
    """Write ``data`` to a temporary file, then rename it onto ``path``.

    ``fsync=False`` suits caches: an entry a power cut damaged fails to load and is
    recomputed, and skipping the flush to disk is cheaper than recomputing cheap entries.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tmp_dir or path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=".part-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


@dataclass(frozen=True)
class StoredFile:
    relpath: str  # relative to the images folder, what the DB keeps
    created: bool  # False when an identical file was already there


class ImageStore:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.root = self.settings.images_dir
        self.thumbs = self.settings.thumbs_dir

    @staticmethod
    def relpath_for(sha256: str, ext: str) -> str:
        return f"{sha256[:2]}/{sha256}{ext}"

    def abspath(self, relpath: str) -> Path:
        path = (self.root / relpath).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"path escapes the image store: {relpath}")
        return path

    def exists(self, relpath: str) -> bool:
        return self.abspath(relpath).is_file()

    def put(self, decoded: DecodedImage, raw: bytes | None = None) -> StoredFile:
        """Store ``decoded`` (its original bytes when they are usable as they are)."""
        ext = KEEP_ORIGINAL_FORMATS.get(decoded.original_format)
        if raw is not None and ext and not decoded.was_converted:
            data = raw
        else:
            ext, data = ".png", encode_png(decoded.image)
        relpath = self.relpath_for(decoded.sha256, ext)
        target = self.abspath(relpath)
        if target.is_file():
            return StoredFile(relpath, created=False)
        try:
            atomic_write(target, data, self.settings.tmp_dir)
        except OSError as exc:
            raise _store_error(exc, self.root) from exc
        return StoredFile(relpath, created=True)

    def put_image(self, image: Image.Image, sha256: str) -> StoredFile:
        """Store a PIL image that is already RGB (e.g. a generated one) as PNG."""
        relpath = self.relpath_for(sha256, ".png")
        target = self.abspath(relpath)
        if target.is_file():
            return StoredFile(relpath, created=False)
        try:
            atomic_write(target, encode_png(image), self.settings.tmp_dir)
        except OSError as exc:
            raise _store_error(exc, self.root) from exc
        return StoredFile(relpath, created=True)

    def read_bytes(self, relpath: str) -> bytes:
        return self.abspath(relpath).read_bytes()

    def open_rgb(self, relpath: str) -> Image.Image:
        with Image.open(self.abspath(relpath)) as image:
            image.load()
            return image.convert("RGB") if image.mode != "RGB" else image.copy()

    def thumbnail_path(self, relpath: str, size: int | None = None) -> Path:
        """Path of a cached JPEG thumbnail, made on first use."""
        size = size or self.settings.thumbnail_px
        stem = Path(relpath).stem
        target = self.thumbs / stem[:2] / f"{stem}_{size}.jpg"
        if target.is_file():
            return target
        image = self.open_rgb(relpath)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        atomic_write(target, buffer.getvalue(), self.settings.tmp_dir)
        return target

    def square_thumbnail_path(self, relpath: str, size: int | None = None) -> Path:
        """Path of a cached square JPEG thumbnail (``size`` x ``size``), made on first use.

        The image is scaled to cover the square and its centre cut out, so a grid of these
        lines up whatever the originals' shapes (the detail view shows the whole image).
        """
        size = size or self.settings.thumbnail_px
        stem = Path(relpath).stem
        target = self.thumbs / stem[:2] / f"{stem}_sq{size}.jpg"
        if target.is_file():
            return target
        image = ImageOps.fit(self.open_rgb(relpath), (size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        atomic_write(target, buffer.getvalue(), self.settings.tmp_dir)
        return target

    def delete(self, relpath: str) -> None:
        path = self.abspath(relpath)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        stem = Path(relpath).stem
        for thumb in (self.thumbs / stem[:2]).glob(f"{stem}_*.jpg") if (self.thumbs / stem[:2]).is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                thumb.unlink()

    def iter_relpaths(self):  # noqa: ANN201 - generator of str
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir():
                continue
            for path in sorted(sub.iterdir()):
                if path.is_file() and not path.name.startswith(".part-"):
                    yield f"{sub.name}/{path.name}"
