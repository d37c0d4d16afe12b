import csv
from collections import defaultdict

import pytest

from herbscan.errors import ManifestError, ParameterError
from herbscan.manifest import read_source, split, split_manifest


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def _specimen_manifest(tmp_path, n_per_class=(30, 20, 10), images_per_specimen=2):
    rows = []
    for c, n in zip("ABC", n_per_class):
        for s in range(n):
            for k in range(images_per_specimen):
                rows.append(
                    {
                        "file": f"img/{c}{s}_{k}.jpg",
                        "taxon": c,
                        "barcode": f"{c}{s:04d}",
                        "note": "x",
                    }
                )
    (tmp_path / "img").mkdir(exist_ok=True)
    for r in rows:
        (tmp_path / r["file"]).touch()  # split checks that images exist, not their content
    return _write_csv(tmp_path / "m.csv", rows)


def test_folder_source(tiny_collection):
    m = read_source(tiny_collection)
    assert len(m) == 28 and sorted(set(m.labels())) == ["clean", "contaminated"]
    assert all(p.is_file() for p in m.paths())


def test_split_grouped_stratified_deterministic(tmp_path):
    src = _specimen_manifest(tmp_path)
    out, counts = split(
        src,
        tmp_path / "out" / "s.csv",
        label_col="taxon",
        group_col="barcode",
        path_col="file",
        seed=3,
    )
    rows = _read(out)
    assert len(rows) == 120
    # every input column is kept, herbscan's columns are added
    assert {"file", "taxon", "barcode", "note", "split", "path", "label", "specimen_id"} <= set(
        rows[0]
    )
    by_specimen = defaultdict(set)
    for r in rows:
        by_specimen[r["barcode"]].add(r["split"])
    assert all(len(s) == 1 for s in by_specimen.values())
    # 70/20/10 of specimens per class (30 → 21/6/3), images are 2 per specimen
    assert counts["A"] == {"train": 42, "validation": 12, "test": 6}
    assert counts["C"] == {"train": 14, "validation": 4, "test": 2}
    # paths are rewritten relative to the output's folder and still point at the same file
    assert rows[0]["path"] == str((tmp_path / rows[0]["file"]).resolve().as_posix())
    out2, _ = split(
        src, tmp_path / "s2.csv", label_col="taxon", group_col="barcode", path_col="file", seed=3
    )
    assert [r["split"] for r in _read(out2)] == [r["split"] for r in rows]
    out3, _ = split(
        src, tmp_path / "s3.csv", label_col="taxon", group_col="barcode", path_col="file", seed=4
    )
    assert [r["split"] for r in _read(out3)] != [r["split"] for r in rows]


def test_split_output_trains_without_column_flags(tmp_path):
    src = _specimen_manifest(tmp_path)
    out, _ = split(src, tmp_path / "s.csv", label_col="taxon", group_col="barcode", path_col="file")
    m = read_source(out)
    assert m.label_col == "label" and m.path_col == "path" and m.group_col == "specimen_id"
    assert set(m.labels()) == {"A", "B", "C"}


def test_tsv_and_missing_columns(tmp_path):
    rows = [{"path": "a.jpg", "label": "x"}, {"path": "b.jpg", "label": "y"}]
    tsv = _write_csv(tmp_path / "m.tsv", rows, delimiter="\t")
    m = read_source(tsv)
    assert m.paths()[0] == tmp_path.resolve() / "a.jpg"
    with pytest.raises(ManifestError, match="no column 'genus'.*--label-col"):
        read_source(tsv, label_col="genus")
    nolabel = _write_csv(tmp_path / "n.csv", [{"file": "a.jpg", "kind": "x"}])
    with pytest.raises(ManifestError, match="pass --label-col"):
        read_source(nolabel)


def test_empty_label_and_empty_class_folder(tmp_path, tiny_collection):
    bad = _write_csv(
        tmp_path / "b.csv", [{"path": "a.jpg", "label": "x"}, {"path": "b.jpg", "label": ""}]
    )
    with pytest.raises(ManifestError, match="empty label 'label' on line\\(s\\) 3"):
        read_source(bad)
    (tiny_collection / "unknown").mkdir()
    with pytest.raises(ManifestError, match="unknown hold no images"):
        read_source(tiny_collection)


def test_rare_classes(tmp_path):
    src = _specimen_manifest(tmp_path, n_per_class=(10, 10, 2), images_per_specimen=1)
    m = read_source(src, label_col="taxon", group_col="barcode", path_col="file")
    with pytest.raises(ManifestError, match="class 'C' has 2 specimen"):
        split_manifest(m)
    with pytest.warns(UserWarning, match="kept in train only"):
        s = split_manifest(m, rare="train")
    assert {r["split"] for r in s.rows if r["taxon"] == "C"} == {"train"}
    with pytest.warns(UserWarning, match="dropped"):
        s = split_manifest(m, rare="drop")
    assert "C" not in set(s.labels())


def test_bad_ratios(tmp_path):
    m = read_source(_specimen_manifest(tmp_path), label_col="taxon", path_col="file")
    with pytest.raises(ParameterError, match="sum to 1"):
        split_manifest(m, ratios=(0.5, 0.2, 0.1))
    with pytest.raises(ParameterError, match="rare must be one of"):
        split_manifest(m, rare="keep")


def test_duplicates_missing_files_semicolons_and_windows_paths(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / "img" / name).touch()
    dup = _write_csv(
        tmp_path / "dup.csv",
        [
            {"file": f"img/{n}.jpg", "label": lab, "barcode": b}
            for n, lab, b in (
                ("a", "x", "1"),
                ("b", "x", "2"),
                ("c", "y", "3"),
                ("d", "y", "4"),
                ("a", "x", "9"),
            )
        ],
    )
    with pytest.raises(ManifestError, match="listed more than once: .*a.jpg \\(lines 2 and 6"):
        split_manifest(read_source(dup, path_col="file", group_col="barcode"), ratios=(1, 0, 0))
    gone = _write_csv(tmp_path / "gone.csv", [{"file": "nowhere/a.jpg", "label": "x"}])
    with pytest.raises(ManifestError, match="none of the 1 image paths exists"):
        split_manifest(read_source(gone, path_col="file"), ratios=(1, 0, 0))
    (tmp_path / "semi.csv").write_text("file;label\nimg\\a.jpg; x\nimg\\c.jpg;y\n")
    m = read_source(tmp_path / "semi.csv", path_col="file")
    assert m.paths()[0] == tmp_path.resolve() / "img" / "a.jpg"  # backslashes read as folders
    assert m.labels() == ["x", "y"]  # stray spaces around labels do not make new classes


def test_read_inputs_takes_a_folder_a_list_or_one_image(tmp_path):
    from herbscan.manifest import read_inputs

    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"")
    rows = read_inputs(tmp_path).rows
    assert [r["specimen_id"] for r in rows] == ["a", "b"]
    rows = read_inputs(tmp_path / "a.jpg").rows  # one sheet; its decoding is checked later
    assert rows == [{"path": str(tmp_path / "a.jpg"), "specimen_id": "a"}]
    listing = tmp_path / "list.txt"
    listing.write_text("# sheets\na.jpg\n\nb.png\n", encoding="utf-8")
    assert [r["path"] for r in read_inputs(listing)[0]] == [
        str(tmp_path / "a.jpg"),
        str(tmp_path / "b.png"),
    ]
    listing.write_bytes("Herbier Genève/é.jpg\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="list.txt: not UTF-8 text"):
        read_inputs(listing)
    with pytest.raises(ManifestError, match="no such file or folder"):
        read_inputs(tmp_path / "missing")


def test_fetch_split_and_tiles_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, herbscan.fetch, herbscan.manifest, herbscan.tiles, herbscan.tileindex; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
