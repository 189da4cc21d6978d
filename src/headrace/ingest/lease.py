"""One writer per source: a lease row in the metadata database (table ``source_leases``).

A batch run takes the lease of its source before it reads anything and gives it back when it ends; a
second run of the same source (another terminal, another machine sharing the metadata database)
waits up to ``wait`` seconds, then is told plainly who holds it and since when. Two runs of
*different* sources of one dataset both go ahead: Delta's optimistic concurrency orders their commits.

The lease has an expiry that a thread of the holder pushes forward while it runs; a holder killed
outright stops renewing it, and the next run takes it over once it has expired, or at once when the
holder was a process of this host that is gone. Taking it is one INSERT (the source is the primary
key) or, over an expired or dead holder, one compare-and-set UPDATE, so two runs never both win, on
SQLite and PostgreSQL alike. Stream workers take no lease: several of them share a subscription.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import TracebackType

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import SourceBusy
from ..metadata import SCHEMA, Metadata, utcnow

__all__ = ["SourceLease", "process_alive"]

log = logging.getLogger("headrace.ingest.lease")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def process_alive(pid: int) -> bool:
    """Whether a process of this host with that id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SourceLease:
    """``with SourceLease(meta, "orders", wait=30):`` holds the source for the block."""

    def __init__(self, meta: Metadata, source: str, *, ttl: float = 60.0, wait: float = 0.0) -> None:
        self.meta = meta
        self.source = source
        self.ttl = ttl
        self.wait = wait
        self.host = socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- taking and giving back ---------------------------------------------------------------
    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        delay = 0.05
        while True:
            holder = self._try()
            if holder is not None and not holder[0]:
                holder = self._try()  # it was given back between our insert and our look
            if holder is None:
                self._renewer = threading.Thread(
                    target=self._renew, name=f"headrace-lease-{self.source}", daemon=True
                )
                self._renewer.start()
                return
            if time.monotonic() >= deadline:
                who, since = holder
                raise SourceBusy(
                    f"source {self.source!r} is busy: another run ({who}) has held it since "
                    f"{since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
                    hint="wait for that run to end, or pass --wait SECONDS to wait for it",
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        leases = SCHEMA.tables["source_leases"]
        with self.meta.begin() as conn:
            conn.execute(
                delete(leases).where((leases.c.source == self.source) & (leases.c.holder == self.holder))
            )

    def __enter__(self) -> SourceLease:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- inside -------------------------------------------------------------------------------
    def _try(self) -> tuple[str, datetime] | None:
        """None when the lease is now ours, else (holder, since)."""
        leases = SCHEMA.tables["source_leases"]
        now = utcnow()
        values = {"holder": self.holder, "acquired_at": now, "expires_at": now + timedelta(seconds=self.ttl)}
        try:
            with self.meta.begin() as conn:
                conn.execute(insert(leases).values(source=self.source, **values))
            return None
        except IntegrityError:
            pass
        with self.meta.begin() as conn:
            row = conn.execute(
                select(leases.c.holder, leases.c.acquired_at, leases.c.expires_at).where(
                    leases.c.source == self.source
                )
            ).first()
            if row is None:  # given back in between: the next try inserts
                return "", now
            holder, since, expires = row[0], _aware(row[1]), _aware(row[2])
            if expires > now and not self._dead(holder):
                return holder, since
            taken = conn.execute(
                update(leases)
                .where(
                    (leases.c.source == self.source)
                    & (leases.c.holder == holder)
                    & (leases.c.expires_at == row[2])
                )
                .values(**values)
            )
            if taken.rowcount == 1:
                log.warning("source %s: took over the lease of %s (expired or gone)", self.source, holder)
                return None
            return holder, since

    def _dead(self, holder: str) -> bool:
        """A holder of this host whose process is gone (killed outright)."""
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        return host == self.host and pid.isdigit() and not process_alive(int(pid))

    def _renew(self) -> None:
        leases = SCHEMA.tables["source_leases"]
        while not self._stop.wait(self.ttl / 3):
            try:
                with self.meta.begin() as conn:
                    done = conn.execute(
                        update(leases)
                        .where((leases.c.source == self.source) & (leases.c.holder == self.holder))
                        .values(expires_at=utcnow() + timedelta(seconds=self.ttl))
                    )
                if done.rowcount != 1:
                    self.lost = True
                    log.error("source %s: the lease was taken over by another run", self.source)
                    return
            except Exception as exc:  # the database is briefly unreachable: the next beat tries again
                log.warning("source %s: the lease could not be renewed (%s)", self.source, exc)

    def check(self) -> None:
        """Raise if the lease was lost (this run stalled past its expiry and another took over)."""
        if self.lost:
            raise SourceBusy(
                f"source {self.source!r}: another run took over the lease while this one stalled",
                hint="nothing more of this run is committed; run it again when the other has ended",
            )
