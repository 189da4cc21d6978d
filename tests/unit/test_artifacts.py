from pathlib import Path

import pytest

from headrace.artifacts import ArtifactStore, sha256_bytes
from headrace.errors import ArtifactError


def test_round_trip_and_dedup(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    sha = store.put_bytes(b"model bytes")
    assert sha == sha256_bytes(b"model bytes")
    assert store.put_bytes(b"model bytes") == sha
    assert store.get_bytes(sha) == b"model bytes"
    assert len(list(tmp_path.rglob("*"))) == 2  # one folder, one file


def test_tampered_artifact_refused(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    sha = store.put_bytes(b"model bytes")
    store.path(sha).write_bytes(b"evil bytes!")
    with pytest.raises(ArtifactError, match="corrupt or was modified"):
        store.get_bytes(sha)


def test_missing_and_malformed(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="missing"):
        store.get_bytes("0" * 64)
    with pytest.raises(ArtifactError, match="not a sha256"):
        store.get_bytes("../../etc/passwd")
