"""``kind: file``: CSV, JSON, JSONL and Parquet files, gzip-compressed or not, one path or a glob.

Each file is one :class:`~headrace.ingest.base.Batch`: its rows arrive in chunks of about
``chunk_rows`` (``Batch.chunks``), so memory stays bounded however large the file, and the runner still
commits the file whole or not at all. The next chunk is read and parsed in a worker thread while the
runner checks the current one (one chunk ahead at most). Each file's fingerprint (sha256 of the
source name and the content) makes reruns skip what was loaded.

CSV is read as text, block by block. A block is first parsed by polars (fast path), after a columnar
check that every line has the header's number of fields (a short line would otherwise be padded with
nulls and slip through). A block that fails that check (a ragged line, invalid UTF-8, a stray quote)
is parsed again record by record: good records are kept, each bad one becomes an unparseable record
(``Batch.failures``: origin, line, raw text, reason) that goes to the quarantine. Nothing is lost.
Positions are 1-based line numbers in the (decompressed) file.

A file that grew since it was loaded (its first N bytes are those loaded, ending at a line end: a log
appended to) is read from byte N, CSV and JSONL alike; one changed anywhere else is refused with a
reason when the source appends (its earlier rows are in the dataset), unless ``--force``.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import logging
from collections.abc import Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import polars as pl
import pyarrow.parquet as pq

from ..config.sources import FileSource
from ..errors import DataError
from .base import POSITION_COLUMN, Batch

__all__ = ["FileReader", "detect_format", "expand_paths", "file_fingerprint", "open_file_source"]

log = logging.getLogger("headrace.ingest.files")

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_PRELOAD_BYTES = 256 << 20  # a file this small (and of about one chunk) is read once, not twice
_MAX_RECORD_LINES = 1000  # a quoted field may span lines; an unterminated quote stops here


def open_file_source(name: str, spec: FileSource) -> FileReader:
    return FileReader(name, spec)


def expand_paths(pattern: str) -> list[Path]:
    """The files a path names: the file itself, every file in a folder, or a glob's matches, sorted."""
    path = Path(pattern)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if glob.has_magic(pattern):
        return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    return [path] if path.exists() else []


def detect_format(path: Path, declared: str | None) -> tuple[str | None, bool]:
    """(format, gzip) from the declared format and the file's name and first bytes."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if not gz:
        try:
            with path.open("rb") as f:
                gz = f.read(2) == b"\x1f\x8b"
        except OSError:
            gz = False
    stem = name[:-3] if name.endswith(".gz") else name
    fmt = declared or _EXTENSIONS.get(Path(stem).suffix)
    return fmt, gz


def file_fingerprint(path: Path, source: str, content: bytes | None = None) -> str:
    """sha256 of the source's name and the file's content (``content``: the file's bytes, when they
    were already read)."""
    return file_digests(path, source, content)[0]


def file_digests(path: Path, source: str, content: bytes | None = None) -> tuple[str, str]:
    """(the fingerprint, the sha256 of the content) from one pass over the file."""
    if content is not None:
        file_digest = hashlib.sha256(content)
    else:
        with path.open("rb") as f:
            file_digest = hashlib.file_digest(f, "sha256")
    digest = hashlib.sha256(source.encode() + b"\0")
    digest.update(file_digest.digest())
    return digest.hexdigest(), file_digest.hexdigest()


_HASHER: ThreadPoolExecutor | None = None


def _hasher() -> ThreadPoolExecutor:
    global _HASHER
    if _HASHER is None:
        _HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headrace-fingerprint")
    return _HASHER


class FileReader:
    """The :class:`~headrace.ingest.base.Source` for a :class:`FileSource` (also ``Deduplicating``)."""

    def __init__(self, name: str, spec: FileSource) -> None:
        self.name = name
        self.spec = spec
        self._loaded: Collection[str] = frozenset()
        self._files: dict[str, dict[str, Any]] = {}

    def skip_loaded(self, loaded: Collection[str]) -> None:
        self._loaded = loaded

    def know_files(self, files: dict[str, dict[str, Any]]) -> None:
        """What was loaded of each path before (``size``, ``content_sha256``), to read only what a
        file gained since, or to refuse one changed in the middle."""
        self._files = files

    def files(self) -> list[Path]:
        return expand_paths(self.spec.path)

    def read(self) -> Iterator[Batch]:
        files = self.files()
        if not files:
            raise DataError(
                f"source {self.name!r}: no file matches {self.spec.path}",
                hint="check 'path' in headrace.yaml (globs like data/*.csv are allowed)",
            )
        for path in files:
            yield self._batch(path)

    def _batch(self, path: Path) -> Batch:
        origin = str(path)
        fmt, gz = detect_format(path, self.spec.format)
        if self.spec.compression == "gzip":
            gz = True
        elif self.spec.compression == "none":
            gz = False
        try:
            # a text file of at most about one chunk is read once, for its fingerprint and its rows
            size = path.stat().st_size
            small = fmt in ("csv", "json", "jsonl") and size <= min(
                _PRELOAD_BYTES, self.spec.chunk_rows * 512
            )
            content = path.read_bytes() if small else None
            pending: Future[tuple[str, str]] | None = None
            content_sha: str | None = None
            if self._loaded or fmt is None:
                fingerprint: str | None
                fingerprint, content_sha = file_digests(path, self.name, content)
            else:
                # Nothing of this source is loaded yet, so no file can be skipped: the fingerprint
                # is taken in a thread while the file is parsed (hashlib lets go of the GIL).
                pending, fingerprint = _hasher().submit(file_digests, path, self.name, content), None
        except OSError as exc:
            return Batch(pl.DataFrame(), origin, error=f"cannot be read ({exc.strerror or exc})")
        if fingerprint is not None and fingerprint in self._loaded:
            return Batch(pl.DataFrame(), origin, fingerprint=fingerprint, skipped=True)
        offset, first_line = 0, 1
        before = self._files.get(origin)
        if before is not None and fingerprint is not None:
            grown = _grown_from(path, before, gz) if fmt in ("csv", "jsonl") else None
            if grown is None:
                return Batch(
                    pl.DataFrame(),
                    origin,
                    fingerprint=fingerprint,
                    error="changed since it was loaded, not only appended to: its earlier rows are in "
                    "the dataset; load it again whole with --force, or rebuild the dataset with "
                    "'headrace ingest --reload'",
                )
            offset, first_line = grown
        if fmt is None:
            return Batch(
                pl.DataFrame(),
                origin,
                fingerprint=fingerprint,
                error="unknown format; name it with 'format: csv|json|jsonl|parquet'",
            )
        batch = Batch(pl.DataFrame(), origin, fingerprint=fingerprint)
        batch.extra = {"path": origin, "size": size}
        if offset:
            batch.extra["from_byte"] = offset
        try:
            if fmt == "csv":
                chunks = _CsvReader(path, gz, self.spec, batch, content, offset, first_line).chunks()
            elif fmt == "jsonl":
                chunks = _jsonl_chunks(path, gz, self.spec, batch, content, offset, first_line)
            elif fmt == "json":
                chunks = _json_chunks(path, gz, self.spec, batch, content)
            else:
                chunks = _parquet_chunks(path, self.spec)
            first = next(chunks, None)
        except DataError as exc:
            batch.error = exc.one_line()
            return batch
        except (OSError, EOFError, ValueError, pl.exceptions.PolarsError) as exc:
            batch.error = f"cannot be read as {fmt}: {_short(exc)}"
            return batch
        finally:
            if pending is not None:
                try:
                    batch.fingerprint, content_sha = pending.result()
                except OSError as exc:
                    batch.error = batch.error or f"cannot be read ({exc.strerror or exc})"
            if content_sha is not None and not gz:
                batch.extra["content_sha256"] = content_sha
        if batch.error:
            return batch
        batch.frame = first if first is not None else pl.DataFrame()
        batch.chunks = _guard(_ReadAhead(chunks), fmt)
        return batch


class _ReadAhead:
    """``chunks`` with the next chunk read and parsed in a worker thread while the caller checks and
    stores the current one (polars parses without the GIL). One chunk ahead at most, so memory still
    holds about two chunks; errors come out of ``next`` in order, as without it."""

    def __init__(self, chunks: Iterator[pl.DataFrame]) -> None:
        self.chunks = chunks
        self.pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="headrace-read"
        )
        self.ahead: Future[pl.DataFrame | None] | None = self.pool.submit(next, chunks, None)

    def __iter__(self) -> _ReadAhead:
        return self

    def __next__(self) -> pl.DataFrame:
        if self.ahead is None or self.pool is None:
            raise StopIteration
        try:
            chunk = self.ahead.result()
        except BaseException:
            self.close()
            raise
        if chunk is None:
            self.close()
            raise StopIteration
        self.ahead = self.pool.submit(next, self.chunks, None)
        return chunk

    def close(self) -> None:
        """Stop reading ahead: wait for a chunk being read, then close the reader (and its file)."""
        self.ahead = None
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
            close = getattr(self.chunks, "close", None)
            if close is not None:
                close()


def _guard(chunks: Iterator[pl.DataFrame], fmt: str) -> Iterator[pl.DataFrame]:
    """Read errors after the first chunk (a truncated gzip) as one error type the runner records."""
    try:
        yield from chunks
    except (OSError, EOFError, ValueError, pl.exceptions.PolarsError) as exc:
        raise DataError(
            f"cannot be read as {fmt}: {_short(exc)}", hint="nothing of this file was committed"
        ) from None


def _grown_from(path: Path, before: dict[str, Any], gz: bool) -> tuple[int, int] | None:
    """(byte to read from, its line number) when ``path`` is what was loaded (``before``: size and
    content_sha256) with lines appended; None when it changed otherwise."""
    size, digest = before.get("size"), before.get("content_sha256")
    if gz or not isinstance(size, int) or not isinstance(digest, str) or path.stat().st_size <= size:
        return None
    hasher, lines, left, last = hashlib.sha256(), 0, size, b""
    with path.open("rb") as f:
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                return None
            hasher.update(block)
            lines += block.count(b"\n")
            left -= len(block)
            last = block[-1:]
    if hasher.hexdigest() != digest or last != b"\n":
        return None
    return size, lines + 1


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(path: Path, gz: bool, content: bytes | None = None) -> IO[bytes]:
    """The file's (decompressed) bytes, from ``content`` when the file was already read."""
    raw: IO[bytes] = io.BytesIO(content) if content is not None else path.open("rb")
    return gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[return-value]


# -- CSV -------------------------------------------------------------------------------------------
class _CsvReader:
    def __init__(
        self,
        path: Path,
        gz: bool,
        spec: FileSource,
        batch: Batch,
        content: bytes | None = None,
        offset: int = 0,
        first_line: int = 1,
    ) -> None:
        self.path, self.gz, self.spec, self.batch, self.content = path, gz, spec, batch, content
        self.offset, self.first_line = offset, first_line  # a grown file: read from this byte on
        self.opts = spec.csv
        self.encoding = self.opts.encoding
        self.utf8 = self.encoding == "utf-8"
        self.delim = self.opts.delimiter
        self.quote = self.opts.quote

    def _fail(self, line: int, raw: bytes | str, reason: str) -> None:
        text = raw if isinstance(raw, str) else raw.decode(self.encoding, errors="backslashreplace")
        self.batch.failures.append(
            {"origin": self.batch.origin, "position": line, "raw": text[:10_000], "reason": reason}
        )

    def _split(self, text: str) -> list[str]:
        reader = csv.reader(
            [text],
            delimiter=self.delim,
            quotechar=self.quote or '"',
            quoting=csv.QUOTE_MINIMAL if self.quote else csv.QUOTE_NONE,
            strict=True,
        )
        return next(reader, [])

    def chunks(self) -> Iterator[pl.DataFrame]:
        content, self.content = self.content, None
        stream = _open(self.path, self.gz, content)
        try:
            yield from self._chunks(stream, None if self.gz else content)
        finally:
            stream.close()

    def _chunks(self, stream: IO[bytes], content: bytes | None = None) -> Iterator[pl.DataFrame]:
        """The file's rows, block by block. ``content``: the whole (uncompressed) file, already read,
        whose rows are parsed in place when they fit one block."""
        line_no = 0
        for _ in range(self.opts.skip_rows):
            stream.readline()
            line_no += 1
        first = stream.readline()
        line_no += 1
        if not first.strip():
            raise DataError("empty file (no header line)", hint="check the file, or set csv.header")
        try:
            header_text = first.decode(self.encoding).rstrip("\r\n").lstrip("\ufeff")
            fields = self._split(header_text)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(
                f"the first line is not {self.encoding} CSV ({_short(exc)})",
                hint="set csv.encoding, or check that this is a CSV file",
            ) from None
        if self.opts.header:
            self.names = _unique_names(fields)
            pending = b""
        else:
            self.names = [f"column_{i + 1}" for i in range(len(fields))]
            pending = first
            line_no -= 1
        if self.offset:  # the rows appended since the file was loaded: from that byte on
            stream.seek(self.offset)
            pending, line_no = b"", self.first_line - 1
        self.ncols = len(self.names)
        next_line = line_no + 1  # the line number of the first line in ``pending``
        start = stream.tell() if content is not None and not pending else -1
        # Sized by the header line, as before: a block may hold more than chunk_rows rows when the
        # header is longer than the lines. Sizing by the data lines (exactly chunk_rows rows) made the
        # 1M-row benchmark file two chunks instead of one, and the per-chunk work (a second check, its
        # statistics, a second Parquet file) cost more than reading ahead and writing beside the
        # checks saved on 2 cores (0.46x against 0.51x the raw limit, measured 2026-12-06).
        sample = max(len(first), 16)
        block_bytes = int(min(max(self.spec.chunk_rows * sample * 1.2, 1 << 16), 1 << 28))
        if start >= 0 and len(content or b"") - start <= block_bytes:
            assert content is not None
            if start < len(content):
                frame = self._fast(content, next_line, content.count(b"\n", start), start)
                if frame is None:
                    frame, _ = self._tolerant(content[start:], next_line, final=True)
                if frame.height:
                    yield frame
                    return
            yield pl.DataFrame(schema={**dict.fromkeys(self.names, pl.String), POSITION_COLUMN: pl.Int64})
            return
        yielded, eof, limit = False, False, block_bytes
        # the file's size when known: a short rest joins the block before it, not a chunk of its own
        total = None if self.gz else len(content) if content is not None else self.path.stat().st_size
        while True:
            # ``pending``: the bytes read and not parsed yet; a block ends at the last line end
            # within ``limit`` bytes of it (or the first one, for a line longer than that)
            if not eof and (len(pending) < limit or pending.find(b"\n") < 0):
                want = max(limit - len(pending), 1 << 16)
                if total is not None and total - stream.tell() - want < limit // 4:
                    want = max(total - stream.tell(), 1 << 16)
                data = stream.read(want)
                eof = not data
                pending += data
                del data  # not held beside ``pending`` (a block's worth of bytes)
                continue
            at_end = eof or (total is not None and stream.tell() >= total)
            if not pending:
                break
            whole = at_end and len(pending) <= limit + limit // 4
            cut = -1 if whole else pending.rfind(b"\n", 0, limit)
            if cut < 0 and not whole:
                cut = pending.find(b"\n")
            if cut < 0:
                block, pending = pending, b""
            else:
                block, pending = pending[: cut + 1], pending[cut + 1 :]
            final = eof and not pending
            newlines = block.count(b"\n")
            frame = self._fast(block, next_line, newlines)
            limit = block_bytes
            if frame is None:
                frame, carry = self._tolerant(block, next_line, final=final)
                if carry:  # a quoted record still open: parsed with the bytes after it
                    pending = carry + pending
                    limit = len(carry) + block_bytes
                    block = block[: len(block) - len(carry)]
                    newlines = block.count(b"\n")
            next_line += newlines
            del block  # the bytes are not held while the frame is checked
            if frame.height:
                yielded = True
                yield frame
        if not yielded:  # no rows: the header alone still goes through the schema checks
            yield pl.DataFrame(schema={**dict.fromkeys(self.names, pl.String), POSITION_COLUMN: pl.Int64})

    def _fast(self, data: bytes, first_line: int, newlines: int, start: int = 0) -> pl.DataFrame | None:
        """polars on a block (``data`` from ``start``), once every line is known to have the header's
        number of fields; None if one may not (the caller then reads the block record by record).

        polars refuses a line with more fields than the header, and fills the missing fields of a
        shorter line with nulls. So in a block without quotes (the common case) only the lines whose
        last field came out null need a look; a block with quotes is checked line by line first."""
        n = newlines + (0 if data.endswith(b"\n") else 1)
        if n == 0 or start >= len(data):
            return None
        quoted = self.quote is not None and data.find(self.quote.encode(self.encoding), start) >= 0
        if quoted and not self._lines_ok(data, start):
            return None
        payload, skip = data, data.count(b"\n", 0, start)
        if not self.utf8:
            try:
                payload, skip = data[start:].decode(self.encoding).encode("utf-8"), 0
            except UnicodeDecodeError:
                return None
        try:
            frame = pl.read_csv(
                payload,
                has_header=False,
                skip_lines=skip,
                schema=dict.fromkeys(self.names, pl.String),
                separator=self.delim,
                quote_char=self.quote,
                infer_schema=False,
                raise_if_empty=False,
            )
        except pl.exceptions.PolarsError:
            return None
        if frame.height != n:
            return None
        if not quoted and not self._short_lines_ok(frame, data, start):
            return None
        return frame.with_columns(_numbers(frame, first_line))

    def _short_lines_ok(self, frame: pl.DataFrame, data: bytes, start: int) -> bool:
        """In a block without quotes (row i is line i), the lines whose last field is null are blank
        or hold every field (the last one empty), not fewer fields than the header."""
        last = frame.get_column(self.names[-1])
        suspects = last.null_count()
        if suspects == 0:
            return True
        if suspects > max(1000, frame.height // 100):  # many: every line, as for quoted blocks
            return self._lines_ok(data, start)
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8, offset=start) == 10) + start
        delim = self.delim.encode(self.encoding)
        for row in last.is_null().arg_true().to_list():
            begin = start if row == 0 else int(ends[row - 1]) + 1
            end = int(ends[row]) if row < len(ends) else len(data)
            line = data[begin:end].rstrip(b"\r")
            if line and line.count(delim) != self.ncols - 1:
                return False
        return True

    def _lines_ok(self, data: bytes, start: int = 0) -> bool:
        """Every line of the block (``data`` from ``start``) has the header's number of fields (blank
        lines pass: they become empty rows)."""
        arr = np.frombuffer(data, dtype=np.uint8, offset=start)
        ends = np.flatnonzero(arr == 10)
        if not data.endswith(b"\n"):
            ends = np.append(ends, len(arr))
        starts = np.concatenate(([0], ends[:-1] + 1))
        n = len(ends)
        delims = np.flatnonzero(arr == ord(self.delim))
        counts = np.searchsorted(delims, ends) - np.searchsorted(delims, starts)
        lengths = ends - starts
        cr = arr[np.maximum(ends - 1, 0)] == 13
        blank = (lengths == 0) | ((lengths == 1) & cr)
        quoted = np.zeros(n, dtype=bool)
        if self.quote is not None:
            quotes = np.flatnonzero(arr == ord(self.quote))
            if len(quotes):
                quoted = (np.searchsorted(quotes, ends) - np.searchsorted(quotes, starts)) > 0
        suspect = (counts != self.ncols - 1) & ~blank & ~quoted
        if suspect.any():
            return False
        for i in np.flatnonzero(quoted):  # quoted lines: the C csv module counts their fields
            line = data[start + starts[i] : start + ends[i]].rstrip(b"\r")
            try:
                if len(self._split(line.decode(self.encoding))) != self.ncols:
                    return False
            except (UnicodeDecodeError, csv.Error):
                return False
        return True

    def _tolerant(self, block: bytes, first_line: int, *, final: bool) -> tuple[pl.DataFrame, bytes]:
        """Record by record: good records kept, bad ones to ``Batch.failures``. Returns the frame and
        the bytes of a record still open at the end of the block (a quoted field going on)."""
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        rows: list[list[str | None]] = []
        positions: list[int] = []
        i = 0
        carry = b""
        while i < len(lines):
            start = i
            raw = lines[i].rstrip(b"\r")
            try:
                text = raw.decode(self.encoding)
            except UnicodeDecodeError as exc:
                self._fail(first_line + i, raw, f"invalid {self.encoding} ({exc.reason} at byte {exc.start})")
                i += 1
                continue
            # a quoted field can hold newlines: join lines until the quotes balance
            joined_ok = True
            while self.quote is not None and text.count(self.quote) % 2 == 1:
                if i + 1 >= len(lines) or i - start >= _MAX_RECORD_LINES:
                    joined_ok = False
                    break
                try:
                    text += "\n" + lines[i + 1].rstrip(b"\r").decode(self.encoding)
                except UnicodeDecodeError:
                    joined_ok = False
                    break
                i += 1
            if not joined_ok:
                if not final and i + 1 >= len(lines) and i - start < _MAX_RECORD_LINES:
                    carry = b"\n".join(lines[start:]) + b"\n"
                    break
                self._fail(first_line + start, raw, "unterminated quote")
                i = start + 1
                continue
            i += 1
            if not text.strip():
                rows.append([None] * self.ncols)
                positions.append(first_line + start)
                continue
            try:
                fields = self._split(text)
            except csv.Error as exc:
                self._fail(first_line + start, text, f"not CSV ({exc})")
                continue
            if len(fields) != self.ncols:
                self._fail(first_line + start, text, f"expected {self.ncols} fields, found {len(fields)}")
                continue
            rows.append([f if f != "" else None for f in fields])
            positions.append(first_line + start)
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in self.names]
        frame = pl.DataFrame(
            {name: list(col) for name, col in zip(self.names, columns, strict=True)},
            schema=dict.fromkeys(self.names, pl.String),
        ).with_columns(pl.Series(POSITION_COLUMN, positions, dtype=pl.Int64))
        return frame, carry


def _numbers(frame: pl.DataFrame, first: int) -> pl.Series:
    """Line numbers from ``first``, chunked like the frame's columns (a parsed block arrives in many
    chunks; a column chunked otherwise would make polars copy them all into one in each later step)."""
    lengths = frame.get_column(frame.columns[0]).chunk_lengths() if frame.width else [frame.height]
    parts, start = [], first
    for size in lengths:
        parts.append(pl.Series(POSITION_COLUMN, np.arange(start, start + size, dtype=np.int64)))
        start += size
    return pl.concat(parts, rechunk=False)


def _unique_names(fields: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(fields):
        name = raw.strip() or f"column_{i + 1}"
        base, k = name, 2
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        out.append(name)
    return out


# -- JSON, JSONL, Parquet ------------------------------------------------------------------------------
def _records_frame(
    records: list[Any], first_position: int, step_positions: list[int] | None, batch: Batch
) -> pl.DataFrame:
    good: list[dict[str, Any]] = []
    positions: list[int] = []
    for i, rec in enumerate(records):
        pos = step_positions[i] if step_positions is not None else first_position + i
        if isinstance(rec, dict):
            good.append(rec)
            positions.append(pos)
        else:
            batch.failures.append(
                {
                    "origin": batch.origin,
                    "position": pos,
                    "raw": orjson.dumps(rec).decode(),
                    "reason": f"a JSON {type(rec).__name__}, not an object",
                }
            )
    if not good:
        return pl.DataFrame({POSITION_COLUMN: []}, schema={POSITION_COLUMN: pl.Int64})
    try:
        frame = pl.DataFrame(good, infer_schema_length=None)
    except (pl.exceptions.PolarsError, TypeError, ValueError):  # mixed shapes: every value as text
        keys = list(dict.fromkeys(k for rec in good for k in rec))
        frame = pl.DataFrame(
            {k: [_as_text(rec.get(k)) for rec in good] for k in keys}, schema=dict.fromkeys(keys, pl.String)
        )
    return frame.with_columns(pl.Series(POSITION_COLUMN, positions, dtype=pl.Int64))


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _json_frame(
    path: Path, gz: bool, spec: FileSource, batch: Batch, content: bytes | None = None
) -> pl.DataFrame:
    with _open(path, gz, content) as f:
        data = f.read()
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON ({exc})", hint="fix or re-export the file; nothing of it was loaded"
        ) from None
    records_path = spec.json_options.records
    if records_path:
        for part in records_path.split("."):
            if not isinstance(doc, dict) or part not in doc:
                raise DataError(
                    f"no records at json.records {records_path!r} (stopped at {part!r})",
                    hint="set json.records to the dotted path of the list of records",
                )
            doc = doc[part]
    if isinstance(doc, dict):
        raise DataError(
            "the document is a JSON object, not a list of records",
            hint="set json.records to the dotted path of the list inside it",
        )
    if not isinstance(doc, list):
        raise DataError(f"the document is a JSON {type(doc).__name__}, not a list of records")
    return _records_frame(doc, 1, None, batch)


def _json_chunks(
    path: Path, gz: bool, spec: FileSource, batch: Batch, content: bytes | None = None
) -> Iterator[pl.DataFrame]:
    """A JSON document's records: read whole when the file is small (``content``, parsed by orjson),
    else streamed by ijson ``chunk_rows`` records at a time, so memory holds one chunk, not the file."""
    if content is not None:
        yield _json_frame(path, gz, spec, batch, content)
        return
    import ijson

    where = spec.json_options.records
    prefix = f"{where}.item" if where else "item"
    try:
        # ijson's path for the items of a list is also that of a key named "item": make sure a list
        # is what is there before taking anything from it
        if not _json_has_list(path, gz, where or ""):
            raise DataError(
                f"no list of records at {'json.records ' + repr(where) if where else 'the top level'}",
                hint="set json.records to the dotted path of the list of records",
            )
        position, chunk = 1, []
        for record in _json_records(path, gz, prefix):
            chunk.append(record)
            if len(chunk) >= spec.chunk_rows:
                yield _records_frame(chunk, position, None, batch)
                position, chunk = position + len(chunk), []
        if chunk or position == 1:
            yield _records_frame(chunk, position, None, batch)
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        raise DataError(
            f"not valid JSON ({_short(exc)})", hint="fix or re-export the file; nothing of it was loaded"
        ) from None


def _json_records(path: Path, gz: bool, prefix: str) -> Iterator[Any]:
    """The records at ``prefix``, in order, by ijson's C parser; it refuses integers past 64 bits,
    which JSON allows, so from the record where it stopped on one its pure-Python parser goes on,
    with such integers as floats, as orjson reads them when a document is read whole."""
    import ijson

    done = 0
    try:
        with _open(path, gz) as stream:
            for record in ijson.items(stream, prefix, use_float=True):
                yield record
                done += 1
        return
    except ijson.JSONError as exc:
        if "integer overflow" not in str(exc):
            raise
    with _open(path, gz) as stream:
        for i, record in enumerate(ijson.get_backend("python").items(stream, prefix, use_float=True)):
            if i >= done:
                yield _wide_ints_as_floats(record)


def _wide_ints_as_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _wide_ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    return value


def _json_has_list(path: Path, gz: bool, prefix: str) -> bool:
    """Whether the document holds a list at ``prefix`` (ijson's dotted path; '' for the top)."""
    import ijson

    with _open(path, gz) as stream:
        return any(p == prefix and event == "start_array" for p, event, _ in ijson.parse(stream))


def _jsonl_chunks(
    path: Path,
    gz: bool,
    spec: FileSource,
    batch: Batch,
    content: bytes | None = None,
    offset: int = 0,
    first_line: int = 1,
) -> Iterator[pl.DataFrame]:
    stream = _open(path, gz, content)
    try:
        if offset:
            stream.seek(offset)
        line_no = first_line
        pending = b""
        block_bytes = int(min(max(spec.chunk_rows * 200, 1 << 16), 1 << 28))
        while True:
            data = stream.read(block_bytes)
            eof = not data
            buffer = pending + data
            if not eof:
                cut = buffer.rfind(b"\n")
                if cut < 0:
                    pending = buffer
                    continue
                block, pending = buffer[: cut + 1], buffer[cut + 1 :]
            else:
                block, pending = buffer, b""
            if block:
                frame = _jsonl_block(block, line_no, batch)
                line_no += block.count(b"\n")
                if frame.height:
                    yield frame
            if eof:
                break
    finally:
        stream.close()


def _jsonl_block(block: bytes, first_line: int, batch: Batch) -> pl.DataFrame:
    lines = block.split(b"\n")
    filled = [i for i, line in enumerate(lines) if line.strip()]
    try:  # fast path: polars parses the block when every line is a JSON object
        frame = pl.read_ndjson(io.BytesIO(block), infer_schema_length=None)
        if frame.height == len(filled):
            where = pl.Series(POSITION_COLUMN, [first_line + i for i in filled], dtype=pl.Int64)
            return frame.with_columns(where)
    except (pl.exceptions.PolarsError, ValueError, TypeError):
        pass
    records: list[Any] = []
    positions: list[int] = []
    for i in filled:
        line = lines[i]
        try:
            records.append(orjson.loads(line))
            positions.append(first_line + i)
        except orjson.JSONDecodeError as exc:
            batch.failures.append(
                {
                    "origin": batch.origin,
                    "position": first_line + i,
                    "raw": line.decode("utf-8", errors="backslashreplace")[:10_000],
                    "reason": f"not valid JSON ({exc})",
                }
            )
    return _records_frame(records, first_line, positions, batch)


def _parquet_chunks(path: Path, spec: FileSource) -> Iterator[pl.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"not a Parquet file ({_short(exc)})") from None
    offset = 1
    for record_batch in parquet.iter_batches(batch_size=spec.chunk_rows):
        frame = pl.from_arrow(record_batch)
        assert isinstance(frame, pl.DataFrame)
        n = frame.height
        yield frame.with_columns(pl.Series(POSITION_COLUMN, np.arange(offset, offset + n, dtype=np.int64)))
        offset += n
    parquet.close()
