"""Data and prediction drift: the live window against the training reference, feature by feature.

Three statistics per feature, as the field computes them:

- **PSI** (population stability index), ``sum((live - ref) * ln(live / ref))`` over bins. Numeric
  features are binned on the reference's quantiles (so each bin holds about the same share of the
  reference), categorical features by category; an empty bin gets ``epsilon`` instead of 0 so the
  logarithm stays finite (Evidently and most PSI write-ups use 1e-4).
- **Kolmogorov-Smirnov** (two-sample, ``scipy.stats.ks_2samp``) for numeric features, a chi-square
  test of homogeneity for categorical ones; both give a p-value.
- **Jensen-Shannon distance** (``scipy.spatial.distance.jensenshannon``, base 2, so in [0, 1]) over the
  same bins as PSI.

Whether a feature has drifted is decided by one of them (``method``: PSI by default, because with a
few thousand rows KS flags shifts too small to matter); the other two are reported beside it. The
dataset has drifted when the share of drifted features reaches ``drift_share``.

Prediction drift compares the live scores (positive-class probability for a binary classifier, the
top class's probability for a multi-class one, the predicted value for a regressor) with the model's
*out-of-fold* scores from its cross-validation (:func:`reference_scores`), which the trainer saves
with every version: each training row scored by a model that did not see it, as live rows are. The
model's scores on its own training rows would be the wrong reference: a model that fits its training
data closely scores those rows near 0 and 1, so ordinary live traffic would read as drift. Versions
trained before the out-of-fold scores were saved fall back to those in-sample scores, and say so.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats
from scipy.spatial import distance

from ..errors import DataError, HeadraceError

__all__ = [
    "EPSILON",
    "REFERENCE_SCORES_MAX",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "ReferenceScores",
    "drift",
    "feature_drift",
    "js_distance",
    "ks_test",
    "psi",
    "psi_categorical",
    "psi_numeric",
    "quantile_edges",
    "reference_scores",
]

log = logging.getLogger("headrace.monitor.drift")

EPSILON = 1e-4
REFERENCE_SCORES_MAX = 20_000  # a seeded sample above this: PSI bins on deciles need far fewer
Status = Literal["ok", "warn", "alert"]
ReferenceSource = Literal["out_of_fold", "in_sample"]


@dataclass(frozen=True)
class DriftThresholds:
    """Where a statistic turns a feature from ok to warn to alert (drifted)."""

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    ks_alpha: float = 0.01
    js_alert: float = 0.1
    method: Literal["psi", "ks", "js"] = "psi"
    drift_share: float = 0.3
    bins: int = 10

    @classmethod
    def from_spec(cls, spec: Any) -> DriftThresholds:
        """From a :class:`~headrace.config.MonitoringSpec`."""
        return cls(
            psi_warn=spec.psi_warn,
            psi_alert=spec.psi_alert,
            ks_alpha=spec.ks_alpha,
            js_alert=spec.js_alert,
            method=spec.drift_method,
            drift_share=spec.drift_share,
            bins=spec.bins,
        )


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    js: float
    status: Status
    drifted: bool
    reference_rows: int
    live_rows: int
    reference_nulls: float
    live_nulls: float
    bins: list[str] = field(default_factory=list)
    reference_share: list[float] = field(default_factory=list)
    live_share: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    share_drifted: float
    dataset_drift: bool
    reference_rows: int
    live_rows: int
    thresholds: DriftThresholds
    # what the live scores were compared with: "out_of_fold" (cross-validation scores of rows the
    # scoring model did not see) or "in_sample" (versions trained before those were saved)
    prediction_reference: ReferenceSource | None = None

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def status(self) -> Status:
        if self.dataset_drift or (self.prediction is not None and self.prediction.drifted):
            return "alert"
        if any(f.status != "ok" for f in self.features):
            return "warn"
        return "ok"

    def feature(self, name: str) -> FeatureDrift:
        for item in self.features:
            if item.feature == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "dataset_drift": self.dataset_drift,
            "share_drifted": self.share_drifted,
            "drifted": self.drifted,
            "reference_rows": self.reference_rows,
            "live_rows": self.live_rows,
            "thresholds": asdict(self.thresholds),
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "prediction_reference": self.prediction_reference,
        }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- the statistics ---------------------------------------------------------------------------------


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference's quantiles, duplicates removed (a feature with few
    distinct values gets fewer bins). Bins are ``(-inf, e0], (e0, e1], ..., (ek, inf)``."""
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.array([], dtype=float)
    quantiles = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(quantiles)
    # an edge at the maximum would leave the top bin empty in the reference: drop it
    return edges[edges < ref.max()]


def _numeric_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    index = np.searchsorted(edges, values, side="left")  # value <= edge[i] -> bin i
    counts = np.bincount(index, minlength=edges.size + 1).astype(float)
    return counts / max(values.size, 1)


def _psi_from_shares(expected: np.ndarray, actual: np.ndarray, epsilon: float = EPSILON) -> float:
    e = np.where(expected <= 0, epsilon, expected)
    a = np.where(actual <= 0, epsilon, actual)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_numeric(
    reference: Sequence[float] | np.ndarray,
    live: Sequence[float] | np.ndarray,
    bins: int = 10,
    epsilon: float = EPSILON,
) -> float:
    """PSI of a numeric feature, binned on the reference's quantiles."""
    ref, cur = _clean_numeric(reference), _clean_numeric(live)
    _need_rows(ref, cur)
    edges = quantile_edges(ref, bins)
    return _psi_from_shares(_numeric_shares(ref, edges), _numeric_shares(cur, edges), epsilon)


def psi_categorical(
    reference: Sequence[Any] | np.ndarray, live: Sequence[Any] | np.ndarray, epsilon: float = EPSILON
) -> float:
    """PSI of a categorical feature, one bin per category seen in either sample."""
    _, ref_share, live_share = _category_shares(reference, live)
    return _psi_from_shares(ref_share, live_share, epsilon)


def psi(reference: Any, live: Any, bins: int = 10, epsilon: float = EPSILON) -> float:
    """PSI, numeric or categorical by the reference's type."""
    if _is_numeric_values(reference):
        return psi_numeric(reference, live, bins, epsilon)
    return psi_categorical(reference, live, epsilon)


def ks_test(reference: Any, live: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (numeric features)."""
    ref, cur = _clean_numeric(reference), _clean_numeric(live)
    _need_rows(ref, cur)
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def js_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two distributions over the same bins."""
    p, q = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(distance.jensenshannon(p, q, base=2))


# -- one feature, one dataset ---------------------------------------------------------------------


def feature_drift(
    name: str, reference: pl.Series, live: pl.Series, thresholds: DriftThresholds | None = None
) -> FeatureDrift:
    """Every statistic for one feature, and its status under ``thresholds``."""
    th = thresholds or DriftThresholds()
    ref_nulls = _null_share(reference)
    live_nulls = _null_share(live)
    if _is_numeric_dtype(reference.dtype) and _is_numeric_dtype(live.dtype):
        ref = _clean_numeric(reference.to_numpy())
        cur = _clean_numeric(live.to_numpy())
        _need_rows(ref, cur, name)
        edges = quantile_edges(ref, th.bins)
        ref_share, live_share = _numeric_shares(ref, edges), _numeric_shares(cur, edges)
        statistic, p_value = ks_test(ref, cur)
        test: Literal["ks", "chi2"] = "ks"
        labels = _edge_labels(edges)
        kind: Literal["numeric", "categorical"] = "numeric"
    else:
        ref_values = reference.drop_nulls().cast(pl.String).to_numpy()
        live_values = live.drop_nulls().cast(pl.String).to_numpy()
        _need_rows(ref_values, live_values, name)
        labels, ref_share, live_share = _category_shares(ref_values, live_values)
        statistic, p_value = _chi_square(ref_share * ref_values.size, live_share * live_values.size)
        test = "chi2"
        kind = "categorical"
    value = _psi_from_shares(ref_share, live_share)
    js = js_distance(ref_share, live_share)
    status: Status = "ok"
    if value >= th.psi_alert:
        status = "alert"
    elif value >= th.psi_warn:
        status = "warn"
    if th.method == "psi":
        drifted = value >= th.psi_alert
    elif th.method == "ks":
        drifted = p_value < th.ks_alpha  # KS for numeric features, chi-square for categorical
    else:
        drifted = js >= th.js_alert
    if drifted:
        status = "alert"
    return FeatureDrift(
        feature=name,
        kind=kind,
        psi=value,
        test=test,
        statistic=statistic,
        p_value=p_value,
        js=js,
        status=status,
        drifted=bool(drifted),
        reference_rows=int(reference.len() - reference.null_count()),
        live_rows=int(live.len() - live.null_count()),
        reference_nulls=ref_nulls,
        live_nulls=live_nulls,
        bins=labels,
        reference_share=[float(x) for x in ref_share],
        live_share=[float(x) for x in live_share],
    )


def drift(
    reference: pl.DataFrame,
    live: pl.DataFrame,
    thresholds: DriftThresholds | None = None,
    *,
    features: Sequence[str] | None = None,
    prediction: tuple[pl.Series, pl.Series] | None = None,
    prediction_reference: ReferenceSource | None = None,
) -> DriftReport:
    """Compare ``live`` with ``reference`` on ``features`` (default: the columns both have).

    ``prediction`` is (reference scores, live scores), compared the same way (prediction drift);
    the reference scores come from :func:`reference_scores`, and ``prediction_reference`` says which
    kind they are (recorded in the report).
    """
    th = thresholds or DriftThresholds()
    names = list(features) if features is not None else [c for c in reference.columns if c in live.columns]
    missing = [n for n in names if n not in reference.columns or n not in live.columns]
    if missing:
        raise DataError(
            f"drift: feature(s) {', '.join(missing)} missing from the "
            + ("reference" if any(n not in reference.columns for n in missing) else "live window"),
            hint="compare the model's signature with the prediction log's inputs",
        )
    if not names:
        raise DataError("drift: the reference and the live window share no feature column")
    results = [feature_drift(n, reference[n], live[n], th) for n in names]
    share = sum(r.drifted for r in results) / len(results)
    pred = None
    if prediction is not None:
        pred = feature_drift("prediction", prediction[0], prediction[1], th)
    return DriftReport(
        features=results,
        prediction=pred,
        share_drifted=share,
        dataset_drift=share >= th.drift_share,
        reference_rows=reference.height,
        live_rows=live.height,
        thresholds=th,
        prediction_reference=prediction_reference if pred is not None else None,
    )


# -- the prediction-drift reference ----------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceScores:
    """The scores live scores are compared with, and where they come from."""

    values: pl.Series
    source: ReferenceSource
    note: str | None = None  # why it is not out-of-fold, when it is not


def reference_scores(registry: Any, mv: Any, frame: pl.DataFrame | None = None) -> ReferenceScores | None:
    """The prediction-drift reference of model version ``mv``: its out-of-fold scores.

    Training saves every row's out-of-fold prediction with the version (``details["oof_sha256"]``, a
    Parquet table with ``prediction``, or ``p_0 .. p_k`` for more than two classes); the score is the
    one serving logs: the positive-class probability, the top class's probability, or the value. At
    most :data:`REFERENCE_SCORES_MAX` of them (a seeded sample). A version without them (trained
    before they were saved) is scored on ``frame``, its training data, with a warning that this
    in-sample reference reads a close fit as drift; None when neither is possible.
    """
    sha = (getattr(mv, "details", None) or {}).get("oof_sha256")
    if not sha:
        why = "it was trained before out-of-fold scores were saved"
    else:
        try:
            values = _oof_score(pl.read_parquet(io.BytesIO(registry.artifacts.get_bytes(sha))))
        except (HeadraceError, OSError, pl.exceptions.PolarsError) as exc:
            why = f"its out-of-fold scores could not be read ({exc})"
        else:
            if values is not None and values.len() > 0:
                if values.len() > REFERENCE_SCORES_MAX:
                    values = values.sample(REFERENCE_SCORES_MAX, seed=0)
                return ReferenceScores(values.alias("score"), "out_of_fold")
            why = "its out-of-fold table holds no finite score"
    ref = getattr(mv, "ref", f"{getattr(mv, 'name', '?')}@{getattr(mv, 'version', '?')}")
    if frame is None or frame.height == 0:
        log.warning("prediction drift of %s skipped: %s and there is no training data to score", ref, why)
        return None
    values = _in_sample_scores(registry, mv, frame)
    if values is None:
        return None
    note = f"in-sample scores: {why}; retrain it to compare live scores with out-of-fold ones"
    log.warning("prediction drift of %s compares with %s", ref, note)
    return ReferenceScores(values, "in_sample", note)


def _oof_score(oof: pl.DataFrame) -> pl.Series | None:
    """The served score of each out-of-fold row (what the prediction log's ``score`` holds)."""
    if "prediction" in oof.columns:
        values = oof["prediction"].cast(pl.Float64)
    else:
        probabilities = [c for c in oof.columns if c.startswith("p_") and c[2:].isdigit()]
        if not probabilities:
            return None
        values = oof.select(pl.max_horizontal(probabilities).cast(pl.Float64)).to_series()
    return values.filter(values.is_finite())


def _in_sample_scores(registry: Any, mv: Any, frame: pl.DataFrame) -> pl.Series | None:
    """The version's scores on its own training rows (the reference of versions without out-of-fold
    scores)."""
    try:
        _, model = registry.load(mv.name, mv.version)
        if mv.task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
            score = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
            return pl.Series("score", score)
        if mv.task == "regression":
            return pl.Series("score", [float(v) for v in model.predict(frame).predictions])
    except HeadraceError as exc:
        log.warning("prediction drift of %s skipped: %s", mv.ref, exc)
    return None


# -- helpers ----------------------------------------------------------------------------------------


def _is_numeric_dtype(dtype: pl.DataType) -> bool:
    return bool(dtype.is_numeric()) and dtype != pl.Boolean


def _is_numeric_values(values: Any) -> bool:
    if isinstance(values, pl.Series):
        return _is_numeric_dtype(values.dtype)
    array = np.asarray(values)
    return array.dtype.kind in "iuf"


def _clean_numeric(values: Any) -> np.ndarray:
    if isinstance(values, pl.Series):
        values = values.cast(pl.Float64).to_numpy()
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _null_share(series: pl.Series) -> float:
    if series.len() == 0:
        return 0.0
    nulls = series.null_count()
    if series.dtype.is_float():
        nulls += int(series.is_nan().sum() or 0)
    return nulls / series.len()


def _need_rows(reference: np.ndarray, live: np.ndarray, name: str = "feature") -> None:
    if reference.size == 0 or live.size == 0:
        which = "reference" if reference.size == 0 else "live window"
        raise DataError(
            f"drift: {name!r} has no non-null values in the {which}",
            hint="wait for more traffic, or drop the feature from the comparison",
        )


def _category_shares(reference: Any, live: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    ref = np.asarray(reference).astype(str)
    cur = np.asarray(live).astype(str)
    _need_rows(ref, cur)
    categories = sorted(set(ref.tolist()) | set(cur.tolist()))
    index = {c: i for i, c in enumerate(categories)}
    ref_counts = np.bincount([index[c] for c in ref.tolist()], minlength=len(categories)).astype(float)
    live_counts = np.bincount([index[c] for c in cur.tolist()], minlength=len(categories)).astype(float)
    return categories, ref_counts / ref.size, live_counts / cur.size


def _chi_square(ref_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity: the statistic and its p-value (1.0 when undefined)."""
    table = np.vstack([ref_counts, live_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def _edge_labels(edges: np.ndarray) -> list[str]:
    bounds = ["-inf", *[f"{e:.4g}" for e in edges], "inf"]
    return [f"({bounds[i]}, {bounds[i + 1]}]" for i in range(len(bounds) - 1)]
