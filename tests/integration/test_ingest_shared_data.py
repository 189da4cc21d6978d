"""The real files in ../shared/data: their known defects are caught, with exact counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require_data
from headrace.config.sources import FileSource
from headrace.ingest.runner import ingest, open_source
from headrace.metadata import Metadata
from headrace.store import Store

pytestmark = pytest.mark.integration

TELCO_COLUMNS = {
    "customerID": {"type": "string", "required": True, "unique": True, "regex": "[0-9]{4}-[A-Z]{5}"},
    "tenure": {"type": "int", "required": True, "min": 0, "max": 120},
    "MonthlyCharges": {"type": "float", "required": True, "min": 0},
    "Contract": {"type": "string", "allowed": ["Month-to-month", "One year", "Two year"]},
    "Churn": {"type": "string", "required": True, "allowed": ["Yes", "No"]},
}


def _ingest(tmp: Path, spec: FileSource):
    store = Store(tmp / "lake")
    meta = Metadata(f"sqlite:///{tmp / 'm.db'}")
    try:
        result = ingest(open_source("s", spec), spec, store=store, meta=meta, source_name="s")
    finally:
        meta.dispose()
    return result, store


@pytest.mark.parametrize("total_rule", ["quarantine", "impute"])
def test_telco_blank_total_charges(tmp_path, total_rule):
    path = require_data("telco-churn", "Telco-Customer-Churn.csv")
    total = {"type": "float", "min": 0}
    total |= {"required": True} if total_rule == "quarantine" else {"impute": {"constant": 0.0}}
    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": str(path),
            "dataset": "telco",
            "cleanse": ["trim_strings", "null_tokens"],
            "columns": {**TELCO_COLUMNS, "TotalCharges": total},
            "row_rules": [{"name": "charges cover tenure", "sql": "tenure = 0 OR TotalCharges > 0"}],
        }
    )
    result, store = _ingest(tmp_path, spec)
    assert result.ok and result.rows_read == 7043
    report = result.batches[0].report
    assert report is not None
    if total_rule == "quarantine":
        assert result.rows_quarantined == 11 and report.failures == {"TotalCharges: required": 11}
        q = store.read("telco__quarantine")
        assert set(q["tenure"]) == {"0"} and set(q["TotalCharges"]) == {" "}  # the original blank
        assert store.read("telco").height == 7032
    else:
        assert result.rows_quarantined == 0 and report.imputed["TotalCharges"]["count"] == 11
        data = store.read("telco")
        assert (
            data.height == 7043 and data.filter(data["TotalCharges"] == 0.0)["tenure"].to_list() == [0] * 11
        )


def test_housing_missing_total_bedrooms(tmp_path):
    path = require_data("california-housing", "housing.csv")
    numeric = {
        c: {"type": "float", "required": True}
        for c in ("longitude", "latitude", "housing_median_age", "total_rooms", "population", "households")
    }
    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": str(path),
            "dataset": "housing",
            "columns": {
                **numeric,
                "total_bedrooms": {"type": "int", "min": 0, "impute": "median"},
                "median_income": {"type": "float", "min": 0},
                "median_house_value": {"type": "float", "min": 0, "max": 500001},
                "ocean_proximity": {
                    "type": "string",
                    "allowed": ["NEAR BAY", "<1H OCEAN", "INLAND", "NEAR OCEAN", "ISLAND"],
                },
            },
        }
    )
    result, store = _ingest(tmp_path, spec)
    assert result.ok and result.rows_read == 20640 and result.rows_quarantined == 0
    report = result.batches[0].report
    assert report is not None and report.imputed["total_bedrooms"]["count"] == 207
    assert report.imputed["total_bedrooms"]["value"] == 435  # the median of the 20,433 known values
    data = store.read("housing")
    assert data["total_bedrooms"].null_count() == 0 and data.height == 20640


def test_no_type_written_each_shared_file_is_typed_by_inference(tmp_path):
    import polars as pl

    telco = require_data("telco-churn", "Telco-Customer-Churn.csv")
    housing = require_data("california-housing", "housing.csv")
    ratings = require_data("movielens-100k", "u.data")
    cases = [
        (
            telco,
            {},
            {
                "customerID": pl.String,
                "SeniorCitizen": pl.Int64,
                "tenure": pl.Int64,
                "MonthlyCharges": pl.Float64,
                "TotalCharges": pl.Float64,
                "Churn": pl.String,
            },
        ),
        (
            housing,
            {},
            {
                "housing_median_age": pl.Float64,
                "total_bedrooms": pl.Float64,
                "median_house_value": pl.Float64,
                "ocean_proximity": pl.String,
            },
        ),
        (
            ratings,
            {"format": "csv", "csv": {"delimiter": "\t", "header": False}},
            {"column_1": pl.Int64, "column_2": pl.Int64, "column_3": pl.Int64, "column_4": pl.Int64},
        ),
    ]
    stores = []
    for i, (path, options, expected) in enumerate(cases):
        spec = FileSource.model_validate({"kind": "file", "path": str(path), "dataset": f"d{i}", **options})
        result, store = _ingest(tmp_path / str(i), spec)
        assert result.ok and result.rows_quarantined == 0, result.error
        schema = store.read(f"d{i}").schema
        assert {c: schema[c] for c in expected} == expected
        stores.append(store)
    # Telco's 11 blank TotalCharges are missing values, not text and not failures
    assert stores[0].read("d0")["TotalCharges"].null_count() == 11
    assert stores[2].read("d2").height == 100_000
