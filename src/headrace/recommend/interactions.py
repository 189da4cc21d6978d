"""Interactions: (user, item, optional weight, timestamp) rows turned into a user x item matrix.

User ids are kept as strings (they arrive as URL path segments); item ids keep their type (an int
item stays an int in the answer). The matrix is implicit feedback: every interaction counts, its
weight summed, then binarised unless ``binary=False``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from ..errors import DataError

__all__ = ["COLUMN_NAMES", "YAML_KEYS", "Interactions", "detect_columns", "read_movielens"]

# The names recognised for each role, in order of preference; a column matches a name whatever its
# case and with '_', '-' and spaces left out (userID, user_id and User Id are all "userid").
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "user": (
        "user_id",
        "user",
        "customer_id",
        "customer",
        "listener_id",
        "listener",
        "visitor_id",
        "member_id",
        "account_id",
        "client_id",
        "session_id",
    ),
    "item": (
        "item_id",
        "item",
        "movie_id",
        "movie",
        "product_id",
        "product",
        "artist_id",
        "artist",
        "track_id",
        "song_id",
        "book_id",
        "isbn",
        "article_id",
        "sku",
        "asin",
    ),
    "weight": ("weight", "rating", "score", "count", "plays", "play_count", "quantity"),
    "ts": ("ts", "timestamp", "time", "event_time", "created_at", "datetime"),
}

# The headrace.yaml key (on the model) that names each role's column.
YAML_KEYS: dict[str, str] = {"user": "user", "item": "item", "weight": "weight", "ts": "time"}


def _normal(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "_- ")


def detect_columns(frame: pl.DataFrame, **given: str | None) -> dict[str, str | None]:
    """Which column of ``frame`` plays each role (user, item, weight, ts); ``given`` names (from the
    model's ``user:``, ``item:``, ``weight:`` and ``time:`` keys) override the guesses."""
    out: dict[str, str | None] = {}
    taken: set[str] = {name for name in given.values() if name is not None}
    for role, names in COLUMN_NAMES.items():
        chosen = given.get(role)
        key = YAML_KEYS[role]
        if chosen is not None:
            if chosen not in frame.columns:
                close = difflib.get_close_matches(chosen, frame.columns, n=1)
                raise DataError(
                    f"the interactions have no column {chosen!r} (`{key}: {chosen}` on the model)",
                    hint=(f"did you mean {close[0]!r}? " if close else "")
                    + f"set `{key}:` on the model in headrace.yaml to one of: {', '.join(frame.columns)}",
                )
            out[role] = chosen
            continue
        by_normal: dict[str, str] = {}
        for column in frame.columns:
            if column not in taken:
                by_normal.setdefault(_normal(column), column)
        found = next((by_normal[_normal(n)] for n in names if _normal(n) in by_normal), None)
        out[role] = found
        if found is not None:
            taken.add(found)
    for role in ("user", "item"):
        if out[role] is None:
            key = YAML_KEYS[role]
            raise DataError(
                f"no {role} column found in the interactions (columns: {', '.join(frame.columns)})",
                hint=f"set `{key}:` on the model in headrace.yaml to the column that holds the {role}, "
                f"e.g. `{key}: {_example(frame, out)}`",
            )
    return out


def _example(frame: pl.DataFrame, found: dict[str, str | None]) -> str:
    # the first column no other role took: only an example in a hint
    used = {name for name in found.values() if name is not None}
    return next((c for c in frame.columns if c not in used), frame.columns[0] if frame.columns else "...")


def read_movielens(path: str) -> pl.DataFrame:
    """MovieLens ``u.data`` (tab-separated user, item, rating, unix time) as an interactions frame."""
    return pl.read_csv(
        path,
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "rating", "ts"],
        schema_overrides={"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "ts": pl.Int64},
    )


@dataclass
class Interactions:
    """A user x item CSR matrix with the id <-> index maps."""

    matrix: sp.csr_matrix
    user_ids: list[str]
    item_ids: list[Any]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        *,
        binary: bool = True,
        item_ids: list[Any] | None = None,
        columns: dict[str, str | None] | None = None,
    ) -> Interactions:
        cols = columns or detect_columns(frame)
        user_col, item_col, weight_col = cols["user"], cols["item"], cols["weight"]
        assert user_col is not None and item_col is not None
        users = frame[user_col].cast(pl.String).to_list()
        items = frame[item_col].to_list()
        weights = (
            frame[weight_col].cast(pl.Float64).fill_null(1.0).to_numpy()
            if weight_col is not None
            else np.ones(frame.height)
        )
        user_ids = sorted(set(users))
        catalogue = list(item_ids) if item_ids is not None else sorted(set(items), key=_sort_key)
        user_index = {u: i for i, u in enumerate(user_ids)}
        item_index = {it: i for i, it in enumerate(catalogue)}
        keep = [i for i, it in enumerate(items) if it in item_index]
        rows = np.fromiter((user_index[users[i]] for i in keep), dtype=np.int64, count=len(keep))
        cols_ = np.fromiter((item_index[items[i]] for i in keep), dtype=np.int64, count=len(keep))
        data = np.asarray(weights, dtype=np.float64)[keep] if keep else np.zeros(0)
        matrix = sp.csr_matrix((data, (rows, cols_)), shape=(len(user_ids), len(catalogue)))
        matrix.sum_duplicates()
        if binary:
            matrix.data = np.ones_like(matrix.data)
        return cls(matrix=matrix, user_ids=user_ids, item_ids=catalogue)


def _sort_key(value: Any) -> tuple[int, Any]:
    # ints before strings, each in natural order, so mixed catalogues still sort
    return (0, value) if isinstance(value, int | float) else (1, str(value))
