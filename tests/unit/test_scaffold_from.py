"""``headrace init DIR --from PATH...``: the scaffold's rules, read off the data, and an ingest of the
scaffolded project that quarantines nothing."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from conftest import require_data
from headrace import scaffold_from as scaffold_module
from headrace.config import load_project
from headrace.errors import DataError, UsageError
from headrace.scaffold_from import SCHEMA_URL, scaffold_from, scaffold_project_from

# -- helpers ------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``headrace ARGS`` through the console script's ``main``, in this process."""
    from headrace.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def ingest(capsys: pytest.CaptureFixture[str], project: Path) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "--project", str(project), "ingest", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"], doc
    return doc


def columns(doc: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    return doc["sources"][source]["columns"]


def uncomment_model(text: str) -> str:
    """The scaffold with its model enabled, as its comment says: the '# ' before each line from
    'models:' down removed."""
    lines = text.splitlines()
    start = lines.index("# models:")
    return "\n".join([*lines[:start], *(line[2:] for line in lines[start:])]) + "\n"


def uncommented_model(text: str) -> dict[str, Any]:
    return yaml.safe_load(uncomment_model(text))["models"]


def write_customers(path: Path, rows: int = 60) -> None:
    lines = ["customer_id,zip,plan,Churn,amount,signup,age,note"]
    for i in range(rows):
        zip_code = ["01234", "02139", "10001", "94105"][i % 4]
        plan = ["Basic", "Pro", "Team"][i % 3]
        churn = "Yes" if i % 5 == 0 else "No"
        amount = "" if i % 7 == 0 else f"{10 + i * 1.25:.2f}"
        signup = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"
        note = f'"free text, row {i}"'
        lines.append(f"C{i:04d},{zip_code},{plan},{churn},{amount},{signup},{18 + i % 50},{note}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- CSV ----------------------------------------------------------------------------------------------


def test_csv_scaffold_types_rules_drop_and_clean_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "raw" / "customers.csv"
    data.parent.mkdir()
    write_customers(data)
    project = tmp_path / "p"
    written = scaffold_from([str(data)], project, name="shop", force=False)
    text = written.read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={SCHEMA_URL}"
    assert "headrace schema > headrace.schema.json" in text.splitlines()[1]

    doc = yaml.safe_load(text)
    assert doc["project"] == "shop"
    source = doc["sources"]["customers"]
    assert source["path"] == "../raw/customers.csv" and source["dataset"] == "customers"
    assert "csv" not in source and "format" not in source
    cols = columns(doc, "customers")
    assert cols["customer_id"] == {"type": "string", "required": True, "unique": True}
    assert cols["zip"] == {
        "type": "string",
        "required": True,
        "allowed": ["01234", "02139", "10001", "94105"],
    }
    assert cols["plan"]["allowed"] == ["Basic", "Pro", "Team"]
    assert cols["Churn"] == {"type": "string", "required": True, "allowed": ["No", "Yes"]}  # strings
    assert cols["amount"] == {"type": "float"}  # blanks: not required
    assert cols["signup"] == {"type": "date", "format": "%Y-%m-%d", "required": True}
    assert cols["age"] == {"type": "int", "required": True}
    assert cols["note"] == {"type": "string", "required": True}  # free text: no allowed, no unique
    assert re.search(r"age: \{.*\}\s+# range 18 \.\. 67", text)
    assert re.search(r"amount: \{.*\}\s+# range .*9 missing", text)
    assert "models" not in doc  # commented out: its target and task are guesses

    model = uncommented_model(text)["customers"]
    assert model["target"] == "Churn" and model["task"] == "classification"
    assert model["features"]["drop"] == ["customer_id", "note"]
    assert model["validation"]["metric"] == "roc_auc"
    (project / "with-model.yaml").write_text(uncomment_model(text))
    spec = load_project(project / "with-model.yaml").models["customers"]
    from headrace.train.run import check_spec

    assert len(check_spec("customers", spec)) == 2  # what 'headrace train' checks first

    result = ingest(capsys, project)
    run = result["runs"][0]
    assert run["rows_read"] == 60 and run["rows_committed"] == 60 and run["rows_quarantined"] == 0


def test_semicolon_csv_latin1_and_headerless_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    semi = tmp_path / "sales.csv"
    rows = ["Région;Umsatz;Menge;Kommentar"]
    rows += [f"{['Nord', 'Süd'][i % 2]};{i},5;{i};a, b and c {i}" for i in range(30)]
    semi.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    raw = tmp_path / "ratings.data"
    raw.write_text("".join(f"{i}\t{i % 7}\t{1 + i % 5}\t88125{i:04d}\n" for i in range(40)))

    project = tmp_path / "p"
    doc = yaml.safe_load(scaffold_from([str(semi), str(raw)], project).read_text(encoding="utf-8"))
    sales = doc["sources"]["sales"]
    assert sales["csv"] == {"encoding": "cp1252", "delimiter": ";"}
    assert columns(doc, "sales")["Région"] == {"type": "string", "required": True, "allowed": ["Nord", "Süd"]}
    assert columns(doc, "sales")["Umsatz"]["type"] == "string"  # decimal commas: text, as they stand
    assert columns(doc, "sales")["Menge"]["type"] == "int"
    ratings = doc["sources"]["ratings_data"]
    assert ratings["format"] == "csv" and ratings["csv"] == {"delimiter": "\t", "header": False}
    assert list(columns(doc, "ratings_data")) == ["column_1", "column_2", "column_3", "column_4"]
    assert all(c["type"] == "int" for c in columns(doc, "ratings_data").values())

    runs = ingest(capsys, project)["runs"]
    assert [(r["rows_committed"], r["rows_quarantined"]) for r in runs] == [(30, 0), (40, 0)]


def test_glob_is_one_source_keys_unique_across_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = tmp_path / "data" / "orders"
    folder.mkdir(parents=True)
    for part in range(2):
        lines = ["order_id,total,status"]
        lines += [f"O{part}{i:03d},{i * 2.5},{['open', 'shipped'][i % 2]}" for i in range(25)]
        (folder / f"orders-{part}.csv").write_text("\n".join(lines) + "\n")
    result = scaffold_project_from(["data/orders/orders-*.csv"], tmp_path, cwd=tmp_path)
    doc = yaml.safe_load(result.path.read_text())
    source = doc["sources"]["orders"]
    assert source["path"] == "data/orders/orders-*.csv"
    assert columns(doc, "orders")["order_id"] == {"type": "string", "required": True, "unique": True}
    assert result.sources[0].rows == 50 and len(result.sources[0].files) == 2
    runs = ingest(capsys, tmp_path)["runs"]
    assert runs[0]["rows_committed"] == 50 and runs[0]["rows_quarantined"] == 0


def test_gzip_folder_and_a_partial_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "drop"
    folder.mkdir()
    plain = tmp_path / "customers.csv"
    write_customers(plain)
    (folder / "customers.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (folder / "README.md").write_text("# what these files are\n")
    with pytest.raises(UsageError, match=r"README\.md beside csv files"):
        scaffold_from([str(folder)], tmp_path / "p")
    (folder / "README.md").unlink()

    monkeypatch.setattr(scaffold_module, "PROFILE_ROWS", 10)  # past it: types only
    result = scaffold_project_from([str(folder)], tmp_path / "p")
    doc = yaml.safe_load(result.path.read_text())
    assert result.sources[0].truncated and doc["sources"]["drop"]["path"] == "../drop"
    cols = columns(doc, "drop")
    assert cols["customer_id"] == {"type": "string"} and cols["Churn"] == {"type": "string"}
    assert "only the first 60 rows were read" in result.path.read_text()  # whole chunks
    runs = ingest(capsys, tmp_path / "p")["runs"]
    assert runs[0]["rows_committed"] == 60 and runs[0]["rows_quarantined"] == 0


# -- JSON lines, JSON, Parquet ------------------------------------------------------------------------


def test_jsonl_json_and_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    events = tmp_path / "events.jsonl"
    with events.open("w") as f:
        for i in range(30):
            record: dict[str, Any] = {"event_id": i + 100, "kind": ["click", "view"][i % 2], "ok": i % 3 == 0}
            record["value"] = None if i % 4 == 0 else i / 3
            record["tags"] = ["a", "b"][: i % 3]
            record["at"] = f"2024-05-{1 + i % 28:02d}T10:{i % 60:02d}:00"
            f.write(json.dumps(record) + "\n")
    wrapped = tmp_path / "api.json"
    wrapped.write_text(
        json.dumps({"meta": {"n": 3}, "data": {"items": [{"a": i, "b": "x"} for i in range(3)]}})
    )
    frame = pl.DataFrame(
        {"user_id": list(range(20)), "score": [i / 7 for i in range(20)], "grp": ["a", "b"] * 10}
    )
    frame.write_parquet(tmp_path / "users.parquet")

    project = tmp_path / "p"
    doc = yaml.safe_load(
        scaffold_from([str(events), str(wrapped), str(tmp_path / "users.parquet")], project).read_text()
    )
    ev = columns(doc, "events")
    assert ev["event_id"] == {"type": "int", "required": True, "unique": True}
    assert ev["kind"] == {"type": "string", "required": True, "allowed": ["click", "view"]}
    assert ev["ok"] == {"type": "bool", "required": True}
    assert ev["value"] == {"type": "float"}
    assert ev["at"] == {"type": "datetime", "required": True}
    assert ev["tags"] == {}  # a list: passed through as it is
    assert doc["sources"]["api"]["json"] == {"records": "data.items"}
    assert columns(doc, "users")["user_id"] == {"type": "int", "required": True, "unique": True}
    assert columns(doc, "users")["grp"]["allowed"] == ["a", "b"]

    runs = ingest(capsys, project)["runs"]
    assert [(r["rows_committed"], r["rows_quarantined"]) for r in runs] == [(30, 0), (3, 0), (20, 0)]


# -- names that YAML would misread ----------------------------------------------------------------------


def test_awkward_column_names_and_values_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    names = ["my col", "Yes", "a: b", "#hash", "null", "1e3", "x,y", "[z]", "count"]
    header = ",".join(f'"{n}"' for n in names)
    values = ["On", "Off", "null", "true", "~", "- x", "a # b", "${HOME}"]
    lines = [header]
    for i in range(24):
        lines.append(",".join(f'"{values[(i + j) % 2 + (j % 4) * 2]}"' for j in range(len(names))))
    data = tmp_path / "odd names.csv"
    data.write_text("\n".join(lines) + "\n")
    project = tmp_path / "p"
    doc = yaml.safe_load(scaffold_from([str(data)], project).read_text())
    assert "odd_names" in doc["sources"]
    cols = columns(doc, "odd_names")
    assert list(cols) == names
    assert cols["my col"]["allowed"] == ["Off", "On"] == cols["null"]["allowed"] == cols["count"]["allowed"]
    assert cols["Yes"] == {"type": "bool"} == cols["1e3"]  # "true", or missing ("null")
    assert cols["a: b"]["allowed"] == ["- x", "~"] == cols["x,y"]["allowed"]
    assert "allowed" not in cols["#hash"]  # ${HOME} would be read as an environment variable
    runs = ingest(capsys, project)["runs"]
    assert runs[0]["rows_committed"] == 24 and runs[0]["rows_quarantined"] == 0


# -- errors and the command ---------------------------------------------------------------------------


def test_errors_are_one_line(tmp_path: Path):
    with pytest.raises(UsageError, match="no file matches"):
        scaffold_from([str(tmp_path / "nope" / "*.csv")], tmp_path / "p")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty file"):
        scaffold_from([str(empty)], tmp_path / "p")
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    scaffold_from([str(data)], tmp_path / "p")
    with pytest.raises(UsageError, match="already exists"):
        scaffold_from([str(data)], tmp_path / "p")
    scaffold_from([str(data)], tmp_path / "p", force=True)
    assert not (tmp_path / "p" / "data").exists()  # no sample data, and the data is not copied


def test_cli_init_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "customers.csv"
    write_customers(data)
    project = tmp_path / "proj"
    code, out, err = run_cli(capsys, "init", str(project), "--from", str(data))
    assert code == 0, err
    assert "customers: 1 file, 60 rows, 8 columns" in out and "headrace ingest" in out
    code, _, err = run_cli(capsys, "init", str(project), "--from", str(data))
    assert code == 2 and "already exists" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "init", str(tmp_path / "q"), "--from", str(tmp_path / "missing.csv"))
    assert code == 2 and "no file matches" in err
    # as a shell expands --from data/*.csv: the paths after the folder join --from
    other = tmp_path / "other.csv"
    other.write_text("k,v\n1,2\n")
    code, out, err = run_cli(capsys, "init", str(tmp_path / "r"), "--from", str(data), str(other))
    assert code == 0, err
    assert set(yaml.safe_load((tmp_path / "r" / "headrace.yaml").read_text())["sources"]) == {
        "customers",
        "other",
    }


# -- the shared data ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_shared_telco_and_housing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    telco = require_data("telco-churn", "Telco-Customer-Churn.csv")
    housing = require_data("california-housing", "housing.csv")
    project = tmp_path / "p"
    text = scaffold_from([str(telco), str(housing)], project).read_text()
    doc = yaml.safe_load(text)
    t = columns(doc, "Telco-Customer-Churn")
    assert t["tenure"] == {"type": "int", "required": True}
    assert t["TotalCharges"] == {"type": "float"}  # 11 blanks
    assert t["SeniorCitizen"]["type"] == "int"
    assert t["customerID"] == {"type": "string", "required": True, "unique": True}
    assert t["Contract"]["allowed"] == ["Month-to-month", "One year", "Two year"]
    h = columns(doc, "housing")
    assert h["median_house_value"] == {"type": "float", "required": True}
    assert h["total_bedrooms"] == {"type": "float"}
    assert h["ocean_proximity"]["allowed"] == ["<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN"]
    model = uncommented_model(text)["Telco-Customer-Churn"]
    assert model["target"] == "Churn" and model["features"]["drop"] == ["customerID"]

    runs = ingest(capsys, project)["runs"]
    assert [(r["rows_committed"], r["rows_quarantined"]) for r in runs] == [(7043, 0), (20640, 0)]
