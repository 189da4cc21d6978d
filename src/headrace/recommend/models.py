"""Recommendation models over an implicit user x item matrix: popularity, item-kNN and EASE.

Each follows the scikit-learn contract (parameters in ``__init__``, ``fit(X)`` returns self, learned
state ends in ``_``) and scores users from their history alone, so a user's new interaction changes
their scores at once without refitting:

- ``score(X)`` scores a batch of history rows (CSR, users x items) -> dense users x items;
- ``score_one(items, weights)`` scores one history given as item indices and weights (serving path).

EASE (Steck, 2019, "Embarrassingly Shallow Autoencoders"): B = I - P / diag(P) with
P = (X'X + lambda I)^-1, the diagonal forced to zero. P comes from one symmetric eigendecomposition
shared by every lambda (``Gram``): of X X' (users x users, then P by the Woodbury identity) when
there are fewer users than items, else of X'X. Items with fewer than ``min_support`` users are left
out of B and scored 0.

item-kNN: cosine similarity of item columns (co-occurrence divided by the square roots of the item
counts, kept sparse), each item keeping its ``neighbors`` most similar items.

``fit_grid(kind, X, grid)`` fits every parameter set of a grid sharing the expensive step (one
eigendecomposition for every lambda, one similarity for every neighbour count), and scores EASE
without forming the items x items matrix, which only the final refit needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

__all__ = ["EASE", "MODELS", "Gram", "ItemKNN", "Popularity", "fit_grid", "make_model"]

# Decompositions of a matrix larger than this run in float32 (half the memory, about twice as fast);
# smaller ones in float64, where the time is negligible.
FLOAT32_ABOVE = 1024
_ROWS = 4096  # items per chunk when a per-item quantity is computed from the factors


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
    """Shared scoring for models that are an item x item weight matrix ``B_``: scores = x B.

    ``support_`` (when not None) lists the items ``B_`` covers, in its order; the others score 0."""

    B_: np.ndarray | sp.csr_matrix
    support_: np.ndarray | None = None
    n_items_: int = 0

    def _covered(self, X: sp.csr_matrix) -> sp.csr_matrix:
        X = sp.csr_matrix(X)
        X = X if self.support_ is None else X[:, self.support_]
        return X.astype(self.B_.dtype)  # same dtype as B_: no upcast copy of B_ in the product

    def _spread(self, scores: np.ndarray) -> np.ndarray:
        if self.support_ is None:
            return scores
        out = np.zeros((*scores.shape[:-1], self.n_items_), dtype=scores.dtype)
        out[..., self.support_] = scores
        return out

    def score(self, X: sp.csr_matrix) -> np.ndarray:
        out = self._covered(X) @ self.B_
        return self._spread(np.asarray(out.todense() if sp.issparse(out) else out))

    def score_one(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        weights = np.asarray(weights, dtype=self.B_.dtype)
        if self.support_ is not None:
            position = np.full(self.n_items_, -1, dtype=np.int64)
            position[self.support_] = np.arange(len(self.support_))
            mapped = position[items]
            items, weights = mapped[mapped >= 0], weights[mapped >= 0]
        if len(items) == 0:
            return np.zeros(self.n_items_)
        if sp.issparse(self.B_):
            rows = self.B_[items]
            return self._spread(np.asarray(rows.T @ weights).ravel())
        return self._spread(np.asarray(weights @ self.B_[items]))


class _Neighbours:
    """The cosine similarity of every item pair that co-occurs, each row sorted best first, once
    for every neighbour count."""

    def __init__(self, X: sp.csr_matrix) -> None:
        binary = sp.csc_matrix((X > 0).astype(np.float64))
        co = sp.csr_matrix(binary.T @ binary)
        n = co.shape[0]
        norms = np.sqrt(co.diagonal())
        norms[norms == 0] = 1.0
        rows = np.repeat(np.arange(n), np.diff(co.indptr))
        keep = rows != co.indices  # an item is not its own neighbour
        rows, cols = rows[keep], co.indices[keep]
        sim = co.data[keep] / norms[rows] / norms[cols]
        # each row best first; ties by column, so the neighbours kept do not depend on storage order
        order = np.lexsort((cols, -sim, rows))
        self.rows, self.cols, self.sim = rows[order], cols[order], sim[order]
        starts = np.searchsorted(self.rows, np.arange(n))
        self.rank = np.arange(len(self.rows)) - starts[self.rows]
        self.n_items = n

    def weights(self, neighbors: int) -> sp.csr_matrix:
        k = min(neighbors, self.n_items - 1)
        keep = self.rank < k if 0 < k < self.n_items - 1 else np.ones(len(self.rows), dtype=bool)
        shape = (self.n_items, self.n_items)
        return sp.csr_matrix((self.sim[keep], (self.rows[keep], self.cols[keep])), shape=shape)


class ItemKNN(_ItemItem):
    """Item-based k-nearest neighbours, cosine similarity on co-occurrence."""

    kind = "item_knn"

    def __init__(self, neighbors: int = 100) -> None:
        self.neighbors = neighbors

    def fit(self, X: sp.csr_matrix) -> ItemKNN:
        return self._from(_Neighbours(X))

    def _from(self, neighbours: _Neighbours) -> ItemKNN:
        # row = the item a user has, column = a candidate, each row keeping its k most similar
        self.B_ = neighbours.weights(self.neighbors)
        self.n_items_ = neighbours.n_items
        return self

    def get_params(self) -> dict[str, Any]:
        return {"neighbors": self.neighbors}


class Gram:
    """(X'X + lambda I)^-1 for one lambda, or for any from one symmetric eigendecomposition.

    Only the items with at least ``min_support`` users (``support``) take part. The result has the
    form P = alpha I + W diag(h) W', which is all EASE needs: scoring a batch costs batch x rank x
    items, and the items x items matrix is formed only when asked (``weights``).

    With fewer users than items it works in the users' space, by the Woodbury identity
    (X'X + lambda I)^-1 = (I - X'(X X' + lambda I)^-1 X) / lambda: for any lambda from
    X X' = U diag(s) U' (W = X'U, alpha = 1/lambda, h = -1/(lambda (s + lambda))), for one ``l2``
    from the Cholesky factor X X' + lambda I = L L' (W = X'L^-T, h = -1/lambda). Otherwise in the
    items' space: X'X = W diag(s) W' (alpha = 0, h = 1/(s + lambda)), or X'X + lambda I = L L'
    (W = L^-T, h = 1). A single lambda takes a Cholesky factorisation (about a tenth of an
    eigendecomposition); a grid takes one eigendecomposition for all its lambdas.
    """

    def __init__(self, X: sp.csr_matrix, min_support: int = 1, l2: float | None = None) -> None:
        X = sp.csr_matrix(X)
        self.n_items = X.shape[1]
        self.l2 = None if l2 is None else _check_l2(l2)
        users_per_item = np.diff(sp.csc_matrix(X > 0).indptr)
        self.support = np.flatnonzero(users_per_item >= max(int(min_support), 1)).astype(np.int64)
        Xs = sp.csr_matrix(X[:, self.support], dtype=np.float64)
        Xs = Xs[np.diff(Xs.indptr) > 0]  # a user with no supported item adds nothing
        m, n = Xs.shape
        self.dual = m < n
        dtype = np.float32 if min(m, n) > FLOAT32_ABOVE else np.float64
        self.s = np.zeros(0)
        self.W = np.zeros((n, 0), dtype=dtype)
        if n == 0 or m == 0:
            return
        gram = np.asarray((Xs @ Xs.T if self.dual else Xs.T @ Xs).todense(), dtype=dtype)
        inverse_root = None if self.l2 is None else _inverse_cholesky(gram, self.l2)
        if inverse_root is not None:  # gram + l2 I = L L'; inverse_root = L^-1
            self.W = np.asarray(Xs.T.astype(dtype) @ inverse_root.T) if self.dual else inverse_root.T
        else:
            self.l2 = None
            s, U = _eigh(gram)
            self.s = np.clip(s.astype(np.float64), 0.0, None)
            self.W = np.asarray(Xs.T.astype(dtype) @ U) if self.dual else U
        self.W = np.ascontiguousarray(self.W)

    def coefficients(self, l2: float) -> tuple[float, np.ndarray, np.ndarray]:
        """alpha, h and d = diag(P) for this lambda (h, d in float64)."""
        l2 = _check_l2(l2)
        rank = self.W.shape[1]
        if self.l2 is not None:  # a Cholesky factor, for its own lambda only
            if l2 != self.l2:
                raise ValueError(f"this factorisation is for l2={self.l2}, not {l2}")
            alpha, h = (1.0 / l2, np.full(rank, -1.0 / l2)) if self.dual else (0.0, np.ones(rank))
        elif self.dual:
            alpha, h = 1.0 / l2, -1.0 / (l2 * (self.s + l2))
        else:
            alpha, h = 0.0, 1.0 / (self.s + l2)
        d = np.empty(len(self.support))
        for start in range(0, len(d), _ROWS):
            chunk = self.W[start : start + _ROWS].astype(np.float64)
            d[start : start + _ROWS] = alpha + (chunk * chunk) @ h
        return alpha, h, np.maximum(d, np.finfo(np.float64).tiny)

    def scores(self, X: sp.csr_matrix, l2: float, coefficients: Any = None) -> np.ndarray:
        """x B for each row of X over the supported items: x - x P / diag(P) (B's diagonal is 0)."""
        alpha, h, d = coefficients if coefficients is not None else self.coefficients(l2)
        Xs = sp.csr_matrix(X[:, self.support], dtype=self.W.dtype)
        Xs.sum_duplicates()
        xp = (np.asarray(Xs @ self.W) * h.astype(self.W.dtype)) @ self.W.T  # x P less alpha x
        coo = Xs.tocoo()
        xp[coo.row, coo.col] += alpha * coo.data
        xp /= -d.astype(xp.dtype)
        xp[coo.row, coo.col] += coo.data
        return xp

    def weights(self, l2: float) -> np.ndarray:
        """B over the supported items (float32 when factorised in float32): -P / diag(P), zero diagonal."""
        _, h, d = self.coefficients(l2)
        B = (self.W * h.astype(self.W.dtype)) @ self.W.T
        B /= -d.astype(B.dtype)  # column j divided by -P_jj
        np.fill_diagonal(B, 0.0)
        return B


def _check_l2(l2: float) -> float:
    if not l2 > 0:
        from ..errors import ConfigError

        raise ConfigError(f"EASE's l2 must be above 0; got {l2}", hint="set params: l2 in headrace.yaml")
    return float(l2)


def _eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Divide and conquer ('evd'): the fastest LAPACK driver for every eigenpair. Its reduction to
    # tridiagonal form is mostly matrix-vector products; up to a few thousand rows, threads gain
    # little there (0.30 s on two against 0.46 s on one, 1,892 rows) and lose much when another
    # process holds a core (4 to 10 s measured), so such a matrix is decomposed on one thread.
    with _blas_threads(1 if len(a) <= 2048 else None):
        s, v = scipy.linalg.eigh(a, driver="evd", overwrite_a=True, check_finite=False)
    return s, v


def _inverse_cholesky(gram: np.ndarray, l2: float) -> np.ndarray | None:
    """L^-1 where gram + l2 I = L L' (gram is overwritten), or None if not positive definite."""
    gram[np.diag_indices_from(gram)] += l2
    try:
        L = scipy.linalg.cholesky(gram, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        gram[np.diag_indices_from(gram)] -= l2
        return None
    inverse, info = scipy.linalg.lapack.get_lapack_funcs("trtri", (L,))(L, lower=1, overwrite_c=1)
    if info != 0:
        return None
    return np.asarray(inverse)


def _blas_threads(limit: int | None) -> Any:
    import contextlib

    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


class EASE(_ItemItem):
    """Embarrassingly Shallow Autoencoder: a closed-form item x item linear model.

    ``min_support``: items with fewer users than this are left out of B (and scored 0); they can
    only be recommended from popularity. 1 keeps every item."""

    kind = "ease"

    def __init__(self, l2: float = 500.0, min_support: int = 2) -> None:
        self.l2 = l2
        self.min_support = min_support

    def fit(self, X: sp.csr_matrix) -> EASE:
        return self._from(Gram(X, self.min_support, l2=self.l2))

    def _from(self, gram: Gram) -> EASE:
        self.B_ = gram.weights(self.l2)
        self.support_ = None if len(gram.support) == gram.n_items else gram.support
        self.n_items_ = gram.n_items
        return self

    def get_params(self) -> dict[str, Any]:
        return {"l2": self.l2, "min_support": self.min_support}


class _EASEScorer:
    """EASE at one lambda scored from the shared factors, never forming B (tuning, evaluation)."""

    kind = "ease"

    def __init__(self, gram: Gram, l2: float) -> None:
        self.gram = gram
        self.l2 = l2
        self._coefficients = gram.coefficients(l2)

    def score(self, X: sp.csr_matrix) -> np.ndarray:
        scores = self.gram.scores(X, self.l2, self._coefficients)
        out = np.zeros((X.shape[0], self.gram.n_items), dtype=scores.dtype)
        out[:, self.gram.support] = scores
        return out


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


def fit_grid(kind: str, X: sp.csr_matrix, grid: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], Any]]:
    """Each parameter set of ``grid`` fitted on X, as ``(params, model)`` with ``model.score``.

    The expensive step is shared: EASE decomposes once per ``min_support`` for every ``l2`` (and is
    scored from the factors), item-kNN computes the similarity once for every ``neighbors``."""
    models = [make_model(kind, **params) for params in grid]  # every parameter checked up front
    shared: dict[Any, Any] = {}
    for params, model in zip(grid, models, strict=True):
        if isinstance(model, EASE):
            key = ("ease", model.min_support)
            if key not in shared:
                shared.clear()  # one factorisation held at a time
                alone = sum(isinstance(m, EASE) and m.min_support == model.min_support for m in models) == 1
                shared[key] = Gram(X, model.min_support, l2=model.l2 if alone else None)
            yield params, _EASEScorer(shared[key], model.l2)
        elif isinstance(model, ItemKNN):
            if "knn" not in shared:
                shared["knn"] = _Neighbours(X)
            yield params, model._from(shared["knn"])
        else:
            yield params, model.fit(X)
