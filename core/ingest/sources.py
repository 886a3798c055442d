"""Reading the files of an import safely: a folder on the server, or a zip archive.

A zip is never extracted: members are read into memory one at a time, after their names
and sizes were checked. Absolute names, ``..`` components, links, encrypted members and
members that are too big (or suspiciously well compressed: zip bombs) are rejected with
a reason, so nothing of an archive can land outside the data folder.

A ``Source`` is described by a small picklable ``spec`` so the decoding processes of
``core.ingest.importer`` can reopen it themselves instead of receiving file contents.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

# Files nobody means to import (OS litter); skipped without a report line.
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
IGNORED_DIRS = {"__macosx", ".git", ".ipynb_checkpoints"}
# A member this many times smaller packed than unpacked is treated as a zip bomb.
MAX_COMPRESSION_RATIO = 200
BOMB_CHECK_MIN_BYTES = 1 << 20


class SourceError(ValueError):
    """The import source itself is unusable (missing, not a folder or zip, unreadable)."""


@dataclass(frozen=True)
class Entry:
    key: str  # POSIX path relative to the source root, shown in reports
    size: int


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def _ignored(parts: tuple[str, ...]) -> bool:
    if any(p.lower() in IGNORED_DIRS for p in parts[:-1]):
        return True
    name = parts[-1]
    return name.lower() in IGNORED_NAMES or name.startswith("._") or name.startswith(".")


class FolderSource:
    kind = "folder"

    def __init__(self, root: str | Path, max_file_bytes: int) -> None:
        self.root = Path(root).expanduser().resolve()
        self.max_file_bytes = max_file_bytes
        if not self.root.exists():
            raise SourceError(f"path does not exist: {root}")
        if not self.root.is_dir():
            raise SourceError(f"not a folder or a .zip file: {root}")

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.root), "max_file_bytes": self.max_file_bytes}

    def scan(self) -> tuple[list[Entry], list[Rejection]]:
        entries: list[Entry] = []
        rejected: list[Rejection] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames
                                 if d.lower() not in IGNORED_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if _ignored(tuple(PurePosixPath(key).parts)):
                    continue
                try:
                    info = path.lstat()
                except OSError as exc:
                    rejected.append(Rejection(key, f"cannot read file: {exc.strerror or exc}"))
                    continue
                if stat.S_ISLNK(info.st_mode):
                    rejected.append(Rejection(key, "symbolic link (not followed)"))
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                if info.st_size > self.max_file_bytes:
                    rejected.append(Rejection(key, _too_big(info.st_size, self.max_file_bytes)))
                    continue
                entries.append(Entry(key, info.st_size))
        return entries, rejected

    def read(self, key: str) -> bytes:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise OSError(f"path escapes the import folder: {key}")
        with open(path, "rb") as handle:
            data = handle.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise OSError(_too_big(len(data), self.max_file_bytes))
        return data

    def close(self) -> None:
        pass


def unsafe_member_reason(name: str) -> str | None:
    """Why a zip member name must not be used, or None when it is a plain relative path."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "unsafe name in archive: absolute path"
    parts = re.split(r"[\\/]+", name)
    if any(part == ".." for part in parts):
        return "unsafe name in archive: '..' would leave the import folder"
    if "\x00" in name:
        return "unsafe name in archive: NUL character"
    return None


class ZipSource:
    kind = "zip"

    def __init__(self, path: str | Path, max_file_bytes: int,
                 max_total_bytes: int | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        if not self.path.exists():
            raise SourceError(f"path does not exist: {path}")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"not a readable zip archive: {path} ({exc})") from exc
        self._members: dict[str, zipfile.ZipInfo] = {}

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "max_file_bytes": self.max_file_bytes}

    def scan(self) -> tuple[list[Entry], list[Rejection]]:
        entries: list[Entry] = []
        rejected: list[Rejection] = []
        total = 0
        for info in self._zip.infolist():
            name = info.filename
            if info.is_dir():
                continue
            reason = unsafe_member_reason(name)
            if reason:
                rejected.append(Rejection(name, reason))
                continue
            key = "/".join(p for p in re.split(r"[\\/]+", name) if p not in ("", "."))
            if not key or _ignored(tuple(key.split("/"))):
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                rejected.append(Rejection(key, "symbolic link in archive (not followed)"))
                continue
            if info.flag_bits & 0x1:
                rejected.append(Rejection(key, "encrypted archive member"))
                continue
            if info.file_size > self.max_file_bytes:
                rejected.append(Rejection(key, _too_big(info.file_size, self.max_file_bytes)))
                continue
            if info.file_size >= BOMB_CHECK_MIN_BYTES and \
                    info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
                rejected.append(Rejection(key, (
                    f"suspicious compression ratio ({info.file_size:,} bytes from "
                    f"{info.compress_size:,}): possible zip bomb")))
                continue
            if key in self._members:
                rejected.append(Rejection(key, "duplicate name in archive"))
                continue
            total += info.file_size
            if self.max_total_bytes is not None and total > self.max_total_bytes:
                rejected.append(Rejection(key, "archive exceeds the total size limit"))
                continue
            self._members[key] = info
            entries.append(Entry(key, info.file_size))
        return entries, rejected

    def read(self, key: str) -> bytes:
        if not self._members:
            self.scan()
        info = self._members.get(key)
        if info is None:
            raise OSError(f"no such member: {key}")
        # Read at most one byte past the limit: the header's size may lie.
        with self._zip.open(info) as handle:
            data = handle.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise OSError(_too_big(len(data), self.max_file_bytes))
        return data

    def close(self) -> None:
        self._zip.close()


def _too_big(size: int, limit: int) -> str:
    return (f"file too large: {size / 2**20:.1f} MB exceeds the {limit / 2**20:.0f} MB limit "
            "(SYNTHLAB_MAX_IMPORT_FILE_MB)")


def open_source(path: str | Path, max_file_bytes: int,
                max_total_bytes: int | None = None) -> FolderSource | ZipSource:
    """A folder or a zip archive; ``SourceError`` with a clear message otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"path does not exist: {path}")
    if path.is_dir():
        return FolderSource(path, max_file_bytes)
    if path.is_file() and zipfile.is_zipfile(path):
        return ZipSource(path, max_file_bytes, max_total_bytes)
    if path.suffix.lower() == ".zip":
        raise SourceError(f"not a valid .zip archive (damaged or incomplete?): {path}")
    raise SourceError(f"not a folder or a .zip file: {path}")


_reopened: dict[tuple, FolderSource | ZipSource] = {}


def reopen(spec: dict[str, Any]) -> FolderSource | ZipSource:
    """The source a ``spec`` describes, opened once per process (decoding workers)."""
    key = tuple(sorted(spec.items()))
    source = _reopened.get(key)
    if source is None:
        cls = FolderSource if spec["kind"] == "folder" else ZipSource
        source = cls(spec["path"], spec["max_file_bytes"])
        if isinstance(source, ZipSource):
            source.scan()
        _reopened[key] = source
    return source
