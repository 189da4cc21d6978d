"""What every route of the serving app shares, in one small object (``Serving``): the model host,
the metrics, the prediction-log writer, the canary router, the admin and write tokens, the
recommender's live state and the promotion gates; and the one code path every tabular prediction takes.

Reading a body is bounded (``serving.limits``): only JSON is read (415 otherwise); a body past
``offload_bytes`` is parsed in the worker thread pool; nesting depth and string length are read from
the bytes before parsing (422); the number of records right after, before anything looks at one
(413). Writes (feedback, interactions) need the write token; a request from a browser (it sends
``Origin``, ``Sec-Fetch-Site`` or cookies) to an admin or write route also needs the dashboard's
CSRF token, double-submitted: the ``headrace_csrf`` cookie the dashboard sets and the
``X-CSRF-Token`` header its script sends.

``Serving.predict`` is that path, for plain, batch, Open Inference Protocol v2 and SageMaker
``/invocations`` requests alike: the records are checked against the served signature, the canary
router picks who answers (champion, or the ``challenger`` for the canary share; a shadow scores in
the background), and the prediction log row records the version that answered and the route.
A request that names a version (``/v2/models/{name}/versions/{v}/infer``) is answered by exactly
that version, loaded on first use, and is not routed.
"""

from __future__ import annotations

import hmac
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..config.models import PromoteRule
from ..config.serving import ServingSpec
from ..errors import HeadraceError, NotFound, RegistryError, UsageError
from ..monitor.routing import CanaryRouter
from .errors import Forbidden, PayloadTooLarge, RequestInvalid, Unauthorized, UnsupportedMediaType
from .host import FAST_PATH_MAX_ROWS, ModelHost, Served, TabularAnswer
from .metrics import ServeMetrics
from .schema import parse
from .writer import BatchWriter

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "FEEDBACK_SCHEMA",
    "PREDICTIONS_SCHEMA",
    "Predicted",
    "Serving",
    "bearer_matches",
    "json_media",
    "new_id",
]

CSRF_COOKIE = "headrace_csrf"
CSRF_HEADER = "x-csrf-token"

PREDICTIONS_SCHEMA = {
    "id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "model": pl.String(),
    "version": pl.Int64(),
    "route": pl.String(),
    "inputs": pl.String(),
    "output": pl.String(),
    "score": pl.Float64(),
    "latency_ms": pl.Float64(),
}
FEEDBACK_SCHEMA = {
    "prediction_id": pl.String(),
    "model": pl.String(),
    "actual": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
}
_PINNED_KEPT = 4  # versions named by a request, kept loaded besides champion and challenger


@dataclass
class Predicted:
    """One answered request: who answered, the checked records, the answer and one id per record."""

    served: Served
    records: list[dict[str, Any]]
    answer: TabularAnswer
    ids: list[str]


@dataclass
class Serving:
    """The shared dependencies of the serving app's routers (built once by ``create_app``)."""

    registry: Any
    spec: ServingSpec
    host: ModelHost
    metrics: ServeMetrics
    router: CanaryRouter
    live: Any
    writer: BatchWriter | None = None
    token: str | None = None
    write_token: str | None = None
    gates: Mapping[str, PromoteRule] | None = None
    _pinned: OrderedDict[tuple[str, int], Served] = field(default_factory=OrderedDict)
    _pinning: threading.Lock = field(default_factory=threading.Lock)

    # -- request helpers --------------------------------------------------------------------------
    async def read_json(
        self, request: Request, *, count: tuple[str, int, str] | None = None, binary: tuple[str, ...] = ()
    ) -> Any:
        """The JSON body, bounded by ``serving.limits``: 415 unless it is JSON, parsed off the event
        loop when large; nesting depth and string length (422) checked before parsing; ``count`` =
        (key, most, hint): a list under ``key`` longer than ``most`` is a 413 before any of its items
        is looked at."""
        self.require_json(request, binary=binary)
        body = await request.body()
        if not body:
            raise RequestInvalid([{"loc": ["body"], "msg": "a JSON body is required", "type": "missing"}])
        if len(body) > self.spec.limits.offload_bytes:
            return await run_in_threadpool(self._parse, body, count)
        return self._parse(body, count)

    def _parse(self, body: bytes, count: tuple[str, int, str] | None) -> Any:
        limits = self.spec.limits
        # depth and string length from the bytes (vectorised), then strict JSON, else Python's
        # reading of NaN/Infinity/1e400 so the schema names the field; then the count, O(1)
        doc = parse(body, limits.max_depth, limits.max_string_length)
        if count is not None and isinstance(doc, dict):
            key, most, hint = count
            items = doc.get(key)
            if isinstance(items, list) and len(items) > most:
                raise PayloadTooLarge(
                    f"{len(items)} items under {key!r}; at most {most} per request", hint=hint
                )
        return doc

    async def require_body_type(self, request: Request, binary: tuple[str, ...] = ()) -> bytes:
        """The raw body of a route that reads JSON when there is a body (415 for any other type)."""
        self.require_json(request, binary=binary)
        body = await request.body()
        if body and not request.headers.get("content-type"):
            raise _unsupported(None, binary)
        return body

    def require_json(self, request: Request, *, binary: tuple[str, ...] = ()) -> None:
        """415 unless the body is JSON (or one of the route's documented ``binary`` types). A request
        without a content type passes here; one with a body is refused once the body is read."""
        given = request.headers.get("content-type")
        if given is None:
            if request.headers.get("content-length", "0") not in ("0", "") or request.headers.get(
                "transfer-encoding"
            ):
                raise _unsupported(None, binary)
            return
        media = given.split(";", 1)[0].strip().lower()
        if not json_media(media) and media not in binary:
            raise _unsupported(media, binary)

    def admin(self, request: Request) -> str:
        """The actor of an admin request with a valid bearer token (401/403 otherwise)."""
        spec = self.spec
        if not self.token:
            raise Forbidden(
                "admin routes are disabled: no admin token is configured",
                hint=f"set {spec.admin_token_env} (or serving.admin_token) and restart",
            )
        self.csrf(request)
        if not bearer_matches(request, self.token):
            raise Unauthorized(
                # not "Authorization: ..." literally: error lines mask what follows such a key
                "admin routes need the header 'Authorization' set to 'Bearer <token>'",
                hint=f"send the token from {spec.admin_token_env}",
            )
        return request.headers.get("x-actor") or "serve-admin"

    def authorize_write(self, request: Request) -> None:
        """A write (feedback, interactions) with a valid write token passes; 401/403 otherwise."""
        spec = self.spec
        if not self.write_token:
            raise Forbidden(
                "writes (feedback, interactions) are disabled: no write token is configured",
                hint=f"set {spec.write_token_env} (or serving.write_token) and restart",
            )
        self.csrf(request)
        if not bearer_matches(request, self.write_token):
            raise Unauthorized(
                "writes need the header 'Authorization' set to 'Bearer <write token>'",
                hint=f"send the token from {spec.write_token_env} (the admin token is not it)",
            )

    def csrf(self, request: Request) -> None:
        """A browser's request (``Origin``, ``Sec-Fetch-Site`` or cookies) must carry the dashboard's
        CSRF token in ``X-CSRF-Token``, equal to its ``headrace_csrf`` cookie (403 otherwise): a page
        on another site can make a browser post, but can neither read the cookie nor set the header."""
        headers = request.headers
        if "origin" not in headers and "sec-fetch-site" not in headers and "cookie" not in headers:
            return  # not a browser: curl, the CLI, the monitor, a bundle
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = headers.get(CSRF_HEADER, "")
        if not cookie or not given or not hmac.compare_digest(cookie.encode(), given.encode()):
            raise Forbidden(
                "a request from a browser needs the dashboard's CSRF token (header 'X-CSRF-Token')",
                hint="use the dashboard's buttons, or call the API from a script (no browser)",
            )

    # -- who answers -------------------------------------------------------------------------------
    def served(self, name: str, request: Request) -> Served:
        """The champion serving ``name`` (labelled on the request for the metrics)."""
        served = self.host.get(name)
        request.scope["headrace.model"] = name
        request.scope["headrace.version"] = served.version_label
        return served

    async def served_version(self, name: str, version: str, request: Request) -> Served:
        """Exactly version ``version`` of a served model: the champion or challenger when it is one
        of them, else loaded from the registry on first use (404 when it cannot be served)."""
        current = self.served(name, request)
        if version == current.version_label:
            return current
        challenger = self.router.challenger(name)
        if challenger is not None and challenger.version_label == version:
            found: Served = challenger
        elif not (version.isascii() and version.isdigit()):  # not "²", which isdigit() accepts
            raise NotFound(
                f"model {name!r} has no version {version!r}",
                hint=f"versions are numbers; serving v{current.version}",
            )
        else:
            found = await run_in_threadpool(self._pin, name, int(version))
        request.scope["headrace.version"] = found.version_label
        return found

    def _pin(self, name: str, version: int) -> Served:
        with self._pinning:  # one load at a time; a second request for it waits and reuses it
            key = (name, version)
            served = self._pinned.get(key)
            if served is None:
                try:
                    served = self.host.load(name, version)
                except (NotFound, RegistryError) as exc:
                    raise NotFound(
                        f"model {name!r} version {version} cannot be served: {exc.args[0]}",
                        hint=f"use /v2/models/{name} for the champion, or a registered version",
                    ) from None
                self._pinned[key] = served
                while len(self._pinned) > _PINNED_KEPT:
                    self._pinned.popitem(last=False)
            self._pinned.move_to_end(key)
            return served

    # -- the one prediction path -------------------------------------------------------------------
    async def predict(
        self,
        request: Request,
        served: Served,
        raw: Any,
        *,
        route: str,
        batch: bool = False,
        pinned: bool = False,
        where: tuple[Any, ...] = ("body", "records"),
    ) -> Predicted:
        """Check ``raw`` records against ``served``'s signature, let the canary router pick who
        answers (unless the request ``pinned`` a version), log and count the answer."""
        started = time.perf_counter()
        served = tabular(served)
        assert served.schema is not None
        schema, most = served.schema, self.spec.limits.max_errors
        if isinstance(raw, list) and len(raw) > FAST_PATH_MAX_ROWS:  # a batch: checked off the loop
            records = await run_in_threadpool(schema.check, raw, where, most)
        else:
            records = schema.check(raw, where=where, max_errors=most)
        try:
            if pinned:
                compiled = served.compiled
                inline = (
                    not batch
                    and compiled is not None
                    and len(records) <= FAST_PATH_MAX_ROWS
                    and all(compiled.accepts(r) for r in records)  # else the pipeline, off the loop
                )
                if inline:
                    answer = served.predict_records(records)
                else:
                    answer = await run_in_threadpool(served.predict_records, records, allow_fast=not batch)
            else:
                router = self.router
                key = router.key(request.headers, raw) if router.active else ""  # routed by it
                served, answer = await router.predict(served, records, key, batch=batch)
        except Exception as exc:
            # the model itself failed (the request was valid): logged against the version that
            # answers, so the monitor sees a champion's error rate as it sees a canary's
            self.log_failure(served, f"{route}_error", records, exc, time.perf_counter() - started)
            raise
        request.scope["headrace.version"] = served.version_label
        ids = [new_id() for _ in records]
        self.log_predictions(served, route, records, answer, ids, time.perf_counter() - started)
        self.count_predictions(served, answer)
        return Predicted(served, records, answer, ids)

    def log_predictions(
        self,
        served: Served,
        route: str,
        records: list[dict[str, Any]],
        answer: TabularAnswer,
        ids: list[str],
        seconds: float,
    ) -> None:
        if self.writer is None:
            return
        dataset = self.spec.prediction_log.dataset
        now = datetime.now(UTC)
        latency_ms = seconds * 1000.0
        probs = answer.probabilities
        scores = answer.scores
        for i, record in enumerate(records):
            output: dict[str, Any] = {"prediction": answer.predictions[i]}
            if probs is not None:
                output["probabilities"] = probs[i]
            self.writer.put(
                dataset,
                {
                    "id": ids[i],
                    "ts": now,
                    "model": served.name,
                    "version": served.version,
                    "route": route,
                    "inputs": orjson.dumps(record).decode(),
                    "output": orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                    "score": None if scores is None else float(scores[i]),
                    "latency_ms": latency_ms,
                },
            )

    def log_failure(
        self, served: Served, route: str, records: list[dict[str, Any]], exc: BaseException, seconds: float
    ) -> None:
        if self.writer is None:
            return
        now = datetime.now(UTC)
        output = orjson.dumps({"error": type(exc).__name__}).decode()
        for record in records:
            self.writer.put(
                self.spec.prediction_log.dataset,
                {
                    "id": new_id(),
                    "ts": now,
                    "model": served.name,
                    "version": served.version,
                    "route": route,
                    "inputs": orjson.dumps(record, default=str).decode(),
                    "output": output,
                    "score": None,
                    "latency_ms": seconds * 1000.0,
                },
            )

    def count_predictions(self, served: Served, answer: Any) -> None:
        metrics = self.metrics
        if served.task == "classification":
            for label in answer.predictions:
                metrics.child(metrics.predictions, served.name, served.version_label, str(label)).inc()
        else:
            metrics.child(metrics.predictions, served.name, served.version_label, "").inc(
                len(answer.predictions)
            )
        if answer.scores is not None:
            hist = metrics.child(metrics.scores, served.name, served.version_label)
            for s in answer.scores:
                hist.observe(s)
        for said in getattr(answer, "notes", None) or []:
            for note in said:
                kind = "imputed" if "missing" in note else "unseen_category"
                metrics.child(metrics.notes, served.name, served.version_label, kind).inc()


# Prediction ids: 128 bits from a generator seeded by the OS (again in a forked child). ``uuid4()``
# asks the kernel for every id: 5.6 us each, up to 9 % of a one-row prediction under load.
_IDS = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(32)))


def new_id() -> str:
    """A prediction id: 32 hex digits, as ``uuid4().hex`` reads; unique, not a secret (writing
    feedback for it takes the write token)."""
    return f"{_IDS.getrandbits(128):032x}"


def bearer_matches(request: Request, token: str) -> bool:
    """Whether the request's ``Authorization`` is ``Bearer <token>`` (a constant-time comparison)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return (
        scheme.lower() == "bearer"
        and bool(given)
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


def json_media(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _unsupported(media: str | None, binary: tuple[str, ...]) -> UnsupportedMediaType:
    accepted = ", ".join(("application/json", *binary))
    return UnsupportedMediaType(
        f"this route reads {accepted}; got {media or 'a body without a content type'}",
        hint="send the header 'Content-Type: application/json'",
    )


def tabular(served: Served) -> Served:
    """``served`` if it takes records (a tabular model with a signature), else a 400 saying what to use."""
    name = served.name
    if served.kind != "tabular":
        raise UsageError(
            f"model {name!r} is a {served.task} model",
            hint="image models take files or base64 images; recommenders answer /users/{id}/recommendations",
        )
    if served.schema is None:
        raise UsageError(f"model {name!r} has no input signature", hint="retrain it with 'headrace train'")
    return served


def answer_doc(served: Served, answer: TabularAnswer, ids: list[str]) -> dict[str, Any]:
    """The JSON answer of a prediction route."""
    doc: dict[str, Any] = {
        "model": served.name,
        "version": served.version,
        "ids": ids,
        "predictions": answer.predictions,
    }
    if answer.probabilities is not None:
        doc["probabilities"] = answer.probabilities
    if getattr(answer, "notes", None):
        doc["notes"] = answer.notes  # per record: what was imputed or ignored
    if served.task == "classification" and served.classes and len(served.classes) == 2:
        doc["scores"] = answer.scores
        doc["threshold"] = served.threshold
        doc["positive"] = served.classes[1]
    return doc


def unavailable(what: str) -> HeadraceError:
    from ..errors import ServiceUnavailable

    return ServiceUnavailable(f"{what} is not loaded yet", hint="check /health/ready")
