"""Content-addressed artifacts: a file is stored under its own sha256 and checked on every load.

A file is written to a temporary name and renamed into place, so a crash never leaves a partial
artifact under a valid name; loading re-hashes the bytes and refuses any that do not match.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import ArtifactError

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
    """Files under ``root/ab/abcdef...`` named by their sha256."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(str(root).removeprefix("file://"))
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ArtifactError(f"{sha!r} is not a sha256 digest", hint="pass the 64-hex-digit digest")
        return self.root / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put_bytes(self, data: bytes) -> str:
        sha = sha256_bytes(data)
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
            data = target.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(
                f"artifact {sha[:12]} is missing from {self.root}",
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
        target = self.path(sha)
        if target.is_file():
            target.unlink()
            return True
        return False
