"""Recommendation models over an implicit user x item matrix: popularity, item-kNN and EASE.

Each follows the scikit-learn contract (parameters in ``__init__``, ``fit(X)`` returns self, learned
state ends in ``_``) and scores users from their history alone, so a user's new interaction changes
their scores at once without refitting:

- ``score(X)`` scores a batch of history rows (CSR, users x items) -> dense users x items;
- ``score_one(items, weights)`` scores one history given as item indices and weights (serving path).

EASE (Steck, 2019, "Embarrassingly Shallow Autoencoders"): B = I - P / diag(P) with
P = (X'X + lambda I)^-1, the diagonal forced to zero. item-kNN: cosine similarity of item columns
(co-occurrence divided by the square roots of the item counts), each item keeping its ``neighbors``
most similar items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["EASE", "MODELS", "ItemKNN", "Popularity", "make_model"]


class Popularity:
    """Items ranked by how many users interacted with them; the same list for everyone."""

    kind = "popularity"

    def __init__(self) -> None:
        pass

    def fit(self, X: sp.csr_matrix) -> Popularity:
        counts = np.asarray((X > 0).sum(axis=0)).ravel().astype(np.float64)
        self.popularity_ = counts / max(float(counts.max(initial=0.0)), 1.0)
        return self

    def score(self, X: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.popularity_, (X.shape[0], 1))

    def score_one(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.popularity_.copy()

    def get_params(self) -> dict[str, Any]:
        return {}


class _ItemItem:
    """Shared scoring for models that are an item x item weight matrix ``B_``: scores = x B."""

    B_: np.ndarray | sp.csr_matrix

    def score(self, X: sp.csr_matrix) -> np.ndarray:
        out = X @ self.B_
        return np.asarray(out.todense() if sp.issparse(out) else out)

    def score_one(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if len(items) == 0:
            return np.zeros(self.B_.shape[1])
        if sp.issparse(self.B_):
            rows = self.B_[items]
            return np.asarray(rows.T @ weights).ravel()
        return np.asarray(weights @ self.B_[items])


class ItemKNN(_ItemItem):
    """Item-based k-nearest neighbours, cosine similarity on co-occurrence."""

    kind = "item_knn"

    def __init__(self, neighbors: int = 100) -> None:
        self.neighbors = neighbors

    def fit(self, X: sp.csr_matrix) -> ItemKNN:
        binary = (X > 0).astype(np.float64).tocsc()
        co = (binary.T @ binary).toarray()
        norms = np.sqrt(np.diag(co))
        norms[norms == 0] = 1.0
        sim = co / norms[:, None] / norms[None, :]
        np.fill_diagonal(sim, 0.0)
        k = min(self.neighbors, sim.shape[0] - 1)
        if 0 < k < sim.shape[0] - 1:
            # keep each item's k most similar items (row = the item a user has, column = a candidate)
            cut = np.argpartition(-sim, k, axis=1)[:, k:]
            np.put_along_axis(sim, cut, 0.0, axis=1)
        self.B_ = sp.csr_matrix(sim)
        return self

    def get_params(self) -> dict[str, Any]:
        return {"neighbors": self.neighbors}


class EASE(_ItemItem):
    """Embarrassingly Shallow Autoencoder: a closed-form item x item linear model."""

    kind = "ease"

    def __init__(self, l2: float = 500.0) -> None:
        self.l2 = l2

    def fit(self, X: sp.csr_matrix) -> EASE:
        gram = np.asarray((X.T @ X).todense(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        precision = np.linalg.inv(gram)
        B = precision / (-np.diag(precision))
        np.fill_diagonal(B, 0.0)
        self.B_ = B.astype(np.float64)
        return self

    def get_params(self) -> dict[str, Any]:
        return {"l2": self.l2}


MODELS: dict[str, type[Any]] = {"popularity": Popularity, "item_knn": ItemKNN, "ease": EASE}


def make_model(kind: str, **params: Any) -> Popularity | ItemKNN | EASE:
    from ..errors import ConfigError

    if kind not in MODELS:
        raise ConfigError(
            f"unknown recommendation estimator {kind!r}", hint=f"use one of: {', '.join(MODELS)}"
        )
    try:
        model: Popularity | ItemKNN | EASE = MODELS[kind](**params)
        return model
    except TypeError as exc:
        raise ConfigError(f"estimator {kind!r}: {exc}", hint="check its params in headrace.yaml") from None
