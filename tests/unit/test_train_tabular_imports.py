"""Loading a tabular model does not import torch (skops would, through scikit-learn's array-API shim),
and skops trusts the same estimators whether torch was kept out or imported first."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
{first}
import headrace.train.tabular
from skops.io._trusted_types import SKLEARN_ESTIMATOR_TYPE_NAMES
print(json.dumps({{"torch": "torch" in sys.modules, "trusted": sorted(SKLEARN_ESTIMATOR_TYPE_NAMES)}}))
"""


def _probe(first: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(first=first)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed: nothing to keep out"
)
def test_tabular_models_load_without_torch_and_skops_trusts_the_same_types():
    kept_out = _probe("")
    with_torch = _probe("import torch")
    assert kept_out["torch"] is False and with_torch["torch"] is True
    assert kept_out["trusted"] == with_torch["trusted"] and len(kept_out["trusted"]) > 100
