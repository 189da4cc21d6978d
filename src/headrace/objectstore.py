"""One way to the bytes of a store or an artifact folder, wherever it lives: a local path, ``file://``,
``s3://``, ``gs://`` or ``az://`` (``abfs://``), through fsspec over pyarrow's filesystems.

``storage_options`` (``headrace.yaml``'s top-level ``storage_options:``, values from ``${ENV}``) use
the keys Delta Lake's object_store reads, so one block serves the Delta tables and the artifacts:

- S3 and S3-compatible servers: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
  ``AWS_REGION``, ``AWS_ENDPOINT_URL`` (MinIO, Ceph, a local emulator), ``AWS_ALLOW_HTTP``. Delta's
  commits on S3 need a lock for concurrent writers: ``AWS_S3_LOCKING_PROVIDER: dynamodb`` with
  ``DELTA_DYNAMO_TABLE_NAME`` (the table is made on first use), or, with one writer at a time only,
  ``AWS_S3_ALLOW_UNSAFE_RENAME: "true"``.
- Google Cloud Storage: ``GOOGLE_SERVICE_ACCOUNT`` (a key file) or the machine's default credentials.
- Azure: ``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` (or the default credential).

Unknown schemes are refused with one line (an ``artifacts: s3:/bucket`` typo once made a local folder).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["SCHEMES", "check_location", "filesystem", "is_local", "join"]

SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "file")


def is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def check_location(location: str, what: str = "store") -> str:
    """``location`` if it is a local path or a URL of a known scheme; ConfigError otherwise."""
    if "://" not in location:
        if location.split(":", 1)[0] in SCHEMES and location.split(":", 1)[1:2] != [""]:
            raise ConfigError(
                f"{what}: {location!r} looks like a URL with one slash",
                hint=f"write {location.split(':', 1)[0]}://BUCKET/PREFIX",
            )
        return location
    scheme = urlsplit(location).scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{what}: the scheme {scheme!r} of {location!r} is not supported",
            hint="use a local path, file://, s3://, gs:// or az://",
        )
    if scheme != "file" and not urlsplit(location).netloc:
        raise ConfigError(f"{what}: {location!r} names no bucket", hint=f"write {scheme}://BUCKET/PREFIX")
    return location


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])


def _truthy(value: str | None) -> bool:
    return str(value or "").lower() in ("1", "true", "yes")


def _arrow_fs(location: str, options: Mapping[str, str]) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    path = (parts.netloc + parts.path).rstrip("/")
    if scheme in ("s3", "s3a"):
        endpoint = options.get("AWS_ENDPOINT_URL") or options.get("AWS_ENDPOINT")
        kwargs: dict[str, Any] = {
            "access_key": options.get("AWS_ACCESS_KEY_ID"),
            "secret_key": options.get("AWS_SECRET_ACCESS_KEY"),
            "session_token": options.get("AWS_SESSION_TOKEN"),
            "region": options.get("AWS_REGION") or options.get("AWS_DEFAULT_REGION"),
        }
        if endpoint:
            ends = urlsplit(endpoint)
            kwargs["endpoint_override"] = ends.netloc or endpoint
            kwargs["scheme"] = ends.scheme or ("http" if _truthy(options.get("AWS_ALLOW_HTTP")) else "https")
        return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), path
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(), path
    if scheme in ("az", "abfs", "abfss"):
        account = options.get("AZURE_STORAGE_ACCOUNT_NAME") or parts.username or ""
        container = parts.netloc.split("@")[0]
        azure = pafs.AzureFileSystem(
            account_name=account, account_key=options.get("AZURE_STORAGE_ACCOUNT_KEY")
        )
        return azure, (container + parts.path).rstrip("/")
    return pafs.LocalFileSystem(), parts.path if scheme == "file" else location


def filesystem(location: str, options: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """An fsspec filesystem and the path in it for ``location`` (checked against ``SCHEMES``)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    check_location(location)
    arrow, path = _arrow_fs(location, dict(options or {}))
    return ArrowFSWrapper(arrow), path
