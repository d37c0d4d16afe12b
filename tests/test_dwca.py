"""Darwin Core archives made in the test: GBIF (tab, no quotes) and Symbiota (CSV) layouts."""

import zipfile

import pytest

from herbscan.dwca import read_dwca
from herbscan.errors import ManifestError

GBIF_META = """<?xml version="1.0" encoding="UTF-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="metadata.xml">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy=""
        ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0" />
    <field index="1" term="http://rs.tdwg.org/dwc/terms/catalogNumber"/>
    <field index="2" term="http://rs.tdwg.org/dwc/terms/scientificName"/>
    <field index="3" term="http://rs.tdwg.org/dwc/terms/family"/>
    <field index="4" term="http://purl.org/dc/terms/license"/>
    <field term="http://rs.tdwg.org/dwc/terms/institutionCode" default="ALA"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n"
             fieldsEnclosedBy="" ignoreHeaderLines="1"
             rowType="http://rs.gbif.org/terms/1.0/Multimedia">
    <files><location>multimedia.txt</location></files>
    <coreid index="0" />
    <field index="1" term="http://purl.org/dc/terms/identifier"/>
    <field index="2" term="http://purl.org/dc/terms/license"/>
    <field index="3" term="http://purl.org/dc/terms/rightsHolder"/>
  </extension>
</archive>
"""

SYMBIOTA_META = """<?xml version="1.0"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/">
  <core encoding="UTF-8" fieldsTerminatedBy="," linesTerminatedBy="\\n" fieldsEnclosedBy='"'
        ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
    <files><location>occurrences.csv</location></files>
    <id index="0"/>
    <field index="0" term="http://rs.tdwg.org/dwc/terms/id"/>
    <field index="1" term="http://rs.tdwg.org/dwc/terms/catalogNumber"/>
    <field index="2" term="http://rs.tdwg.org/dwc/terms/recordedBy"/>
    <field index="3" term="http://rs.tdwg.org/dwc/terms/genus"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="," linesTerminatedBy="\\n"
             fieldsEnclosedBy='"' ignoreHeaderLines="1"
             rowType="http://rs.tdwg.org/ac/terms/Multimedia">
    <files><location>images.csv</location></files>
    <coreid index="0"/>
    <field index="1" term="http://rs.tdwg.org/ac/terms/accessURI"/>
    <field index="2" term="http://purl.org/dc/terms/rights"/>
  </extension>
</archive>
"""


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_gbif_archive_joins_media_to_occurrences(tmp_path):
    occ = (
        "gbifID\tcatalogNumber\tscientificName\tfamily\tlicense\n"
        "1\tALA V1\tLycopodium annotinum L.\tLycopodiaceae\tCC-BY\n"
        "2\tALA V2\tHuperzia selago\tLycopodiaceae\tCC0\n"
        "3\tALA V3\tno image here\tLycopodiaceae\tCC0\n"
        "4\tbroken row\n"
    )
    mm = (
        "gbifID\tidentifier\tlicense\trightsHolder\n"
        "1\thttp://127.0.0.1/a.jpg\tCC-BY-NC\tUniversity of Alaska\n"
        "1\thttp://127.0.0.1/a2.jpg\t\t\n"
        "2\thttp://127.0.0.1/b.jpg\t\t\n"
        "9\thttp://127.0.0.1/orphan.jpg\t\t\n"
    )
    z = _zip(
        tmp_path / "gbif.zip", {"meta.xml": GBIF_META, "occurrence.txt": occ, "multimedia.txt": mm}
    )
    rows, problems = read_dwca(z)
    assert [r["url"] for r in rows] == [
        "http://127.0.0.1/a.jpg",
        "http://127.0.0.1/a2.jpg",
        "http://127.0.0.1/b.jpg",
    ]
    first = rows[0]
    assert first["catalogNumber"] == "ALA V1" and first["family"] == "Lycopodiaceae"
    assert first["institutionCode"] == "ALA"  # a default from meta.xml
    assert first["license"] == "CC-BY-NC" and first["rightsHolder"] == "University of Alaska"
    assert rows[1]["license"] == "CC-BY"  # no media licence: the occurrence's stays
    assert any("line 5" in p and "skipped" in p for p in problems)  # the broken row
    assert any("unknown occurrence '9'" in p for p in problems)
    assert any("1 occurrence(s) have no image" in p for p in problems)
    one, _ = read_dwca(z, one_per_specimen=True)
    assert [r["catalogNumber"] for r in one] == ["ALA V1", "ALA V2"]


def test_symbiota_archive_with_quoted_csv(tmp_path):
    occ = 'id,catalogNumber,recordedBy,genus\n10,"UAM:Herb:1","Smith, J.",Diphasiastrum\n'
    img = 'coreid,accessURI,rights\n10,"http://127.0.0.1/x.jpg","CC BY, 4.0"\n'
    z = _zip(
        tmp_path / "symbiota.zip",
        {"meta.xml": SYMBIOTA_META, "occurrences.csv": occ, "images.csv": img},
    )
    rows, problems = read_dwca(z)
    assert rows == [
        {
            "id": "10",
            "catalogNumber": "UAM:Herb:1",
            "recordedBy": "Smith, J.",
            "genus": "Diphasiastrum",
            "coreid": "10",
            "rights": "CC BY, 4.0",
            "url": "http://127.0.0.1/x.jpg",
        }
    ]
    assert problems == []


def test_not_an_archive(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(ManifestError, match="not a readable zip"):
        read_dwca(tmp_path / "x.zip")
    z = _zip(tmp_path / "nometa.zip", {"occurrence.txt": "id\n1\n"})
    with pytest.raises(ManifestError, match="no meta.xml"):
        read_dwca(z)
