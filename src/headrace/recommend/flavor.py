"""The ``recommender`` model flavor: a fitted recommender with its catalogue and training histories.

``recommend(user_id, k, exclude, live=...)`` ranks the catalogue for a user from their training
history plus ``live`` (item -> weight interactions that arrived after training), never returning an
item the user has seen. A user with no usable history gets the popularity ranking. When the model
scores fewer than k items above zero (item-kNN with sparse neighbours), popular items fill the rest.
EASE's weights may cover only the items with enough support (``support``: their indices); the others
score 0 and can only come from the popular fill.

The artifact is an ``.npz`` (no pickle): arrays plus a JSON header with the ids and parameters, so
loading a registered recommender never executes code from the artifact.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import ArtifactError
from .interactions import Interactions
from .models import EASE, ItemKNN, Popularity

__all__ = ["RecommenderModel"]

_CACHE_USERS = 50_000  # users whose training-history scores are kept (n_items floats each)
_STORED_ABOVE = 16 * 2**20  # float arrays larger than this are stored, not deflated


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (what ``np.load`` reads) with each array deflated, except large float arrays
    (EASE's weights), which deflate by about a tenth at some 30 MB/s: stored as they are."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            large_float = array.dtype.kind == "f" and array.nbytes > _STORED_ABOVE
            info.compress_type = zipfile.ZIP_STORED if large_float else zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=array.nbytes > 2**30) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


class RecommenderModel:
    """What the registry stores for ``task: recommendation`` (flavor ``recommender``)."""

    flavor = "recommender"
    task = "recommendation"

    def __init__(
        self,
        *,
        kind: str,
        params: Mapping[str, Any],
        item_ids: list[Any],
        user_ids: list[str],
        history: sp.csr_matrix,
        popularity: np.ndarray,
        weights: np.ndarray | sp.csr_matrix | None,
        metrics: Mapping[str, Any] | None = None,
        support: np.ndarray | None = None,
    ) -> None:
        self.kind = kind
        self.params = dict(params)
        self.item_ids = list(item_ids)
        self.user_ids = list(user_ids)
        self.history = history.tocsr()
        self.popularity = np.asarray(popularity, dtype=np.float64)
        self.weights = weights
        self.metrics = dict(metrics or {})
        self.support = None if support is None else np.asarray(support, dtype=np.int64)
        self._position: np.ndarray | None = None  # item index -> row of the weights (-1: not covered)
        if self.support is not None:
            self._position = np.full(len(self.item_ids), -1, dtype=np.int64)
            self._position[self.support] = np.arange(len(self.support))
        self.item_index: dict[Any, int] = {item: i for i, item in enumerate(self.item_ids)}
        self._item_by_text = {str(item): item for item in self.item_ids}
        self.user_index: dict[str, int] = {u: i for i, u in enumerate(self.user_ids)}
        self._popular_order = np.argsort(-self.popularity, kind="stable")
        self._cache: dict[int, np.ndarray] = {}

    @classmethod
    def from_fitted(
        cls, model: Popularity | ItemKNN | EASE, data: Interactions, metrics: Mapping[str, Any] | None = None
    ) -> RecommenderModel:
        popularity = Popularity().fit(data.matrix).popularity_
        weights: np.ndarray | sp.csr_matrix | None = None
        support: np.ndarray | None = None
        if isinstance(model, EASE):
            weights = np.asarray(model.B_, dtype=np.float32)
            support = model.support_
        elif isinstance(model, ItemKNN):
            weights = sp.csr_matrix(model.B_, dtype=np.float32)
        return cls(
            kind=model.kind,
            params=model.get_params(),
            item_ids=data.item_ids,
            user_ids=data.user_ids,
            history=data.matrix,
            popularity=popularity,
            weights=weights,
            metrics=metrics,
            support=support,
        )

    # -- serving ------------------------------------------------------------------------------
    def resolve_item(self, item_id: Any) -> Any:
        """The catalogue's own id for ``item_id`` (``"42"`` and ``42`` are the same item), or None."""
        if item_id in self.item_index:
            return item_id
        return self._item_by_text.get(str(item_id))

    def seen(self, user_id: str) -> list[Any]:
        row = self.user_index.get(str(user_id))
        if row is None:
            return []
        start, end = self.history.indptr[row], self.history.indptr[row + 1]
        return [self.item_ids[i] for i in self.history.indices[start:end]]

    def recommend(
        self,
        user_id: Any,
        k: int = 10,
        exclude: Iterable[Any] = (),
        *,
        live: Mapping[Any, float] | None = None,
    ) -> list[tuple[Any, float]]:
        """The k best items for ``user_id`` as ``(item_id, score)``, best first."""
        k = max(0, min(int(k), len(self.item_ids)))
        row = self.user_index.get(str(user_id))
        trained: set[int] = set()
        if row is not None:
            start, end = self.history.indptr[row], self.history.indptr[row + 1]
            trained = set(self.history.indices[start:end].tolist())
        banned: set[int] = set(trained)
        added: list[int] = []  # live items not already in the training history (implicit: weight 1)
        for item, w in (live or {}).items():
            index = self.item_index.get(self.resolve_item(item))
            if index is None:
                continue  # an item the model has not seen yet: nothing to score from or exclude
            banned.add(index)
            if w > 0 and index not in trained:
                added.append(index)
        for item in exclude:
            index = self.item_index.get(self.resolve_item(item))
            if index is not None:
                banned.add(index)
        if self.weights is None or (not trained and not added):
            scores = self.popularity
        else:
            scores = self._base(row) if row is not None else np.zeros(len(self.item_ids))
            if added:
                items = np.asarray(added, dtype=np.int64)
                scores = scores + self._score(items, np.ones(len(items), dtype=np.float32))
        return self._top(scores, k, banned)

    def _base(self, row: int) -> np.ndarray:
        """A known user's scores from their training history, computed once and kept (bounded)."""
        cached = self._cache.get(row)
        if cached is None:
            start, end = self.history.indptr[row], self.history.indptr[row + 1]
            items = self.history.indices[start:end].astype(np.int64)
            cached = self._score(items, np.ones(len(items), dtype=np.float32))
            if len(self._cache) >= _CACHE_USERS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[row] = cached
        return cached

    def _score(self, items: np.ndarray, values: np.ndarray) -> np.ndarray:
        if self._position is not None:  # weights over the supported items only
            assert self.support is not None
            rows = self._position[items]
            covered = self._score_rows(rows[rows >= 0], values[rows >= 0])
            scores = np.zeros(len(self.item_ids))
            scores[self.support] = covered
            return scores
        return self._score_rows(items, values)

    def _score_rows(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        if sp.issparse(self.weights):
            picked = self.weights[rows]  # type: ignore[index]
            return np.asarray(picked.T @ values, dtype=np.float64).ravel()
        assert isinstance(self.weights, np.ndarray)
        return np.asarray(values @ self.weights[rows], dtype=np.float64)

    def _top(self, scores: np.ndarray, k: int, banned: set[int]) -> list[tuple[Any, float]]:
        if k == 0:
            return []
        # negated once (a copy: the cached scores stay as they are), best first by ascending order
        negated = np.negative(scores, dtype=np.float64)
        if banned:
            negated[np.fromiter(banned, dtype=np.int64, count=len(banned))] = np.inf
        take = min(k, len(negated))
        part = negated.argpartition(take - 1)[:take]
        best = part[negated[part].argsort(kind="stable")]
        ids = self.item_ids
        out = [(ids[i], -n) for i, n in zip(best.tolist(), negated[best].tolist(), strict=True) if n < 0]
        if len(out) < k:  # fill with popular items the user has not seen
            chosen = {self.item_index[item] for item, _ in out}
            for i in self._popular_order:
                if len(out) >= k:
                    break
                if i not in chosen and i not in banned:
                    out.append((ids[i], max(-float(negated[i]), 0.0)))
        return out

    # -- flavor contract ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = {
            "format": 1,
            "kind": self.kind,
            "params": self.params,
            "item_ids": self.item_ids,
            "user_ids": self.user_ids,
            "metrics": self.metrics,
            "weights": "dense"
            if isinstance(self.weights, np.ndarray)
            else "sparse"
            if self.weights is not None
            else None,
            "support": self.support is not None,
        }
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(header, default=str).encode(), dtype=np.uint8),
            "popularity": self.popularity,
            "h_data": self.history.data,
            "h_indices": self.history.indices,
            "h_indptr": self.history.indptr,
        }
        if isinstance(self.weights, np.ndarray):
            arrays["w"] = self.weights
        elif self.weights is not None:
            w = sp.csr_matrix(self.weights)
            arrays.update(w_data=w.data, w_indices=w.indices, w_indptr=w.indptr)
        if self.support is not None:
            arrays["support"] = self.support
        return _npz(arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> RecommenderModel:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes().decode())
                n_items, n_users = len(header["item_ids"]), len(header["user_ids"])
                history = sp.csr_matrix(
                    (npz["h_data"], npz["h_indices"], npz["h_indptr"]), shape=(n_users, n_items)
                )
                weights: np.ndarray | sp.csr_matrix | None = None
                support = npz["support"] if header.get("support") else None
                n_covered = n_items if support is None else len(support)
                if header["weights"] == "dense":
                    weights = npz["w"]
                elif header["weights"] == "sparse":
                    weights = sp.csr_matrix(
                        (npz["w_data"], npz["w_indices"], npz["w_indptr"]),
                        shape=(n_covered, n_covered),
                    )
                popularity = npz["popularity"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(
                f"not a recommender artifact ({exc})", hint="retrain the model with 'headrace train'"
            ) from exc
        return cls(
            kind=header["kind"],
            params=header["params"],
            item_ids=header["item_ids"],
            user_ids=header["user_ids"],
            history=history,
            popularity=popularity,
            weights=weights,
            metrics=header.get("metrics"),
            support=support,
        )

    def __repr__(self) -> str:
        return f"RecommenderModel({self.kind}, {len(self.user_ids)} users, {len(self.item_ids)} items)"
