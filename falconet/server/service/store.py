"""Where image bytes live: content-addressed files, written so a crash leaves no half image.

The database holds rows that point at content hashes; the store holds the bytes. A blob is
complete before any row names it (written to a temporary file in the same directory, flushed,
then renamed over its final name), so a crash mid-upload leaves at most an unnamed temporary file
that the next start removes. ``ImageStore`` is the interface an S3-compatible bucket can fill.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol


class ImageStore(Protocol):
    def put(self, data: bytes, extension: str) -> str: ...

    def path(self, sha256: str, extension: str) -> Path: ...

    def read(self, sha256: str, extension: str) -> bytes: ...

    def exists(self, sha256: str, extension: str) -> bool: ...


class LocalImageStore:
    """``root/ab/<sha256>.<ext>``: the first two hex digits fan the files out over 256 folders."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str, extension: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{extension}"

    def exists(self, sha256: str, extension: str) -> bool:
        return self.path(sha256, extension).is_file()

    def put(self, data: bytes, extension: str) -> str:
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha, extension)
        if final.is_file():
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def read(self, sha256: str, extension: str) -> bytes:
        return self.path(sha256, extension).read_bytes()

    def remove_partial_writes(self) -> int:
        """Temporary files left by a crash in the middle of a write; called at start."""
        removed = 0
        for tmp in self.root.glob("*/.part-*"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed
