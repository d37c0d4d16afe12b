import numpy as np

from herbscan import cache as cache_mod
from herbscan.cache import SheetCache, load_sheets


def test_load_sheets_decodes_once_and_records_bad_files(tiny_collection, tmp_path, monkeypatch):
    paths = sorted((tiny_collection / "clean").glob("*.jpg"))[:5]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    calls = []
    real = cache_mod.load_sheet

    def counting(path, size, fit):
        calls.append(path)
        return real(path, size, fit)

    monkeypatch.setattr(cache_mod, "load_sheet", counting)
    items = paths[:2] + [bad] + paths[2:]
    arr, ok, failures = load_sheets(items, 32, cache_dir=tmp_path / "c", workers=1)
    assert arr.shape == (5, 32, 32, 3) and arr.dtype == np.uint8
    assert ok == [0, 1, 3, 4, 5]
    assert len(failures) == 1 and failures[0][0] == str(bad) and str(bad) in failures[0][1]
    n_first = len(calls)
    arr2, ok2, _ = load_sheets(items, 32, cache_dir=tmp_path / "c", workers=1)
    assert np.array_equal(arr, arr2) and ok2 == ok
    assert len(calls) - n_first == 1  # only the bad file is tried again
    # another preprocessing is another key
    arr3, _, _ = load_sheets(paths, 48, cache_dir=tmp_path / "c", workers=1)
    assert arr3.shape == (5, 48, 48, 3)


def test_changed_file_is_a_miss(tiny_collection, tmp_path):
    p = sorted((tiny_collection / "clean").glob("*.jpg"))[0]
    c = SheetCache(tmp_path / "c", 32)
    first = c.load(p)
    assert c.get(p) is not None
    dark = np.zeros((100, 60, 3), np.uint8)
    from PIL import Image

    Image.fromarray(dark).save(p)
    assert c.get(p) is None
    assert c.load(p).max() < first.max()


def test_parallel_matches_serial(tiny_collection, tmp_path):
    paths = sorted(tiny_collection.rglob("*.jpg"))[:10]
    a, _, _ = load_sheets(paths, 32, cache_dir=False, workers=1, progress=False)
    b, _, _ = load_sheets(paths, 32, cache_dir=False, workers=2, progress=False)
    assert np.array_equal(a, b)
