"""What every route of the serving app shares, in one small object (``Serving``): the model host,
the metrics, the prediction-log writer, the canary router, the admin token, the recommender's live
state and the promotion gates; and the one code path every tabular prediction takes.

``Serving.predict`` is that path, for plain, batch, Open Inference Protocol v2 and SageMaker
``/invocations`` requests alike: the records are checked against the served signature, the canary
router picks who answers (champion, or the ``challenger`` for the canary share; a shadow scores in
the background), and the prediction log row records the version that answered and the route.
A request that names a version (``/v2/models/{name}/versions/{v}/infer``) is answered by exactly
that version, loaded on first use, and is not routed.
"""

from __future__ import annotations

import hmac
import threading
import time
import uuid
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
from .errors import Forbidden, RequestInvalid, Unauthorized
from .host import FAST_PATH_MAX_ROWS, ModelHost, Served, TabularAnswer
from .metrics import ServeMetrics
from .schema import loads
from .writer import BatchWriter

__all__ = ["FEEDBACK_SCHEMA", "PREDICTIONS_SCHEMA", "Predicted", "Serving"]

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
    gates: Mapping[str, PromoteRule] | None = None
    _pinned: OrderedDict[tuple[str, int], Served] = field(default_factory=OrderedDict)
    _pinning: threading.Lock = field(default_factory=threading.Lock)

    # -- request helpers --------------------------------------------------------------------------
    async def read_json(self, request: Request) -> Any:
        body = await request.body()
        if not body:
            raise RequestInvalid([{"loc": ["body"], "msg": "a JSON body is required", "type": "missing"}])
        # strict JSON, else Python's reading of NaN/Infinity/1e400 so the schema names the field
        return loads(body)

    def admin(self, request: Request) -> str:
        """The actor of an admin request with a valid bearer token (401/403 otherwise)."""
        spec = self.spec
        if not self.token:
            raise Forbidden(
                "admin routes are disabled: no admin token is configured",
                hint=f"set {spec.admin_token_env} (or serving.admin_token) and restart",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if (
            scheme.lower() != "bearer"
            or not given
            or not hmac.compare_digest(given.strip().encode(), self.token.encode())
        ):
            raise Unauthorized(
                # not "Authorization: ..." literally: error lines mask what follows such a key
                "admin routes need the header 'Authorization' set to 'Bearer <token>'",
                hint=f"send the token from {spec.admin_token_env}",
            )
        return request.headers.get("x-actor") or "serve-admin"

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
        elif not version.isdigit():
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
        records = served.schema.check(raw, where=where)
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
                key = self.router.key(request.headers, raw)
                served, answer = await self.router.predict(served, records, key, batch=batch)
        except Exception as exc:
            # the model itself failed (the request was valid): logged against the version that
            # answers, so the monitor sees a champion's error rate as it sees a canary's
            self.log_failure(served, f"{route}_error", records, exc, time.perf_counter() - started)
            raise
        request.scope["headrace.version"] = served.version_label
        ids = [uuid.uuid4().hex for _ in records]
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
                    "id": uuid.uuid4().hex,
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
