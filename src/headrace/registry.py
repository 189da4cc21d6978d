"""The model registry: versions with lineage, aliases, a promotion gate and a ledger of every change.

A version is one row of ``model_versions`` plus its artifact, stored content-addressed (the sha256
is recorded and checked on every load). Aliases (``champion``, ``challenger``, any name) point at
versions. Every change (register, alias set or removed, promote, rollback, retire) is appended to
``ledger`` with its reason and actor, so the ledger answers "which version was champion at time T"
(what MLflow's users miss, mlflow#2169) and ``rollback`` knows the previous champion.

The registry knows nothing about how a model is trained: it takes artifact bytes and the name of a
flavor (``headrace.flavors``) that turns them back into a model.
"""

from __future__ import annotations

import builtins
import getpass
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .artifacts import ArtifactStore
from .config.models import PromoteRule
from .errors import ArtifactError, GateRefused, NotFound, RegistryError, UsageError
from .flavors import load_flavor
from .metadata import SCHEMA, Metadata, utcnow

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "LOWER_IS_BETTER",
    "GateDecision",
    "LedgerEntry",
    "ModelVersion",
    "Registry",
    "greater_is_better",
    "split_ref",
]

log = logging.getLogger("headrace.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
LATEST = "latest"

# Metrics where a smaller value is the better model; every other metric is "higher is better".
LOWER_IS_BETTER = frozenset(
    {"rmse", "mse", "mae", "mape", "log_loss", "brier", "error_rate", "latency_ms", "loss"}
)

_versions = SCHEMA.tables["model_versions"]
_aliases = SCHEMA.tables["aliases"]
_ledger = SCHEMA.tables["ledger"]


def greater_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def split_ref(text: str) -> tuple[str, str | int | None]:
    """``"churn@3"`` -> ``("churn", 3)``; ``"churn@champion"`` -> ``("churn", "champion")``;
    no ``@``: ``("churn", None)``."""
    name, sep, ref = text.partition("@")
    if not name:
        raise UsageError(f"{text!r} does not name a model", hint="write MODEL or MODEL@VERSION")
    if not sep:
        return name, None
    if not ref:
        raise UsageError(f"{text!r} has an empty version after '@'", hint="write MODEL@3 or MODEL@champion")
    return name, int(ref) if ref.isdigit() else ref


def _aware(ts: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; everything headrace writes is UTC."""
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model, with its lineage."""

    name: str
    version: int
    task: str
    created_at: datetime
    status: str  # registered | retired
    artifact_sha256: str | None
    flavor: str | None
    dataset: str | None
    data_version: int | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    signature: dict[str, Any] | None
    threshold: float | None
    code_version: str | None
    packages: dict[str, str]
    run_id: int | None
    details: dict[str, Any]
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["created_at"] = self.created_at.isoformat()
        doc["aliases"] = list(self.aliases)
        return doc


@dataclass(frozen=True)
class LedgerEntry:
    ts: datetime
    model: str
    action: str
    version: int | None
    alias: str | None
    previous_version: int | None
    reason: str | None
    actor: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ts"] = self.ts.isoformat()
        return doc


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate may replace the champion, and why (each reason one short sentence)."""

    passed: bool
    metric: str | None
    candidate: float | None
    champion: float | None
    champion_version: int | None
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_actor() -> str:
    actor = os.environ.get("HEADRACE_ACTOR")
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:  # no user name in a bare container
        return "unknown"


class Registry:
    """Model versions, aliases and the ledger in the metadata database; artifacts in the artifact store."""

    def __init__(
        self, meta: Metadata, artifacts: ArtifactStore, *, actor: str | None = None, mirror: Any = None
    ) -> None:
        self.meta = meta
        self.artifacts = artifacts
        self.actor = actor or _default_actor()
        # told of each committed change (headrace.bridges.mlflow_bridge.MlflowMirror); by default the
        # mirror the workspace attached to its metadata handle, if its project has one
        self.mirror = mirror if mirror is not None else getattr(meta, "registry_mirror", None)

    # -- writing ------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        task: str,
        flavor: str,
        artifact: bytes,
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        data_version: int | None = None,
        signature: Mapping[str, Any] | None = None,
        threshold: float | None = None,
        details: Mapping[str, Any] | None = None,
        code_version: str | None = None,
        packages: Mapping[str, str] | None = None,
        run_id: int | None = None,
        artifact_format: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Store the artifact and record a new version (numbered one past the highest so far)."""
        if not name:
            raise UsageError("a model version needs a name", hint="pass the model's name")
        sha = self.artifacts.put_bytes(artifact)
        record_details = {**dict(details or {}), "flavor": flavor, "artifact_bytes": len(artifact)}
        for attempt in range(5):
            try:
                with self.meta.begin() as conn:
                    latest = conn.execute(
                        select(func.max(_versions.c.version)).where(_versions.c.model == name)
                    ).scalar()
                    version = int(latest or 0) + 1
                    now = utcnow()
                    conn.execute(
                        _versions.insert().values(
                            model=name,
                            version=version,
                            task=task,
                            created_at=now,
                            status="registered",
                            artifact_sha256=sha,
                            artifact_format=artifact_format or flavor,
                            dataset=dataset,
                            data_version=data_version,
                            metrics=_plain(metrics or {}),
                            params=_plain(params or {}),
                            signature=_plain(signature) if signature is not None else None,
                            threshold=None if threshold is None else float(threshold),
                            code_version=code_version,
                            packages=dict(packages or {}),
                            run_id=run_id,
                            details=_plain(record_details),
                        )
                    )
                    self._append(
                        conn,
                        name,
                        "register",
                        version=version,
                        reason=reason or "registered",
                        actor=actor,
                        details={"artifact_sha256": sha, "dataset": dataset, "data_version": data_version},
                        ts=now,
                    )
                break
            except IntegrityError:  # another writer took the same number: take the next one
                if attempt == 4:
                    raise
        log.info("registered %s@%s (artifact %s)", name, version, sha[:12])
        self._mirrored(name, "register", version)
        return self.get(name, version)

    def set_alias(
        self, name: str, alias: str, version: int, *, reason: str = "", actor: str | None = None
    ) -> ModelVersion:
        """Point ``alias`` at ``version`` (a registered, not retired, version)."""
        target = self.get(name, version)
        if target.status == "retired":
            raise RegistryError(
                f"{target.ref} is retired and cannot take the alias {alias!r}",
                hint="register or choose a version that is not retired",
            )
        with self.meta.begin() as conn:
            previous = self._alias_version(conn, name, alias)
            if previous == version:
                return target
            self._move_alias(
                conn, name, alias, version, "set_alias", previous=previous, reason=reason or f"{alias} set",
                actor=actor,
            )  # fmt: skip
        self._mirrored(name, "set_alias", version)
        return self.get(name, version)

    def remove_alias(self, name: str, alias: str, *, reason: str = "", actor: str | None = None) -> None:
        with self.meta.begin() as conn:
            previous = self._alias_version(conn, name, alias)
            if previous is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}", hint=self._aliases_hint(conn, name))
            self._drop_alias(conn, name, alias, previous, reason=reason or f"{alias} removed", actor=actor)
        self._mirrored(name, "remove_alias", previous)

    def check_gate(self, name: str, version: int, gate: PromoteRule | None) -> GateDecision:
        """Judge ``version`` against the gate: a floor (or ceiling) on the metric, and a minimum gain
        over the champion measured on the same data (same dataset and data version)."""
        candidate = self.get(name, version)
        champion = self._get_or_none(name, CHAMPION)
        if gate is None or gate.metric is None:
            return GateDecision(True, None, None, None, champion.version if champion else None, [])
        metric = gate.metric
        value = _metric(candidate.metrics, metric)
        reasons: list[str] = []
        if value is None:
            known = ", ".join(candidate.metrics)
            reasons.append(f"{candidate.ref} has no {metric!r} metric (it has {known})")
            return GateDecision(False, metric, None, None, champion.version if champion else None, reasons)
        higher = greater_is_better(metric)
        if gate.at_least is not None and value < gate.at_least:
            reasons.append(f"{metric} {value:.4g} is below the floor {gate.at_least:.4g}")
        if gate.at_most is not None and value > gate.at_most:
            reasons.append(f"{metric} {value:.4g} is above the ceiling {gate.at_most:.4g}")
        champion_value: float | None = None
        if champion is not None and champion.version != candidate.version:
            champion_value = _champion_on_same_data(candidate, champion, metric)
            if champion_value is None:
                reasons.append(
                    f"champion {champion.ref} was scored on {champion.dataset}@{champion.data_version}, "
                    f"the candidate on {candidate.dataset}@{candidate.data_version}, and the candidate "
                    "carries no score of the champion on its data; retrain with 'headrace train', "
                    "which re-scores the champion on the same folds"
                )
            else:
                gain = value - champion_value if higher else champion_value - value
                if gain < gate.beat_champion_by:
                    reasons.append(
                        f"{metric} {value:.4g} does not beat champion {champion.ref} ({champion_value:.4g}) "
                        f"by {gate.beat_champion_by:.4g} on the same data (gain {gain:.4g})"
                    )
        return GateDecision(
            not reasons, metric, value, champion_value, champion.version if champion else None, reasons
        )

    def promote(
        self,
        name: str,
        version: int,
        *,
        reason: str,
        gate: PromoteRule | None = None,
        alias: str = CHAMPION,
        actor: str | None = None,
        forced: bool = False,
    ) -> ModelVersion:
        """Make ``version`` the champion (or another alias); with a gate, refuse a worse model.

        ``forced``: promote even when the gate refuses; the gate is still judged and the ledger
        entry says so (``details.forced``, the reason starts with "forced")."""
        target = self.get(name, version)
        if target.status == "retired":
            raise RegistryError(f"{target.ref} is retired", hint="promote a version that is not retired")
        self.verify(target)  # a corrupt or missing artifact is never promoted (serving could not load it)
        decision = self.check_gate(name, version, gate) if alias == CHAMPION else None
        if forced:
            if decision is not None and not decision.passed:
                reason = f"forced past the gate ({'; '.join(decision.reasons)}): {reason}"
            else:
                reason = f"forced: {reason}"
        if decision is not None and not decision.passed and not forced:
            with self.meta.begin() as conn:
                self._append(
                    conn,
                    name,
                    "promote_refused",
                    version=version,
                    alias=alias,
                    previous_version=decision.champion_version,
                    reason=reason,
                    actor=actor,
                    details={"gate": decision.to_dict()},
                )
            raise GateRefused(
                f"{target.ref} was not promoted: {'; '.join(decision.reasons)}",
                hint="improve the model, or change promote_if in headrace.yaml",
            )
        with self.meta.begin() as conn:
            previous = self._alias_version(conn, name, alias)
            if previous == version:
                return target
            gate_details: dict[str, Any] = {"gate": decision.to_dict()} if decision is not None else {}
            if forced:
                gate_details["forced"] = True
            self._move_alias(
                conn, name, alias, version, "promote", previous=previous, reason=reason, actor=actor,
                details=gate_details,
            )  # fmt: skip
            if alias == CHAMPION and self._alias_version(conn, name, CHALLENGER) == version:
                self._drop_alias(
                    conn, name, CHALLENGER, version, reason=f"v{version} became champion", actor=actor
                )
        log.info("promoted %s@%s to %s (was %s): %s", name, version, alias, previous, reason)
        self._mirrored(name, "promote", version)
        return self.get(name, version)

    def rollback(self, name: str, *, reason: str, actor: str | None = None) -> ModelVersion:
        """Make the previous champion the champion again (skipping versions retired since)."""
        with self.meta.begin() as conn:
            current = self._alias_version(conn, name, CHAMPION)
            if current is None:
                raise RegistryError(f"model {name!r} has no champion to roll back from", hint="promote one")
            stack = self._champion_stack(conn, name)
            retired = set(
                conn.execute(
                    select(_versions.c.version).where(
                        and_(_versions.c.model == name, _versions.c.status == "retired")
                    )
                ).scalars()
            )
            while stack and stack[-1] == current:
                stack.pop()
            candidates = [v for v in stack if v not in retired and v != current]
            if not candidates:
                raise RegistryError(
                    f"model {name!r} has no previous champion to roll back to (champion is v{current})",
                    hint="promote another version instead",
                )
            target = candidates[-1]
            self._move_alias(
                conn, name, CHAMPION, target, "rollback", previous=current, reason=reason, actor=actor
            )
        log.warning("rolled %s back from v%s to v%s: %s", name, current, target, reason)
        self._mirrored(name, "rollback", target)
        return self.get(name, target)

    def retire(self, name: str, version: int, *, reason: str, actor: str | None = None) -> ModelVersion:
        """Retire a version: its artifact is removed (unless another live version shares it), its
        row and ledger entries stay."""
        target = self.get(name, version)
        if target.status == "retired":
            return target
        with self.meta.begin() as conn:
            if self._alias_version(conn, name, CHAMPION) == version:
                raise RegistryError(
                    f"{target.ref} is the champion and cannot be retired",
                    hint=f"promote another version or run 'headrace models rollback {name}' first",
                )
            for alias in self._aliases_of(conn, name, version):
                where = and_(_aliases.c.model == name, _aliases.c.alias == alias)
                conn.execute(delete(_aliases).where(where))
                self._append(
                    conn,
                    name,
                    "remove_alias",
                    alias=alias,
                    previous_version=version,
                    reason=f"v{version} retired",
                    actor=actor,
                )
            conn.execute(
                update(_versions)
                .where(and_(_versions.c.model == name, _versions.c.version == version))
                .values(status="retired")
            )
            shared = 0
            if target.artifact_sha256:
                shared = int(
                    conn.execute(
                        select(func.count())
                        .select_from(_versions)
                        .where(
                            and_(
                                _versions.c.artifact_sha256 == target.artifact_sha256,
                                _versions.c.status != "retired",
                            )
                        )
                    ).scalar()
                    or 0
                )
            removed = bool(target.artifact_sha256) and shared == 0
            self._append(
                conn,
                name,
                "retire",
                version=version,
                reason=reason,
                actor=actor,
                details={"artifact_removed": removed, "artifact_sha256": target.artifact_sha256},
            )
        if removed and target.artifact_sha256:
            self.artifacts.remove(target.artifact_sha256)
        self._mirrored(name, "retire", version)
        return self.get(name, version)

    # -- reading ------------------------------------------------------------------------------
    def verify(self, mv: ModelVersion) -> None:
        """The version's artifact is there and hashes to its recorded sha256; ArtifactError (naming
        the file) otherwise. Retired versions have no artifact to check."""
        if mv.status == "retired" or not mv.artifact_sha256:
            return
        try:
            self.artifacts.get_bytes(mv.artifact_sha256)
        except ArtifactError as exc:
            where = self.artifacts.path(mv.artifact_sha256)
            raise ArtifactError(f"{mv.ref}: {exc.message} ({where})", hint=exc.hint) from None

    def note(
        self,
        name: str,
        action: str,
        *,
        version: int | None = None,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """A ledger entry for something done with a model that moves no alias (a batch scoring run)."""
        with self.meta.begin() as conn:
            self._append(conn, name, action, version=version, reason=reason, details=details)

    def get(self, name: str, ref: int | str | None = LATEST) -> ModelVersion:
        """A version by number, alias (``champion``, ``challenger``, ...) or ``latest``."""
        with self.meta.begin() as conn:
            version = self._resolve(conn, name, ref)
            row = (
                conn.execute(
                    select(_versions).where(and_(_versions.c.model == name, _versions.c.version == version))
                )
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(
                    f"model {name!r} has no version {version}",
                    hint=f"see 'headrace models list {name}'",
                )
            aliases = self._aliases_of(conn, name, version)
        return _version(row, aliases)

    def load(self, name: str, ref: int | str | None = CHAMPION) -> tuple[ModelVersion, Any]:
        """The version and its model object; the artifact's sha256 is checked (ArtifactError if not)."""
        mv = self.get(name, ref)
        if mv.status == "retired":
            raise RegistryError(f"{mv.ref} is retired; its artifact was removed", hint="load another version")
        if not mv.artifact_sha256 or not mv.flavor:
            raise RegistryError(f"{mv.ref} has no artifact", hint="register it again with its artifact")
        data = self.artifacts.get_bytes(mv.artifact_sha256)
        return mv, load_flavor(mv.flavor, data)

    def list(self, name: str | None = None, *, include_retired: bool = True) -> builtins.list[ModelVersion]:
        """Every version (of one model, or of all), oldest first."""
        query = select(_versions).order_by(_versions.c.model, _versions.c.version)
        if name is not None:
            query = query.where(_versions.c.model == name)
        if not include_retired:
            query = query.where(_versions.c.status != "retired")
        with self.meta.begin() as conn:
            rows = conn.execute(query).mappings().all()
            alias_rows = conn.execute(select(_aliases)).mappings().all()
        by_version: dict[tuple[str, int], builtins.list[str]] = {}
        for a in alias_rows:
            by_version.setdefault((a["model"], a["version"]), []).append(a["alias"])
        return [_version(r, sorted(by_version.get((r["model"], r["version"]), []))) for r in rows]

    def models(self) -> builtins.list[str]:
        with self.meta.begin() as conn:
            return sorted(conn.execute(select(_versions.c.model).distinct()).scalars())

    def aliases(self, name: str) -> dict[str, int]:
        with self.meta.begin() as conn:
            rows = conn.execute(select(_aliases).where(_aliases.c.model == name)).mappings().all()
        return {r["alias"]: r["version"] for r in rows}

    def history(self, name: str | None = None) -> builtins.list[LedgerEntry]:
        """The ledger (of one model, or of all), oldest first."""
        query = select(_ledger).order_by(_ledger.c.id)
        if name is not None:
            query = query.where(_ledger.c.model == name)
        with self.meta.begin() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            LedgerEntry(
                ts=_aware(r["ts"]) or utcnow(),
                model=r["model"],
                action=r["action"],
                version=r["version"],
                alias=r["alias"],
                previous_version=r["previous_version"],
                reason=r["reason"],
                actor=r["actor"],
                details=dict(r["details"] or {}),
            )
            for r in rows
        ]

    def champion_at(self, name: str, ts: datetime) -> int | None:
        """The version that was champion at ``ts`` (None if there was none), from the ledger."""
        return self.alias_at(name, CHAMPION, ts)

    def alias_at(self, name: str, alias: str, ts: datetime) -> int | None:
        when = _aware(ts)
        assert when is not None
        current: int | None = None
        for entry in self.history(name):
            if entry.ts > when:
                break
            if entry.alias != alias:
                continue
            if entry.action in ("promote", "set_alias", "rollback"):
                current = entry.version
            elif entry.action == "remove_alias":
                current = None
        return current

    # -- internals ----------------------------------------------------------------------------
    def _mirrored(self, name: str, action: str, version: int | None) -> None:
        """Tell the mirror (if any) of a committed change; it logs its own failures, and nothing it
        raises may undo or fail the change."""
        if self.mirror is None:
            return
        try:
            self.mirror.changed(self, name, action, version)
        except Exception as exc:
            log.warning("registry mirror failed after %s %s: %s", action, name, exc)

    def _get_or_none(self, name: str, ref: int | str) -> ModelVersion | None:
        try:
            return self.get(name, ref)
        except NotFound:
            return None

    def _resolve(self, conn: Connection, name: str, ref: int | str | None) -> int:
        if ref is None:
            ref = LATEST
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        if isinstance(ref, int):
            return ref
        if ref == LATEST:
            latest = conn.execute(
                select(func.max(_versions.c.version)).where(
                    and_(_versions.c.model == name, _versions.c.status != "retired")
                )
            ).scalar()
            if latest is None:
                raise NotFound(
                    f"model {name!r} has no registered version",
                    hint=f"run 'headrace train {name}' first",
                )
            return int(latest)
        version = self._alias_version(conn, name, ref)
        if version is None:
            raise NotFound(f"model {name!r} has no alias {ref!r}", hint=self._aliases_hint(conn, name))
        return version

    def _aliases_hint(self, conn: Connection, name: str) -> str:
        rows = conn.execute(select(_aliases.c.alias).where(_aliases.c.model == name)).scalars().all()
        known = ", ".join(sorted(rows)) or "none"
        return f"its aliases: {known}; promote a version with 'headrace models promote {name} VERSION'"

    @staticmethod
    def _alias_version(conn: Connection, name: str, alias: str) -> int | None:
        value = conn.execute(
            select(_aliases.c.version).where(and_(_aliases.c.model == name, _aliases.c.alias == alias))
        ).scalar()
        return None if value is None else int(value)

    @staticmethod
    def _aliases_of(conn: Connection, name: str, version: int) -> builtins.list[str]:
        rows = conn.execute(
            select(_aliases.c.alias).where(and_(_aliases.c.model == name, _aliases.c.version == version))
        ).scalars()
        return sorted(rows)

    @staticmethod
    def _put_alias(conn: Connection, name: str, alias: str, version: int) -> None:
        where = and_(_aliases.c.model == name, _aliases.c.alias == alias)
        if conn.execute(select(_aliases.c.version).where(where)).first() is None:
            row = {"model": name, "alias": alias, "version": version, "updated_at": utcnow()}
            conn.execute(_aliases.insert().values(**row))
        else:
            conn.execute(update(_aliases).where(where).values(version=version, updated_at=utcnow()))

    def _move_alias(
        self,
        conn: Connection,
        name: str,
        alias: str,
        version: int,
        action: str,
        *,
        previous: int | None,
        reason: str,
        actor: str | None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Point ``alias`` at ``version`` and record why in the ledger, in the caller's transaction."""
        self._put_alias(conn, name, alias, version)
        self._append(
            conn, name, action, version=version, alias=alias, previous_version=previous, reason=reason,
            actor=actor, details=details,
        )  # fmt: skip

    def _drop_alias(
        self, conn: Connection, name: str, alias: str, previous: int, *, reason: str, actor: str | None
    ) -> None:
        """Remove ``alias`` (it pointed at ``previous``) and record why in the ledger."""
        conn.execute(delete(_aliases).where(and_(_aliases.c.model == name, _aliases.c.alias == alias)))
        self._append(
            conn, name, "remove_alias", alias=alias, previous_version=previous, reason=reason, actor=actor
        )

    @staticmethod
    def _champion_stack(conn: Connection, name: str) -> builtins.list[int]:
        """Replay the champion's ledger: a promotion pushes, a rollback pops back to its target."""
        rows = (
            conn.execute(
                select(_ledger.c.action, _ledger.c.version)
                .where(and_(_ledger.c.model == name, _ledger.c.alias == CHAMPION))
                .order_by(_ledger.c.id)
            )
            .mappings()
            .all()
        )
        stack: builtins.list[int] = []
        for r in rows:
            if r["action"] in ("promote", "set_alias"):
                if not stack or stack[-1] != r["version"]:
                    stack.append(r["version"])
            elif r["action"] == "rollback":
                while stack and stack[-1] != r["version"]:
                    stack.pop()
                if not stack:
                    stack.append(r["version"])
            elif r["action"] == "remove_alias":
                stack.clear()
        return stack

    def _append(
        self,
        conn: Connection,
        name: str,
        action: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        previous_version: int | None = None,
        reason: str | None = None,
        actor: str | None = None,
        details: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> None:
        conn.execute(
            _ledger.insert().values(
                ts=ts or utcnow(),
                model=name,
                action=action,
                version=version,
                alias=alias,
                previous_version=previous_version,
                reason=reason,
                actor=actor or self.actor,
                details=_plain(details or {}),
            )
        )


def _metric(metrics: Mapping[str, Any], metric: str) -> float | None:
    value = metrics.get(metric)
    if isinstance(value, Mapping):  # {"mean": ..., "std": ...}
        value = value.get("mean")
    return float(value) if isinstance(value, int | float) else None


def _champion_on_same_data(candidate: ModelVersion, champion: ModelVersion, metric: str) -> float | None:
    """The champion's score on the candidate's data: its own record when the data is the same, else
    the re-score the candidate's training recorded (``details['champion_rescored']``)."""
    if candidate.dataset == champion.dataset and candidate.data_version == champion.data_version:
        return _metric(champion.metrics, metric)
    rescored = candidate.details.get("champion_rescored") or {}
    if rescored.get("version") == champion.version:
        return _metric(rescored.get("metrics") or {}, metric)
    return None


def _version(row: Any, aliases: Sequence[str]) -> ModelVersion:
    details = dict(row["details"] or {})
    return ModelVersion(
        name=row["model"],
        version=int(row["version"]),
        task=row["task"],
        created_at=_aware(row["created_at"]) or utcnow(),
        status=row["status"],
        artifact_sha256=row["artifact_sha256"],
        flavor=details.get("flavor") or row["artifact_format"],
        dataset=row["dataset"],
        data_version=row["data_version"],
        metrics=dict(row["metrics"] or {}),
        params=dict(row["params"] or {}),
        signature=row["signature"],
        threshold=row["threshold"],
        code_version=row["code_version"],
        packages=dict(row["packages"] or {}),
        run_id=row["run_id"],
        details=details,
        aliases=tuple(aliases),
    )


def _plain(value: Any) -> Any:
    """JSON-safe copies of numpy scalars and arrays (the metrics of sklearn are numpy floats)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value
