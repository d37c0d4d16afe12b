"""Recipes end to end against a local server: a DwC-A of real-looking images, a fake figshare."""

import csv
import io
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from herbscan.errors import ManifestError
from herbscan.fetch import fetch_dwca, fetch_smithsonian_mercury, fetch_urls
from tests.test_dwca import GBIF_META


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def _jpeg(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)).save(path)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fetch_dwca_filters_caps_and_keeps_provenance(served, tmp_path):
    root, url = served
    occ = ["gbifID\tcatalogNumber\tscientificName\tfamily\tlicense"]
    mm = ["gbifID\tidentifier\tlicense\trightsHolder"]
    for i in range(6):
        fam = "Lycopodiaceae" if i < 4 else "Poaceae"
        occ.append(f"{i}\tV{i}\tTaxon {i}\t{fam}\tCC0")
        _jpeg(root / f"{i}.jpg", i)
        mm.append(f"{i}\t{url}/{i}.jpg\tCC-BY\tHerbarium X")
    mm.append(f"5\t{url}/gone.jpg\tCC-BY\tHerbarium X")  # a second, missing image of V5
    z = tmp_path / "export.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("meta.xml", GBIF_META)
        zf.writestr("occurrence.txt", "\n".join(occ) + "\n")
        zf.writestr("multimedia.txt", "\n".join(mm) + "\n")
    path, problems = fetch_dwca(
        z,
        tmp_path / "data",
        label_col="family",
        filter="family in (Lycopodiaceae, Poaceae)",
        max_per_class=3,
        progress=False,
    )
    rows = _read(path)
    fams = [r["family"] for r in rows]
    assert fams.count("Lycopodiaceae") == 3 and fams.count("Poaceae") == 2
    assert all((tmp_path / "data" / r["path"]).is_file() for r in rows)
    assert {r["license"] for r in rows} == {"CC-BY"} and rows[0]["rightsHolder"] == "Herbarium X"
    assert rows[0]["source_url"].startswith(url)
    allimg, _ = fetch_dwca(z, tmp_path / "all", all_images=True, progress=False)
    assert len(_read(allimg)) == 6 and len(_read(tmp_path / "all" / "failures.csv")) == 1
    with pytest.raises(ManifestError, match="no row has a 'genus'"):
        fetch_dwca(z, tmp_path / "x", label_col="genus", progress=False)


def test_fetch_urls(served, tmp_path):
    root, url = served
    _jpeg(root / "a.jpg", 1)
    (tmp_path / "u.csv").write_text(f"accessURI,stain\n{url}/a.jpg,stained\n{url}/b.jpg,clean\n")
    rows = _read(fetch_urls(tmp_path / "u.csv", tmp_path / "d", progress=False))
    assert [r["stain"] for r in rows] == ["stained"]
    assert "404" in _read(tmp_path / "d" / "failures.csv")[0]["error"]


def _tarball(path, names):
    with tarfile.open(path, "w:gz") as tf:
        for n in names:
            buf = io.BytesIO()
            Image.new("RGB", (20, 30), (200, 190, 170)).save(buf, "JPEG")
            info = tarfile.TarInfo(n)
            info.size = len(buf.getvalue())
            buf.seek(0)
            tf.addfile(info, buf)


def test_fetch_smithsonian_mercury_from_a_fake_figshare(served, tmp_path):
    root, url = served
    _tarball(root / "9355285", ["stained/00012345.jpg", "stained/00012346.jpg"])
    _tarball(root / "9355303", ["unstained/00099999.jpg"])
    size = (root / "9355303").stat().st_size
    m = fetch_smithsonian_mercury(
        tmp_path / "merc", base_url=url, sizes={"unstained": size}, progress=False
    )
    rows = _read(m)
    assert [(r["barcode"], r["stain"]) for r in rows] == [
        ("00012345", "stained"),
        ("00012346", "stained"),
        ("00099999", "unstained"),
    ]
    assert all((tmp_path / "merc" / r["path"]).is_file() for r in rows)
    with pytest.raises(ManifestError, match="expected 5"):
        fetch_smithsonian_mercury(
            tmp_path / "m2", base_url=url, sizes={"unstained": 5}, progress=False
        )
