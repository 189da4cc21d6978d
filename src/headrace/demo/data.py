"""The demo project's generated data: houses for the price regressor, interactions for the
recommender, a SQLite database of payments, a few images, and the write token of a demo run."""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["HOUSING_DERIVE", "add_payments", "housing", "images", "interactions", "payments", "write_token"]

_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


HOUSING_DERIVE = {
    "rooms_per_household": "total_rooms / households",
    "bedrooms_per_room": "total_bedrooms / total_rooms",
    "population_per_household": "population / households",
}
_OCEAN = ["<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY", "ISLAND"]


def housing(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` California-like block groups; the value follows income, rooms per household, crowding,
    the coast and age, with noise, so derived ratio columns carry real signal."""
    rng = np.random.default_rng(seed)
    ocean = rng.choice(len(_OCEAN), size=n, p=[0.44, 0.32, 0.13, 0.105, 0.005])
    latitude = np.round(rng.uniform(32.5, 42.0, size=n), 2)
    longitude = np.round(-114.3 - (latitude - 32.5) * 0.9 - rng.uniform(0, 2.5, size=n), 2)
    households = np.maximum(1, rng.gamma(4.0, 120.0, size=n)).round()
    rooms_per = np.clip(rng.lognormal(1.6, 0.25, size=n), 1.5, 12)
    total_rooms = np.round(households * rooms_per)
    bedrooms = np.round(total_rooms * np.clip(rng.normal(0.21, 0.03, size=n), 0.1, 0.4))
    crowding = np.clip(rng.lognormal(1.0, 0.3, size=n), 1.0, 8.0)
    population = np.round(households * crowding)
    income = np.clip(rng.lognormal(1.25, 0.45, size=n), 0.5, 15.0).round(4)
    age = rng.integers(1, 53, size=n).astype(np.float64)
    coast = np.array([1.0, -0.9, 1.1, 1.2, 2.0])[ocean]
    value = (
        40_000
        + 38_000 * income
        + 9_000 * (rooms_per - 5.0)
        - 14_000 * (crowding - 2.8)
        + 45_000 * coast
        + 600 * age
        + rng.normal(0, 30_000, size=n)
    )
    value = np.clip(value, 15_000, 500_001).round()
    bedrooms_out = bedrooms.astype(object)
    bedrooms_out[rng.random(n) < 0.01] = None  # a few blanks, as in the real data
    return pl.DataFrame(
        {
            "longitude": longitude,
            "latitude": latitude,
            "housing_median_age": age,
            "total_rooms": total_rooms,
            "total_bedrooms": pl.Series(bedrooms_out.tolist(), dtype=pl.Float64),
            "population": population,
            "households": households,
            "median_income": income,
            "ocean_proximity": np.array(_OCEAN)[ocean],
            "median_house_value": value,
        }
    )


def interactions(users: int = 300, items: int = 120, seed: int = 0) -> pl.DataFrame:
    """Generated interactions with taste groups (a user mostly likes items of their group)."""
    rng = np.random.default_rng(seed)
    popularity = rng.zipf(1.6, size=items).astype(float)
    rows = []
    for u in range(users):
        group = u % 4
        liked = np.array([i for i in range(items) if i % 4 == group])
        weights = popularity[liked] / popularity[liked].sum()
        count = int(rng.integers(8, 25))
        chosen = rng.choice(liked, size=min(count, len(liked)), replace=False, p=weights)
        extra = rng.choice(items, size=2, replace=False)
        for t, item in enumerate([*chosen.tolist(), *extra.tolist()]):
            rows.append(
                {
                    "user_id": u,
                    "item_id": int(item),
                    "rating": float(rng.integers(1, 6)),
                    "ts": 1_700_000_000 + 3600 * u + t,
                }
            )
    return pl.DataFrame(rows).unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)


def payments(path: Path, rows: int = 500, seed: int = 11) -> str:
    """A SQLite database of payments (``updated_at`` as text; some rows share a timestamp); returns
    the last timestamp."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    stamp = _EPOCH
    out = []
    for i in range(1, rows + 1):
        stamp += dt.timedelta(minutes=rng.choice([0, 1, 2]))
        out.append(
            (
                i,
                f"C{rng.randint(1, 80):04d}",
                round(rng.uniform(5, 200), 2),
                rng.choice(["card", "debit", "transfer"]),
                stamp.strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE payments (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, method TEXT, "
            "updated_at TEXT NOT NULL)"
        )
        db.executemany("INSERT INTO payments VALUES (?, ?, ?, ?, ?)", out)
    db.close()
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def add_payments(path: Path, new: int = 20, updated: tuple[int, ...] = (1, 2)) -> str:
    """``new`` payments an hour after the last one, and ``updated`` rows changed at that time."""
    with sqlite3.connect(path) as db:
        (last, first_id) = db.execute("SELECT max(updated_at), max(id) + 1 FROM payments").fetchone()
        later = (dt.datetime.fromisoformat(last) + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        db.executemany(
            "INSERT INTO payments VALUES (?, ?, ?, ?, ?)",
            [(i, f"C{i % 80:04d}", 42.0, "card", later) for i in range(first_id, first_id + new)],
        )
        if updated:
            marks = ", ".join("?" * len(updated))
            db.execute(
                f"UPDATE payments SET amount = 0, updated_at = ? WHERE id IN ({marks})", (later, *updated)
            )
    db.close()
    return later


def images(folder: Path, per_class: int = 24, size: int = 64, seed: int = 5) -> list[str]:
    """Small generated pictures in ``folder/<class>/``: discs and squares on noise; returns the classes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    classes = ["disc", "square"]
    for cls in classes:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            picture = Image.fromarray(noise, "RGB")
            draw = ImageDraw.Draw(picture)
            r = int(rng.integers(size // 6, size // 3))
            cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
            colour = tuple(int(c) for c in rng.integers(120, 256, size=3))
            box = (cx - r, cy - r, cx + r, cy + r)
            (draw.ellipse if cls == "disc" else draw.rectangle)(box, fill=colour)
            picture.save(folder / cls / f"{cls}-{i:03d}.png")
    return classes


def write_token(variable: str = "HEADRACE_WRITE_TOKEN") -> str:
    """The write token of this demo run: the environment's, else a fresh one put there (the servers
    the demo starts, a deployed bundle included, read it from there)."""
    if not os.environ.get(variable):
        os.environ[variable] = secrets.token_urlsafe(24)
    return os.environ[variable]
