"""Trust in transcribed values on real sheets: hand-checked truth for 40 ALA sheets
(tests/data/ala_label_truth.csv, read off the images by eye) against ../shared/data (skips when
it is absent). The full measurement is benchmarks/label_trust.py."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

from herbscan.labels.scoring import exact

TRUTH = Path(__file__).resolve().parent / "data" / "ala_label_truth.csv"
FIELDS = ("country", "stateProvince", "recordedBy", "eventDate", "catalogNumber")


def truth_rows() -> list[dict]:
    with TRUTH.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def right(term: str, value: str, truth: str) -> bool:
    """As benchmarks/label_trust.py compares."""
    if not truth:
        return not value
    if term in ("country", "stateProvince"):

        def place(s):
            return re.sub(r"\s+territory$", "", " ".join(s.split()).casefold())

        return place(value) == place(truth)
    if term == "recordedBy":

        def people(s):
            return re.sub(r"[\W_\d]+", "", re.sub(r"(?i)&|\band\b|\bet\b", " ", s)).casefold()

        return people(value) == people(truth)
    return exact(term, value, truth)


def test_truth_names_sheets_of_the_ala_manifest(shared_data):
    rows = truth_rows()
    assert len(rows) >= 30 and list(rows[0]) == ["file", *FIELDS]
    with (shared_data / "ala-lycopodiaceae" / "manifest.csv").open(newline="") as f:
        catalog = {r["file"]: r["catalog_number"] for r in csv.DictReader(f)}
    assert {r["file"] for r in rows} <= set(catalog)
    # the catalogue numbers read off the stamps and labels are the collection's
    assert all(exact("catalogNumber", r["catalogNumber"], catalog[r["file"]]) for r in rows)


@pytest.fixture
def tesseract():
    from herbscan.labels.ocr import OcrError, find_tesseract

    try:
        find_tesseract()
    except OcrError:
        if os.environ.get("HERBSCAN_REQUIRE_TESSERACT"):
            pytest.fail("tesseract is required here (HERBSCAN_REQUIRE_TESSERACT is set)")
        pytest.skip("tesseract not installed (apt install tesseract-ocr tesseract-ocr-eng)")


# a supply house's printed address (Illinois), a ruler's MADE IN GERMANY under a Yukon label
# with its herbarium's address (Provo, Utah), and an unread stamp beside a barcode
SHEETS = ("images/351542.jpg", "images/353559.jpg", "images/351485.jpg")


def test_wrong_values_on_imprint_and_barcode_sheets_go_to_review(shared_data, tesseract, tmp_path):
    from herbscan.labels.transcribe import transcribe

    folder = shared_data / "ala-lycopodiaceae"
    truth = {r["file"]: r for r in truth_rows() if r["file"] in SHEETS}
    out = tmp_path / "labels.csv"
    transcribe(
        [{"path": str(folder / f), "specimen_id": Path(f).stem} for f in SHEETS],
        out,
        workers=2,
        catalog="stamp",
        progress=False,
    )
    with out.open(newline="", encoding="utf-8") as f:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    unchecked = []
    for file, t in truth.items():
        row = rows[Path(file).name]
        conf = json.loads(row["fieldConfidence"])
        review = row["needsReview"].split("|")
        for term in FIELDS:
            wrong = row[term] and not right(term, row[term], t[term])
            if wrong and (term not in review or conf[term] >= 0.6):
                unchecked.append((file, term, row[term], conf[term]))
    assert unchecked == []
    assert rows["351485.jpg"]["catalogNumber"] == "H1178981"  # the barcode, stamp unread
    assert "catalogNumber" in rows["351485.jpg"]["needsReview"].split("|")
    assert (rows["353559.jpg"]["country"], rows["353559.jpg"]["stateProvince"]) == (
        "Canada",
        "Yukon Territory",
    )
    assert rows["351542.jpg"]["stateProvince"] == ""
