"""Content-addressed artifacts: a file is stored under its own sha256 and checked on every load.

A file is written to a temporary name and renamed into place, so a crash never leaves a partial
artifact under a valid name; loading re-hashes the bytes and refuses any that do not match. The
root may be object storage (``s3://``, ``gs://``, ``az://``: see ``headrace.objectstore``), where a
PUT is atomic by itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .objectstore import filesystem, is_local

__all__ = ["ArtifactStore", "sha256_bytes", "sha256_file"]

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    """Files under ``root/ab/abcdef...`` named by their sha256 (a folder, or object storage)."""

    def __init__(self, root: str | Path, storage_options: Mapping[str, str] | None = None) -> None:
        text = str(root)
        self.url = text.rstrip("/")
        self._fs: Any = None
        if is_local(text):
            self.root = Path(text.removeprefix("file://"))
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self._fs, prefix = filesystem(text, storage_options)
            self._prefix = prefix
            self.root = Path(prefix)  # for messages; the bytes live behind self._fs

    def _key(self, sha: str) -> str:
        self.path(sha)  # checks the digest
        return f"{self._prefix}/{sha[:2]}/{sha}"

    def path(self, sha: str) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ArtifactError(f"{sha!r} is not a sha256 digest", hint="pass the 64-hex-digit digest")
        return self.root / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        if self._fs is not None:
            return bool(self._fs.exists(self._key(sha)))
        return self.path(sha).is_file()

    def put_bytes(self, data: bytes) -> str:
        sha = sha256_bytes(data)
        if self._fs is not None:
            if not self._fs.exists(self._key(sha)):
                with self._fs.open(self._key(sha), "wb") as handle:
                    handle.write(data)
            return sha
        target = self.path(sha)
        if target.is_file():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def put_file(self, path: str | Path) -> str:
        return self.put_bytes(Path(path).read_bytes())

    def get_bytes(self, sha: str) -> bytes:
        target = self.path(sha)
        try:
            if self._fs is not None:
                with self._fs.open(self._key(sha), "rb") as handle:
                    data = handle.read()
            else:
                data = target.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(
                f"artifact {sha[:12]} is missing from {self.url}",
                hint="the model version may have been retired; train or restore it",
            ) from None
        actual = sha256_bytes(data)
        if actual != sha:
            raise ArtifactError(
                f"artifact {sha[:12]} is corrupt or was modified: its content hashes to {actual[:12]}",
                hint="do not load it; retrain the model or restore the file from a backup",
            )
        return data

    def remove(self, sha: str) -> bool:
        if self._fs is not None:
            if not self._fs.exists(self._key(sha)):
                return False
            self._fs.rm(self._key(sha))
            return True
        target = self.path(sha)
        if target.is_file():
            target.unlink()
            return True
        return False
