import csv

from herbscan.fileio import neutralise, unneutralise, write_csv


def test_formula_like_cells_are_neutralised_for_people_and_kept_raw_otherwise(tmp_path):
    hostile = ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "＝1+1"]
    plain = ["Smith, J.", "-149.52", "+3", "1e-5", "", "ALA V161227", "a=b"]
    rows = [{"v": v} for v in hostile + plain]
    people, raw = tmp_path / "people.csv", tmp_path / "raw.csv"
    write_csv(people, rows, ["v"])
    write_csv(raw, rows, ["v"], for_people=False)
    with open(people, newline="", encoding="utf-8") as f:
        got = [r["v"] for r in csv.DictReader(f)]
    assert got == ["'" + v for v in hostile] + plain
    with open(raw, newline="", encoding="utf-8") as f:
        assert [r["v"] for r in csv.DictReader(f)] == hostile + plain
    assert [unneutralise(neutralise(v)) for v in hostile + plain] == hostile + plain
    assert neutralise(-1.5) == -1.5 and neutralise(None) is None
