"""Generated data for the demo, the example project, tests and benchmarks.

``churn`` draws customers whose churn label follows a known logistic model of their features, so a
classifier has real signal to find; ``defects`` plants the kinds of bad rows real exports have
(blank numbers, out-of-range values, unknown categories, duplicate keys, text in number columns), and
returns exactly how many of each it planted so tests can check counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

__all__ = ["CHURN_COLUMNS", "PlantedDefects", "churn", "churn_with_defects"]

CHURN_COLUMNS = [
    "customerID",
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "tenure",
    "PhoneService",
    "InternetService",
    "OnlineSecurity",
    "TechSupport",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
    "Churn",
]

_CONTRACTS = ["Month-to-month", "One year", "Two year"]
_INTERNET = ["DSL", "Fiber optic", "No"]
_PAYMENT = ["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"]


def churn(n: int, seed: int = 0, *, id_offset: int = 0, shift: float = 0.0) -> pl.DataFrame:
    """``n`` clean churn-like customers; ``shift`` moves the tenure and charges distributions."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(3, size=n, p=[0.55, 0.21, 0.24])
    internet = rng.choice(3, size=n, p=[0.34, 0.44, 0.22])
    senior = (rng.random(n) < 0.16).astype(np.int64)
    partner = rng.random(n) < 0.48
    dependents = rng.random(n) < 0.3
    tenure = np.clip(rng.gamma(1.2 + contract * 1.5, 12.0, size=n) * (1.0 - 0.5 * shift), 0, 72).astype(
        np.int64
    )
    security = np.where(internet == 2, 2, (rng.random(n) < 0.35).astype(np.int64))
    support = np.where(internet == 2, 2, (rng.random(n) < 0.35).astype(np.int64))
    paperless = rng.random(n) < 0.59
    payment = rng.choice(4, size=n, p=[0.34, 0.23, 0.22, 0.21])
    base = np.array([45.0, 80.0, 20.0])[internet]
    monthly = np.round(base + rng.normal(0, 8, size=n) + 10 * shift, 2).clip(18.25, 130)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, size=n), 2)
    logit = (
        -1.2
        + 1.1 * (contract == 0)
        - 1.2 * (contract == 2)
        + 0.8 * (internet == 1)
        - 0.035 * tenure
        + 0.012 * (monthly - 60)
        + 0.35 * senior
        + 0.45 * (payment == 0)
        - 0.4 * (security == 1)
        - 0.35 * (support == 1)
        + 0.25 * paperless
        - 0.15 * partner
    )
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    yes_no = np.array(["No", "Yes"])
    addon = np.array(["No", "Yes", "No internet service"])
    return pl.DataFrame(
        {
            "customerID": [f"C{id_offset + i:08d}" for i in range(n)],
            "gender": np.array(["Female", "Male"])[rng.integers(0, 2, size=n)],
            "SeniorCitizen": senior,
            "Partner": yes_no[partner.astype(int)],
            "Dependents": yes_no[dependents.astype(int)],
            "tenure": tenure,
            "PhoneService": yes_no[(rng.random(n) < 0.9).astype(int)],
            "InternetService": np.array(_INTERNET)[internet],
            "OnlineSecurity": addon[security],
            "TechSupport": addon[support],
            "Contract": np.array(_CONTRACTS)[contract],
            "PaperlessBilling": yes_no[paperless.astype(int)],
            "PaymentMethod": np.array(_PAYMENT)[payment],
            "MonthlyCharges": monthly,
            "TotalCharges": total,
            "Churn": yes_no[churned.astype(int)],
        }
    )


@dataclass
class PlantedDefects:
    """Row positions (0-based, in the returned frame) of each kind of planted defect."""

    blank_total: list[int] = field(default_factory=list)
    negative_tenure: list[int] = field(default_factory=list)
    unknown_contract: list[int] = field(default_factory=list)
    text_in_number: list[int] = field(default_factory=list)
    duplicate_id: list[int] = field(default_factory=list)

    def rejected_rows(self) -> set[int]:
        """Rows a rule set with range, allowed-values, type and unique-key rules must reject."""
        return (
            set(self.negative_tenure)
            | set(self.unknown_contract)
            | set(self.text_in_number)
            | set(self.duplicate_id)
        )


def churn_with_defects(
    n: int, seed: int = 0, rate: float = 0.02, *, id_offset: int = 0
) -> tuple[pl.DataFrame, PlantedDefects]:
    """``n`` customers as strings (as read from a CSV), about ``rate`` of them defective.

    Each defective row has exactly one defect. Blank TotalCharges is a defect that cleansing can fix
    (imputation); the others must be quarantined.
    """
    clean = churn(n, seed, id_offset=id_offset)
    frame = clean.with_columns(pl.all().cast(pl.String))
    rng = np.random.default_rng(seed + 1)
    count = round(n * rate)
    rows = rng.choice(n, size=min(count, n), replace=False) if count else np.array([], dtype=int)
    kinds = rng.integers(0, 5, size=len(rows))
    planted = PlantedDefects()
    used = set(rows.tolist())
    columns = {c: frame[c].to_list() for c in frame.columns}
    for row, kind in zip(rows.tolist(), kinds.tolist(), strict=True):
        if kind == 0:
            columns["TotalCharges"][row] = " "
            planted.blank_total.append(row)
        elif kind == 1:
            columns["tenure"][row] = str(-int(rng.integers(1, 50)))
            planted.negative_tenure.append(row)
        elif kind == 2:
            columns["Contract"][row] = "Three year"
            planted.unknown_contract.append(row)
        elif kind == 3:
            columns["MonthlyCharges"][row] = "n/a-" + str(int(rng.integers(0, 99)))
            planted.text_in_number.append(row)
        else:
            source = int(rng.integers(0, n))
            while source in used:
                source = int(rng.integers(0, n))
            used.add(source)
            # a later row repeating an earlier customer's id: the second occurrence is the duplicate
            columns["customerID"][row] = columns["customerID"][source]
            planted.duplicate_id.append(max(row, source))
            if source > row:  # keep "the later one is the duplicate" true by swapping the rows' ids
                columns["customerID"][row], columns["customerID"][source] = (
                    f"C{id_offset + row:08d}",
                    f"C{id_offset + row:08d}",
                )
                planted.duplicate_id[-1] = source
    for key in planted.__dataclass_fields__:
        getattr(planted, key).sort()
    return pl.DataFrame(columns), planted
