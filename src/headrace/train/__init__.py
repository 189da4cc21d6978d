"""Tabular training: features, estimators, validation, metrics, thresholds, imbalance, reports.

Imports here stay light (no training code runs at import): ``headrace.train.tabular`` is loaded by
the registry to read a model back, and serving should not pay for the trainer.
"""

from __future__ import annotations
