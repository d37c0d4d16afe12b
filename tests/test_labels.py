"""Label transcription: parsing rules, checklist snapping, scoring, and (with tesseract) OCR."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from herbscan.errors import ManifestError, ParameterError
from herbscan.labels.fields import parse_label
from herbscan.labels.names import Checklist, find_names, looks_like_author
from herbscan.labels.ocr import OcrError, line_height, parse_tsv, prepare_text_image
from herbscan.labels.regions import _to_sheet, find_labels, skew_angle
from herbscan.labels.scoring import evaluate_transcription

LABEL = """Lycopodiaceae ALASKA, U.S.A.
DIPHASIASTRUM ALPINUM (L.) Holub
KARLUK QUAD.: Kodiak Archipelago, NW of Anvil Lake, 57°21'N, 154°38'W, 260 m,
lowlands and ultramafic ridges, S-facing slope, in mats of Empetrum nigrum.
S. Studebaker 07-132 8 Jul 2007
Herbarium, University of Alaska Museum (ALA) accession V 161227"""


def values(text, **kw):
    fields, review = parse_label(text, **kw)
    return {k: f.value for k, f in fields.items()}, review


# --- fields ---------------------------------------------------------------------------------


def test_parse_typed_label_into_darwin_core():
    v, review = values(LABEL, barcodes=["H1106319"])
    assert v["scientificName"] == "Diphasiastrum alpinum (L.) Holub"
    assert (v["genus"], v["specificEpithet"], v["taxonRank"]) == (
        "Diphasiastrum",
        "alpinum",
        "species",
    )
    assert v["scientificNameAuthorship"] == "(L.) Holub"
    assert v["family"] == "Lycopodiaceae"
    assert (v["eventDate"], v["verbatimEventDate"]) == ("2007-07-08", "8 Jul 2007")
    assert float(v["decimalLatitude"]) == pytest.approx(57.35)
    assert float(v["decimalLongitude"]) == pytest.approx(-(154 + 38 / 60), abs=1e-4)
    assert v["verbatimElevation"] == "260 m"
    assert (v["recordedBy"], v["recordNumber"]) == ("S. Studebaker", "07-132")
    assert v["catalogNumber"] == "V161227"  # printed accession beats the barcode
    assert v["otherCatalogNumbers"] == "H1106319"
    assert (v["country"], v["stateProvince"]) == ("United States", "Alaska")
    assert "Anvil Lake" in v["locality"]
    assert "slope" in v["habitat"]
    assert review == []  # plain text: nothing uncertain


@pytest.mark.parametrize(
    "text, iso",
    [
        ("Aug. 25, 1951", "1951-08-25"),
        ("26 July 1932", "1932-07-26"),
        ("March 14 1997", "1997-03-14"),
        ("12.VII.1965", "1965-07-12"),
        ("31.8.1983", "1983-08-31"),
        ("1983-08-31", "1983-08-31"),
        ("June, 1965", "1965-06"),
        ("15/3/75", "1975-03-15"),
    ],
)
def test_dates_become_iso_8601(text, iso):
    v, _ = values(f"collected {text} on rocks")
    assert v["eventDate"] == iso
    assert text.strip(" ,") in v["verbatimEventDate"] or v["verbatimEventDate"] in text


def test_impossible_dates_are_not_guessed():
    v, _ = values("24 Jane 3975 and 45.13.1990")
    assert "eventDate" not in v


def test_coordinate_formats():
    v, _ = values("Hahn woods, 33.8014000°N, 84.3233000°W.")
    assert (float(v["decimalLatitude"]), float(v["decimalLongitude"])) == (33.8014, -84.3233)
    v, _ = values("app. Lat. 60°22' N., Long. 138°51' W.")
    assert float(v["decimalLatitude"]) == pytest.approx(60 + 22 / 60, abs=1e-4)
    assert float(v["decimalLongitude"]) == pytest.approx(-(138 + 51 / 60), abs=1e-4)
    v, _ = values("55°30'25\"N, 131°03'42\"W, 76 m")
    assert float(v["decimalLatitude"]) == pytest.approx(55 + 30 / 60 + 25 / 3600, abs=1e-4)


def test_collector_after_leg_and_infraspecific_name():
    v, _ = values(
        "Lycopodium clavatum L. subsp. monostachyon (Hook.) Selander\n"
        "leg. Joachim Devold, no. 512\nelev. 1280 m."
    )
    assert v["scientificName"].startswith("Lycopodium clavatum subsp. monostachyon")
    assert (v["taxonRank"], v["infraspecificEpithet"]) == ("subspecies", "monostachyon")
    assert v["recordedBy"] == "Joachim Devold" and v["recordNumber"] == "512"
    assert v["verbatimElevation"].startswith("elev. 1280 m")


def test_record_number_is_read_whole_before_a_date():
    for text, who, num in [
        ("Coll.: Diana G. Horton 23180 July 16, 1985", "Diana G. Horton", "23180"),
        ("Coll. A. Jones 77 June 3, 1960", "A. Jones", "77"),
        ("Coll. J.A.Calder 8848 16 July 1953", "J.A.Calder", "8848"),
        ("Coll. J.A.Calder June 8, 1953", "J.A.Calder", ""),  # a date, not a number
        ("Coll. J. Smith 12 Aug. 1950", "J. Smith", ""),  # a day, not a number
        ("Collected by: R. May 45", "R. May", "45"),  # a month as a surname
        ("Coll. R. May 4 Aug 1950", "R. May", ""),
        ("leg. A. Müller 12a, 3 Aug 1950", "A. Müller", "12a"),
        ("leg. Å. Löve 4411", "Å. Löve", "4411"),
        ("leg. et det. Simon Legaard", "Simon Legaard", ""),
        (
            "Collected with Wayne Owen.\nColl.: Roger Rosentreter No. 14,846",
            "Roger Rosentreter",
            "14,846",
        ),  # names start with a capital
        ("Coll: Shirley C. Tucker Date March 11, 1989", "Shirley C. Tucker", ""),
    ]:
        v, _ = values(text)
        assert (v["recordedBy"], v.get("recordNumber", "")) == (who, num), text


def test_english_phrases_are_not_names():
    assert find_names("University of Alaska Herbarium\nMuseum of the North") == []


def test_capitalised_header_words_do_not_outrank_the_name():
    # two header words that look Latin, followed by more capitals rather than an authorship
    text = (
        "PLANTES DES CANTONS DE L'EST\nRANCHO SANTA ANA BOTANIC GARDEN\n"
        "PLANTAE VASCULARES ORIENTIS EXTREMI ROSSICI (VLA)\nLycopodium clavatum L."
    )
    assert find_names(text)[0].binomial == "Lycopodium clavatum"
    assert looks_like_author("(L.) Holub") and looks_like_author("Michx.")
    assert looks_like_author("I")  # "L." read without its full stop
    assert not looks_like_author("CANTONS DE") and not looks_like_author("(VLA)")
    # an all-caps name keeps its authorship's weight
    best = find_names("HERBARIUM OF CANADA\nDIPHASIASTRUM ALPINUM (L.) Holub")[0]
    assert (best.binomial, best.author) == ("Diphasiastrum alpinum", "(L.) Holub")
    # three capitals without a full stop after the name are a code, not its author
    assert find_names("Huperzia selago ssp. SELAGO LYC")[0].full == "Huperzia selago subsp. selago"
    assert find_names("Lycopodium annotinum L. (VLA)")[0].author == "L."
    assert find_names("PICEA GLAUCA (MOENCH) VOSS")[0].author == "(MOENCH)"
    # an authorship that runs on to the next line does not end in "&"
    assert (
        find_names("Coccocarpia palmicola (Sprengel) Arvidsson &")[0].author
        == "(Sprengel) Arvidsson"
    )


def test_genus_with_its_capital_read_small():
    # at a line's start and before an abbreviated author only, and below a capitalised name
    g = find_names("lycopodium selago L.")
    assert [x.binomial for x in g] == ["Lycopodium selago"] and g[0].author == "L."
    both = find_names("lycopodium selago L.\nLycopodium annotinum L.")
    assert [x.binomial for x in both] == ["Lycopodium annotinum", "Lycopodium selago"]
    assert find_names("alpine tundra Mt. Edziza") == []  # a place's abbreviation, not an author
    assert find_names("forma alba Fern.") == []  # a rank word, not a genus
    assert find_names("growing with lycopodium selago L.") == []
    assert find_names("AGRICULTURE CANADA (DAS)") == []
    assert find_names("lycopodium selago") == []
    fields, review = parse_label("lycopodium selago L.")  # the genus's case was guessed
    assert fields["scientificName"].value == "Lycopodium selago L." and "scientificName" in review


def test_low_ocr_confidence_is_flagged_then_dropped():
    text = "Lycopodium annotinum L.\n8 Jul 2007"
    conf = {"Lycopodium": 95.0, "annotinum": 90.0, "L.": 90.0, "8": 50.0, "Jul": 50.0, "2007": 50.0}
    fields, review = parse_label(text, word_conf=conf)
    assert fields["eventDate"].value == "2007-07-08" and "eventDate" in review  # 0.95×0.5
    conf.update({"8": 20.0, "Jul": 20.0, "2007": 20.0})
    fields, review = parse_label(text, word_conf=conf)
    assert fields["eventDate"].value == "" and "eventDate" in review  # not guessed
    assert "scientificName" not in review


# --- names ----------------------------------------------------------------------------------


def test_checklist_snaps_ocr_errors_and_old_combinations(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text(
        "scientificName,family\nDiphasiastrum alpinum (L.) Holub,Lycopodiaceae\n"
        "Lycopodium annotinum L.,Lycopodiaceae\nHuperzia selago (L.) Bernh.,"
        "Lycopodiaceae\n",
        encoding="utf-8",
    )
    cl = Checklist.read(path)
    v, _ = values("Lycopodium annotirum L.\n", checklist=cl)  # one OCR slip
    assert v["scientificName"] == "Lycopodium annotinum L."
    v, _ = values("LYCOPODIUM ALPINUM L.\n", checklist=cl)  # basionym of a current name
    assert v["scientificName"] == "Diphasiastrum alpinum (L.) Holub"
    assert v["verbatimIdentification"] == "LYCOPODIUM ALPINUM L."  # what the label says
    assert v["family"] == "Lycopodiaceae"
    v, review = values("Carex aquatilis Wahlenb.\n", checklist=cl)  # not in the list: own parse
    assert v["scientificName"] == "Carex aquatilis Wahlenb." and "scientificName" in review
    v, review = values("Carex aquatilis Wahlenb.\n")  # no list to go by
    assert v["scientificName"] == "Carex aquatilis Wahlenb." and "scientificName" not in review


def test_hybrids_of_a_genus_keep_their_own_names():
    from herbscan.labels.names import binomial_key

    assert binomial_key("Diphasiastrum × zeilleri (Rouy) Holub") == "diphasiastrum ×zeilleri"
    assert binomial_key("Diphasiastrum ×habereri") == "diphasiastrum ×habereri"
    cl = Checklist(
        names=["Diphasiastrum × habereri (House) Holub", "Diphasiastrum × zeilleri (Rouy) Holub"]
    )
    assert cl.scan("Diphasiastrum × zeilleri\n")[0] == "Diphasiastrum × zeilleri (Rouy) Holub"


def test_checklist_keeps_the_labels_rank():
    cl = Checklist(
        names=[
            "Huperzia selago (L.) Bernh. subsp. selago",
            "Huperzia selago (L.) Bernh.",
            "Huperzia selago subsp. arctica (Grossh.) Löve",
        ]
    )
    assert (
        values("Huperzia selago ssp. SELAGO", checklist=cl)[0]["infraspecificEpithet"] == "selago"
    )
    assert (
        values("Huperzia selago subsp. arctica", checklist=cl)[0]["scientificName"]
        == "Huperzia selago subsp. arctica (Grossh.) Löve"
    )
    v, review = values("Huperzia selago (L.) Bernh.", checklist=cl)
    assert v["scientificName"] == "Huperzia selago (L.) Bernh." and review == []
    v, review = values("Huperzia selago var. appressa", checklist=cl)  # a variety not listed
    assert v["scientificName"] == "Huperzia selago (L.) Bernh." and v["taxonRank"] == "species"
    assert "scientificName" in review
    # a listed subspecies is found under the other rank word
    assert (
        values("Huperzia selago var. arctica", checklist=cl)[0]["infraspecificEpithet"] == "arctica"
    )


def test_checklist_accepted_name_column_and_bad_files(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text(
        "scientificName,acceptedNameUsage\nLycopodium selago L.,Huperzia selago (L.) Bernh.\n",
        encoding="utf-8",
    )
    v, _ = values("Lycopodium selago L.", checklist=Checklist.read(path))
    assert v["scientificName"] == "Huperzia selago (L.) Bernh."
    bad = tmp_path / "bad.csv"
    bad.write_text("taxon_id,label\n1,x\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="scientificName"):
        Checklist.read(bad)
    with pytest.raises(ManifestError, match="no such checklist"):
        Checklist.read(tmp_path / "missing.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("scientificName\nCarex böttcheri\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="latin1.csv: not UTF-8 text"):
        Checklist.read(latin1)


def test_checklist_current_combination_gender_and_epithet_guard():
    # both homotypic names listed, none marked accepted: the recombination is the current one
    cl = Checklist(
        names=[
            "Lycopodium alpinum L.",
            "Diphasiastrum alpinum (L.) Holub",
            "Lycopodium dubium",
            "Huperzia lucidula",
            "Lycopodiella inundata",
        ]
    )
    v, _ = values("Lycopodium alpinum L.\n", checklist=cl)
    assert v["scientificName"] == "Diphasiastrum alpinum (L.) Holub"
    # an explicit acceptedNameUsage decides instead
    cl2 = Checklist(names=cl.names, accepted={"Lycopodium alpinum L.": "Lycopodium alpinum L."})
    assert (
        values("Lycopodium alpinum L.\n", checklist=cl2)[0]["scientificName"]
        == "Lycopodium alpinum L."
    )
    # moved to a genus of another gender, no author read: the only name with that epithet stem
    v, _ = values("Lycopodium inundatum\n", checklist=cl)
    assert v["scientificName"] == "Lycopodiella inundata"
    # a shared genus does not make a different epithet match ("lucidulum" is not "dubium")
    v, _ = values("Lycopodium lucidulum Michx.\n", checklist=cl)
    assert v["scientificName"] == "Huperzia lucidula"
    assert (
        Checklist(names=["Lycopodium dubium"]).snap(find_names("Lycopodium lucidulum")[0]) is None
    )
    # an epithet shared by two genera, from a genus the checklist does not know: no guess
    amb = Checklist(names=["Salix alpina Scop.", "Diphasiastrum alpinum (L.) Holub"])
    assert amb.snap(find_names("Carex alpina")[0]) is None


def test_checklist_finds_names_whose_latin_shape_ocr_broke():
    cl = Checklist(
        names=[
            "Lycopodium annotinum L.",
            "Lycopodium clavatum L.",
            "Lycopodium complanatum L.",
            "Diphasiastrum complanatum (L.) Holub",
        ]
    )
    text = "PLANTS OF THE DISTRICT OF MACKENZIE\nLycopodiun annotinum 1L\nRaup & Soper"
    assert find_names(text)[0].binomial == "Lycopodium annotinum"  # "un" is OCR's "um"
    v, review = values(text, checklist=cl)
    assert v["scientificName"] == "Lycopodium annotinum L." and "scientificName" not in review
    assert cl.scan("Lyc0podium annotinum\n")[0] == "Lycopodium annotinum L."
    # a cut-off genus still finds the name, and its current combination
    assert cl.scan("odium complanatum\n")[0] == "Diphasiastrum complanatum (L.) Holub"
    # ordinary words do not make names, nor does a close genus with another epithet
    assert cl.scan("Collected along the river bank\nLycopodium dubium") is None
    assert "scientificName" not in values("Mile 69 Haines Highway", checklist=cl)[0]


def test_cf_and_aff_become_the_identification_qualifier():
    v, _ = values("Lycopodium cf. clavatum L.\nnear the lake")
    assert (v["scientificName"], v["identificationQualifier"]) == ("Lycopodium clavatum L.", "cf.")
    v, _ = values("LYCOPODIUM AFF. CLAVATUM L.")
    assert v["identificationQualifier"] == "aff." and v["specificEpithet"] == "clavatum"
    assert "identificationQualifier" not in values("Lycopodium clavatum L.")[0]
    # OCR broke the epithet's Latin shape: the checklist still finds the name past the "cf."
    cl = Checklist(names=["Lycopodium serratum Thunb. ex Murray", "Lycopodium annotinum L."])
    v, _ = values("Plants of Khabarovskiy Kray\nLycopodium cf. serratun Thunb. y", checklist=cl)
    assert v["scientificName"] == "Lycopodium serratum Thunb. ex Murray"
    assert v["identificationQualifier"] == "cf."


def test_label_parts_are_joined_across_unread_lines_but_not_blank_paper():
    from herbscan.labels.ocr import OcrResult, Word

    def sheet_with(gap_lines: bool) -> Image.Image:
        im = Image.new("L", (1000, 1000), 235)
        d = ImageDraw.Draw(im)
        for y in (100, 130, 400, 430):  # the lines the layout pass read
            d.rectangle((100, y, 500, y + 15), fill=30)
        if gap_lines:  # lines between them it could not read
            for y in range(175, 380, 40):
                d.rectangle((120, y, 460, y + 12), fill=60)
        return im

    words = [
        Word(f"w{y}", 90.0, (100, y, 400, 20), (k, 1, 1))
        for k, y in enumerate((100, 130, 400, 430))
    ]
    joined = find_labels(OcrResult(words), (1000, 1000), image=sheet_with(True))
    assert len(joined) == 1 and joined[0].box[1] < 100 and sum(joined[0].box[1::2]) > 450
    apart = find_labels(OcrResult(words), (1000, 1000), image=sheet_with(False))
    assert len(apart) == 2
    assert len(find_labels(OcrResult(words), (1000, 1000))) == 2  # no image: nothing joined


# --- OCR plumbing and regions ---------------------------------------------------------------

TSV = (
    "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf"
    "\ttext\n"
    "1\t1\t0\t0\t0\t0\t0\t0\t500\t200\t-1\t\n"
    "5\t1\t1\t1\t1\t1\t10\t10\t80\t20\t96.5\tLycopodium\n"
    "5\t1\t1\t1\t1\t2\t100\t12\t70\t20\t91.0\tclavatum\n"
    "5\t1\t1\t1\t2\t1\t10\t40\t40\t20\t40.0\t1959\n"
    "5\t1\t1\t1\t2\t2\t60\t40\t10\t20\t-1\t \n"
)


def test_parse_tsv_rebuilds_lines_with_confidences():
    r = parse_tsv(TSV)
    assert r.text == "Lycopodium clavatum\n1959"
    assert [w.conf for w in r.words] == [96.5, 91.0, 40.0]
    assert r.mean_conf == pytest.approx((96.5 * 10 + 91 * 8 + 40 * 4) / 22)


def test_prepare_scales_text_lines_to_target_height():
    im = Image.new("L", (400, 60), 255)
    ImageDraw.Draw(im).rectangle((10, 20, 300, 29), fill=0)  # a 10 px "line of text"
    assert line_height(np.asarray(im)) == 10
    out, scale = prepare_text_image(im, target=40)
    assert scale == 4.0 and out.size == (400 * 4 + 32, 60 * 4 + 32)
    # a hint close to the measured height leaves the measurement in charge
    assert prepare_text_image(im, target=40, text_height=12)[1] == 4.0
    # a DataMatrix beside 10 px text: the ink runs say 120 px, the layout pass's words say 10
    code = Image.new("L", (400, 200), 255)
    ImageDraw.Draw(code).rectangle((10, 40, 130, 160), fill=0)
    ImageDraw.Draw(code).rectangle((150, 60, 390, 69), fill=0)
    assert prepare_text_image(code, target=40)[1] == pytest.approx(40 / 121, abs=0.01)
    assert prepare_text_image(code, target=40, text_height=10)[1] == 4.0


def test_region_boxes_map_back_through_rotation_and_scale():
    size = (1000, 1500)  # w, h of the upright sheet
    # a box in a 90°-turned (h×w) layout image at half scale
    box = _to_sheet((100, 50, 200, 80), 0.5, 90, size)
    # turned image point (X, Y) came from (w - Y, X) of the sheet
    assert box == (1000 - 160, 200, 60, 200)
    assert _to_sheet((0, 0, 500, 750), 0.5, 0, size) == (0, 0, 1000, 1500)
    assert _to_sheet((0, 0, 50, 50), 1.0, 180, size) == (950, 1450, 50, 50)


def test_find_labels_clusters_confident_lines_and_measures_skew():
    from herbscan.labels.ocr import OcrResult, Word

    words = []
    for i, (x, y) in enumerate([(100, 100), (300, 110), (500, 120)]):  # slope 0.05 → 2.86°
        words.append(Word(f"Word{i}", 92.0, (x, y, 150, 30), (1, 1, 1)))
    words.append(Word("second", 90.0, (100, 150, 150, 30), (1, 1, 2)))
    words.append(Word("far", 90.0, (900, 900, 100, 30), (2, 1, 1)))  # another label
    words.append(Word("xx", 90.0, (900, 935, 60, 30), (2, 1, 2)))
    words.append(Word("~@", 10.0, (50, 600, 40, 30), (3, 1, 1)))  # texture, dropped
    regions = find_labels(OcrResult(words), (1200, 1200))
    assert len(regions) == 2
    top = regions[0]
    assert top.words == 4 and top.box[0] < 100 and top.box[0] + top.box[2] > 650
    assert top.angle == pytest.approx(2.86, abs=0.05)
    assert skew_angle([]) == 0.0


def _lev(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# --- scoring --------------------------------------------------------------------------------


def test_transcribe_eval_exact_fuzzy_and_cer(tmp_path):
    pred = tmp_path / "labels.csv"
    truth = tmp_path / "truth.csv"
    with pred.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "scientificName", "catalogNumber", "eventDate", "verbatimEventDate"])
        w.writerow(["/x/a.jpg", "Lycopodium alpinum L.", "V161227", "2007-07-08", "8 Jul 2007"])
        w.writerow(["/x/b.jpg", "Lycopodium clavatun", "", "", ""])
    with truth.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "scientific_name", "catalog_number", "gt_date"])
        w.writerow(["images/a.jpg", "Lycopodium alpinum", "ALA V161227", "July 8, 2007"])
        w.writerow(["images/b.jpg", "Lycopodium clavatum L.", "ALA 3165", ""])
        w.writerow(["images/c.jpg", "Huperzia selago", "ALA 1", ""])
    r = evaluate_transcription(pred, truth, key="file")
    assert r["joined"] == 2 and r["missing"] == ["images/c.jpg"]
    name = r["fields"]["scientificName"]
    assert (name["n"], name["exact"], name["fuzzy"]) == (2, 0.5, 1.0)
    # edits: "…alpinum L." vs "…alpinum" = 3; "…clavatun" vs "…clavatum L." = 1 + 3
    assert name["cer"] == pytest.approx(7 / (18 + 22))
    assert r["fields"]["catalogNumber"]["exact"] == 0.5
    # a date compares as ISO (exact); its CER is on the verbatim text
    assert r["fields"]["eventDate"] == {
        "truth_column": "gt_date",
        "n": 1,
        "exact": 1.0,
        "fuzzy": 1.0,
        "cer": pytest.approx(_lev("8 Jul 2007", "July 8, 2007") / 12),
    }
    with pytest.raises(Exception, match="no column for habitat"):
        evaluate_transcription(pred, truth, fields=["habitat"])
    # catalogue numbers: CER on the compared form, so it agrees with exact ("ALA " aside)
    assert r["fields"]["catalogNumber"]["cer"] == pytest.approx(4 / (7 + 4))
    with pytest.raises(ParameterError, match="key must be one of"):
        evaluate_transcription(pred, truth, key="owner")
    with pytest.raises(ManifestError, match="has no column 'sciName'"):
        evaluate_transcription(pred, truth, mapping={"scientific_name": "sciName"})
    with pytest.raises(ManifestError, match="give the transcription first"):
        evaluate_transcription(truth, pred)  # swapped
    empty = tmp_path / "empty.csv"
    empty.write_text("file,scientificName\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="empty.csv: no rows"):
        evaluate_transcription(empty, truth)


# --- with tesseract -------------------------------------------------------------------------


def _have_tesseract() -> bool:
    try:
        from herbscan.labels.ocr import find_tesseract

        find_tesseract()
        return True
    except OcrError:
        return False


@pytest.fixture
def tesseract():
    """Tests that run OCR: a failure in CI (HERBSCAN_REQUIRE_TESSERACT=1), else a skip."""
    if not _have_tesseract():
        if os.environ.get("HERBSCAN_REQUIRE_TESSERACT"):
            pytest.fail(
                "tesseract is required here (HERBSCAN_REQUIRE_TESSERACT is set) but was not found"
            )
        pytest.skip("tesseract not installed (apt install tesseract-ocr tesseract-ocr-eng)")


def draw_stamp(sheet: Image.Image, xy: tuple[int, int], number: str) -> tuple[int, ...]:
    """A violet oval herbarium stamp with `number` inside; returns its box (x, y, w, h)."""
    x, y = xy
    d = ImageDraw.Draw(sheet)
    ink = (95, 80, 150)
    d.ellipse((x, y, x + 380, y + 260), outline=ink, width=4)
    d.text((x + 110, y + 30), "HERBARIUM", fill=ink, font=ImageFont.load_default(size=30))
    d.text((x + 105, y + 100), number, fill=(90, 120, 170), font=ImageFont.load_default(size=44))
    d.line((x + 70, y + 160, x + 310, y + 160), fill=ink, width=3)
    return (x, y, 381, 261)


def synthetic_sheet(
    path: Path, *, turn: int = 0, skew: float = 0.0, accession: bool = True, stamp: str = ""
) -> None:
    """A 1600×2400 sheet: green 'plant' strokes, a typed label bottom right, a Code 128 label,
    and optionally a numbered oval stamp bottom left."""
    import zxingcpp

    rng = np.random.default_rng(0)
    sheet = Image.new("RGB", (1600, 2400), (236, 228, 205))
    d = ImageDraw.Draw(sheet)
    for _ in range(40):
        x, y = rng.integers(100, 1400), rng.integers(100, 1500)
        d.line(
            (x, y, x + rng.integers(-200, 200), y + rng.integers(50, 300)),
            fill=(70, 95, 40),
            width=int(rng.integers(3, 12)),
        )
    label = Image.new("RGB", (760, 420), (250, 250, 246))
    ld = ImageDraw.Draw(label)
    font = ImageFont.load_default(size=30)
    lines = [
        "PLANTS OF ALASKA",
        "Lycopodium annotinum L.",
        "Kodiak Island, near Anvil Lake,",
        "57°21'N, 154°38'W, 260 m",
        "spruce forest, on moss.",
        "J. Smith 1234  8 Jul 2007",
        "accession V 161227" if accession else "",
    ]
    for i, text in enumerate(lines):
        ld.text((30, 20 + 55 * i), text, fill=(20, 20, 20), font=font)
    if skew:
        label = label.rotate(skew, expand=True, fillcolor=(236, 228, 205))
    sheet.paste(label, (780, 1850))
    code = zxingcpp.create_barcode("H1106319", zxingcpp.BarcodeFormat.Code128)
    bar = Image.fromarray(np.asarray(code.to_image(scale=3))).convert("RGB")
    sheet.paste(bar, (1150, 1650))
    if stamp:
        draw_stamp(sheet, (120, 1950), stamp)
    if turn:
        sheet = sheet.rotate(turn, expand=True)
    sheet.save(path, quality=92)


def test_transcribe_synthetic_sheets_end_to_end(tesseract, tmp_path):
    from herbscan.labels import transcribe

    synthetic_sheet(tmp_path / "upright.jpg", skew=2.0)
    synthetic_sheet(tmp_path / "sideways.jpg", turn=90)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = [
        {"path": str(tmp_path / n), "specimen_id": n.split(".")[0]}
        for n in ("upright.jpg", "sideways.jpg", "broken.jpg")
    ]
    out = tmp_path / "out" / "labels.csv"
    summary = transcribe(rows, out, workers=2, crops=tmp_path / "crops", progress=False)
    assert summary["sheets"] == 3 and summary["errors"] == 1
    recs = {
        r["specimen_id"]: r for r in csv.DictReader(out.read_text(encoding="utf-8").splitlines())
    }
    assert "broken.jpg" in recs["broken"]["error"]
    for sid in ("upright", "sideways"):
        r = recs[sid]
        assert r["error"] == ""
        assert r["scientificName"] == "Lycopodium annotinum L.", (sid, r["verbatimLabel"])
        assert r["eventDate"] == "2007-07-08"
        assert r["catalogNumber"] == "V161227", (sid, r["verbatimLabel"])
        assert r["otherCatalogNumbers"] == "H1106319"
        assert r["recordedBy"] == "J. Smith" and r["recordNumber"] == "1234"
        assert float(r["decimalLatitude"]) == pytest.approx(57.35)
        codes = json.loads(r["barcodes"])
        assert codes[0]["value"] == "H1106319" and codes[0]["format"] == "Code128"
        boxes = [b["box"] for b in json.loads(r["labelBoxes"])]
        assert boxes
    # the label box of the upright sheet covers the label's text (x 810..~1250, y 1870..~2230)
    x, y, w, h = max(
        (b["box"] for b in json.loads(recs["upright"]["labelBoxes"])), key=lambda b: b[2] * b[3]
    )
    assert x <= 830 and y <= 1900 and x + w >= 1200 and y + h >= 2210
    # every crop saved is named in its row, under the row's specimen id
    crops = [
        b["crop"] for r in recs.values() if r["labelBoxes"] for b in json.loads(r["labelBoxes"])
    ]
    assert crops and sorted(crops) == sorted(p.name for p in (tmp_path / "crops").iterdir())
    assert all(c.split("_label")[0] in recs for c in crops)
    typed = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert isinstance(typed[0]["barcodes"], list) and len(typed) == 3
    by_id = {t["specimen_id"]: t for t in typed}
    assert by_id["upright"]["decimalLatitude"] == pytest.approx(57.35)  # numbers, not text
    assert isinstance(by_id["upright"]["ocrConfidence"], float)
    assert by_id["broken"]["ocrConfidence"] is None and by_id["broken"]["seconds"] is None
    assert not out.with_name("labels.csv.partial").exists()


def test_crop_names_do_not_collide():
    from herbscan.labels.transcribe import _crop_names

    rows = [
        {"path": "/a/x/1.jpg", "specimen_id": "1"},
        {"path": "/a/y/1.jpg", "specimen_id": "1"},
        {"path": "/a/z/2.jpg", "specimen_id": "ALA V161227"},
        {"path": "/a/w/3.jpg"},
    ]
    names = _crop_names(rows)
    assert len(set(names.values())) == 4
    assert names["/a/z/2.jpg"] == "ALA_V161227" and names["/a/w/3.jpg"] == "3"
    assert names["/a/x/1.jpg"].startswith("1-") and names["/a/y/1.jpg"].startswith("1-")


def _killed_job(folder, rows, options, units):
    """A transcription folder as a killed job leaves it: inputs fixed, some units saved."""
    from herbscan.jobs import Job

    job = Job.open(
        folder,
        options=options,
        start=lambda: (rows, ["path", "specimen_id"], {"kind": "transcribe"}),
        resume=False,
        unit_size=1,
    )
    for k, records in units.items():
        job.save_records(k, records)
    return job


OPTIONS = {"lang": "eng", "layout": "sheet", "catalog": "auto", "min_name_score": 80.0,
           "names": None}  # fmt: skip


def test_transcribe_resumes_from_its_saved_units(tesseract, tmp_path, monkeypatch):
    import importlib

    from herbscan.labels import transcribe

    monkeypatch.setattr(importlib.import_module("herbscan.labels.transcribe"), "UNIT_SIZE", 1)
    synthetic_sheet(tmp_path / "a.jpg")
    rows = [
        {"path": str(tmp_path / "a.jpg"), "specimen_id": "a"},
        {"path": str(tmp_path / "done.jpg"), "specimen_id": "done"},
    ]
    out = tmp_path / "labels.csv"
    folder = tmp_path / "labels.csv.partial"
    # a killed run finished the second sheet only, and left a temporary file of the first
    done = {"file": rows[1]["path"], "specimen_id": "done", "scientificName": "From the unit"}
    _killed_job(folder, rows, OPTIONS, {1: [done]})
    (folder / "units" / ".part-000000.json.tmp").write_text('[{"file": "x', encoding="utf-8")
    with pytest.raises(ParameterError, match="--resume"):
        transcribe(rows, out, progress=False)
    # the inputs were fixed when the job started: a resume with another list reads the first
    transcribe(rows[:1], out, resume=True, progress=False)
    recs = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert [r["specimen_id"] for r in recs] == ["a", "done"]
    assert recs[1]["scientificName"] == "From the unit"  # not read again
    assert recs[0]["scientificName"] == "Lycopodium annotinum L."
    assert not folder.exists()


def test_transcribe_resume_redoes_failures_and_keeps_its_options(tesseract, tmp_path):
    from herbscan.labels import transcribe

    synthetic_sheet(tmp_path / "a.jpg")
    rows = [{"path": str(tmp_path / "a.jpg"), "specimen_id": "a"}]
    out = tmp_path / "labels.csv"
    folder = tmp_path / "labels.csv.partial"
    # the image was broken when the job ran, and has been replaced since
    failed = {"file": str(tmp_path / "a.jpg"), "specimen_id": "a", "error": "a.jpg: truncated"}
    _killed_job(folder, rows, {**OPTIONS, "layout": "label"}, {0: [failed]})
    with pytest.raises(ParameterError, match="started with layout 'label', not 'sheet'"):
        transcribe(rows, out, resume=True, progress=False)
    import shutil

    shutil.rmtree(folder)
    _killed_job(folder, rows, OPTIONS, {0: [failed]})
    transcribe(rows, out, resume=True, progress=False)
    (rec,) = csv.DictReader(out.read_text(encoding="utf-8").splitlines())
    assert rec["error"] == "" and rec["scientificName"] == "Lycopodium annotinum L."
    # an output that would overwrite an input is refused before anything is written
    with pytest.raises(ParameterError, match="would overwrite the input"):
        transcribe([{"path": str(out), "specimen_id": "x"}], out, progress=False)
    with pytest.raises(ParameterError, match="would overwrite the input"):
        transcribe(rows, out, names=out, progress=False)
    assert rec == next(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))


def test_cli_says_what_to_install_without_tesseract(tmp_path):
    synthetic = tmp_path / "s.jpg"
    Image.new("RGB", (50, 50), "white").save(synthetic)
    env = {**os.environ, "HERBSCAN_TESSERACT": str(tmp_path / "no-such-tesseract")}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "herbscan.cli",
            "transcribe",
            str(tmp_path),
            "--out",
            str(tmp_path / "l.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "apt install tesseract-ocr" in p.stderr


def test_cli_refuses_to_overwrite_its_source(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\ns.jpg\n", encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "herbscan.cli", "transcribe", str(manifest), "--out", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2 and "would overwrite the SOURCE" in p.stderr
    assert manifest.read_text(encoding="utf-8") == "path\ns.jpg\n"


def test_cli_names_the_catalog_sources_on_a_wrong_one(tmp_path):
    Image.new("RGB", (50, 50), "white").save(tmp_path / "s.jpg")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "herbscan.cli",
            "transcribe",
            str(tmp_path),
            "--out",
            str(tmp_path / "l.csv"),
            "--catalog",
            "stamps",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "catalog must be one of 'auto', 'stamp', 'label', 'barcode'" in p.stderr


def test_cli_transcribe_and_eval(tesseract, tmp_path):
    synthetic_sheet(tmp_path / "s1.jpg")
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "file,scientific_name,catalog_number,gt_date\n"
        "s1.jpg,Lycopodium annotinum L.,ALA V161227,8 July 2007\n",
        encoding="utf-8",
    )
    run = [sys.executable, "-m", "herbscan.cli"]
    p = subprocess.run(
        run + ["transcribe", str(tmp_path), "--out", str(tmp_path / "l.csv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "barcode on 1, name on 1" in p.stdout
    p = subprocess.run(
        run
        + [
            "transcribe-eval",
            str(tmp_path / "l.csv"),
            str(truth),
            "--out",
            str(tmp_path / "scores.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())["fields"]
    assert scores["scientificName"]["exact"] == 1.0
    assert scores["catalogNumber"]["exact"] == 1.0 and scores["eventDate"]["exact"] == 1.0
    assert "scientificName" in p.stdout and "100.0%" in p.stdout


# --- stamps and single name lines -------------------------------------------------------------


def test_find_stamps_keeps_closed_hollow_outlines_only():
    from herbscan.labels.stamps import find_stamps

    sheet = Image.new("RGB", (1600, 2400), (236, 228, 205))
    box = draw_stamp(sheet, (120, 1950), "40480")
    d = ImageDraw.Draw(sheet)
    d.ellipse((900, 300, 1150, 480), fill=(60, 60, 60))  # a blot
    d.arc((900, 900, 1250, 1150), start=200, end=340, fill=(60, 60, 60), width=4)  # open arc
    d.rectangle((100, 100, 1000, 600), outline=(40, 40, 40), width=4)  # label frame
    found = find_stamps(sheet)
    assert len(found) == 1
    assert all(abs(a - b) <= 6 for a, b in zip(found[0], box, strict=True)), (found, box)


def test_read_stamp_number_with_the_number_reader():
    from herbscan.labels.stamps import BAND_PADS, find_stamps, number_bands, read_stamp

    sheet = Image.new("RGB", (1600, 2400), (236, 228, 205))
    box = draw_stamp(sheet, (120, 1950), "V 87317")
    x, y, w, h = find_stamps(sheet)[0]
    bands = number_bands(sheet.crop((x, y, x + w, y + h)))
    as_stamped, erased = bands[2], bands[3]
    # the band holds the number line (drawn at y+100..y+150 in the stamp), not the lettering above
    assert as_stamped.shape == erased.shape and 40 <= as_stamped.shape[0] <= 110
    assert (as_stamped < 128).any() and erased.min() <= as_stamped.min() + 5
    stamp = read_stamp(sheet, box)
    assert len(bands) == 2 * len(BAND_PADS)
    assert stamp.number == "V87317" and stamp.reads == 18 and stamp.conf >= 0.6
    blank = Image.new("RGB", (1600, 2400), (236, 228, 205))
    draw_stamp(blank, (120, 1950), "")
    empty = read_stamp(blank, find_stamps(blank)[0])
    assert (empty.number, empty.conf) == ("", 0.0)


def test_catalog_source_names_the_collections_convention():

    kw = {"barcodes": ["H1"], "stamps": [("41151", 0.33)]}
    text = "Lycopodium annotinum L.\nHerbarium (ALA) accession V 161227"
    assert values("Lycopodium annotinum L.", **kw)[0]["catalogNumber"] == "H1"  # auto
    v, review = values("Lycopodium annotinum L.", catalog="stamp", **kw)
    assert (v["catalogNumber"], v["otherCatalogNumbers"]) == ("41151", "H1")
    assert "catalogNumber" in review  # 6 of 18 reads: to check
    assert values(text, catalog="stamp", **kw)[0]["catalogNumber"] == "41151"
    assert values(text, catalog="label", **kw)[0]["catalogNumber"] == "V161227"
    v, _ = values(text, catalog="barcode", **kw)
    assert v["catalogNumber"] == "H1" and "otherCatalogNumbers" not in v
    # a barcode label's printed text read in its rounded frame is the barcode, misread
    v, _ = values("Rubus", barcodes=["ANG005906"], stamps=[("AN6005906", 0.9)])
    assert v["catalogNumber"] == "ANG005906" and "otherCatalogNumbers" not in v
    # the stamped text of the second of two barcodes is that barcode; short barcodes match only
    # exactly
    v, _ = values("Rubus", barcodes=["https://x.org/q/77", "V80233"], stamps=[("V080233", 0.9)])
    assert (v["catalogNumber"], v["otherCatalogNumbers"]) == ("V80233", "https://x.org/q/77")
    v, _ = values("Rubus", barcodes=["123"], stamps=[("1234", 0.9)])
    assert (v["catalogNumber"], v["otherCatalogNumbers"]) == ("1234", "123")
    # a stamp read too poorly to keep gives way even where stamps come first
    v, _ = values(
        "Lycopodium annotinum L.", catalog="stamp", barcodes=["H1"], stamps=[("41151", 0.167)]
    )
    assert v["catalogNumber"] == "H1"
    with pytest.raises(ParameterError, match="catalog must be one of"):
        parse_label("x", catalog="stamps")


def test_number_bands_take_run_together_digits_under_a_slanted_rule():
    from herbscan.labels.stamps import _rules, _solid, find_stamps, number_bands

    sheet = Image.new("RGB", (1600, 2400), (236, 228, 205))
    x, y = 120, 1950
    d = ImageDraw.Draw(sheet)
    ink = (40, 40, 45)
    d.ellipse((x, y, x + 380, y + 260), outline=ink, width=4)
    font = ImageFont.load_default(size=50)
    d.text((x + 95, y + 95), "62374", fill=ink, font=font, stroke_width=3, stroke_fill=ink)
    left, _, right, bottom = d.textbbox((x + 95, y + 95), "62374", font=font, stroke_width=3)
    d.line((x + 60, bottom + 4, x + 320, bottom - 14), fill=ink, width=3)  # slants up 18 px
    bx, by, bw, bh = find_stamps(sheet)[0]
    crop = sheet.crop((bx, by, bx + bw, by + bh))
    bands = number_bands(crop)
    # the digits touch one another (one wide component) and the rule steps from row to row
    assert bands and bands[0].shape[1] >= 0.95 * (right - left), [b.shape for b in bands]
    ink_mask = np.asarray(crop.convert("L")) < 128
    rule = _rules(ink_mask, 60)
    assert rule[bottom - by - 12 : bottom - by + 8, 60:90].any()  # the slanted rule's ends
    assert rule[bottom - by - 20 : bottom - by + 2, 290:320].any()
    assert not rule[y - by + 100 : y - by + 120, :].any()  # the digits' middles stay
    line = np.zeros((40, 200), dtype=bool)
    line[np.arange(40) // 2 + 10, np.arange(0, 200, 5)[:40]] = True
    line = ndi_thick(line)
    rows, cols = np.nonzero(line)
    line = line[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # cut to the component
    assert _solid(np.ones((30, 120), dtype=bool)) and not _solid(line)
    # a paler ink level's line is taken only where it is the same line, longer
    from herbscan.labels.stamps import _extends

    assert _extends(((98, 132, 40, 160), None), ((100, 130, 80, 160), None))
    assert not _extends(((98, 132, 78, 165), None), ((100, 130, 80, 160), None))  # no longer
    assert not _extends(((98, 132, 0, 260), None), ((100, 130, 80, 160), None))  # > 2×
    assert not _extends(((140, 170, 40, 160), None), ((100, 130, 80, 160), None))  # other line


def ndi_thick(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, structure=np.ones((2, 6)))


def test_stamp_number_cross_checked_by_tesseract_when_reads_disagree(tesseract, monkeypatch):
    from herbscan.labels import numreader, stamps
    from herbscan.labels.numreader import NumberRead

    sheet = Image.new("RGB", (1600, 2400), (236, 228, 205))
    box = draw_stamp(sheet, (120, 1950), "40480")
    x, y, w, h = box
    bands = stamps.number_bands(sheet.crop((x, y, x + w, y + h)))
    assert "40480" in stamps._tesseract_numbers(bands)  # the second reader on its own

    class Split:  # a reader whose six reads disagree: 3 × 40430, 2 × 40480, 1 × 4048
        def read(self, bands):
            texts = ["40430"] * 3 + ["40480"] * 2 + ["4048"]
            return [NumberRead(t, 0.9) for t in texts][: len(bands)]

    monkeypatch.setattr(numreader, "default_readers", lambda: (Split(),))
    stamp = stamps.read_stamp(sheet, box)
    assert (stamp.number, stamp.votes, stamp.conf) == ("40480", 2, stamps.CROSS_CHECKED)
    monkeypatch.setattr(stamps, "_tesseract_numbers", lambda bands: ["1111"])
    stamp = stamps.read_stamp(sheet, box)  # no support: the plain vote
    assert (stamp.number, stamp.votes, stamp.conf) == ("40430", 3, 0.5)


def test_stamp_votes_over_every_reader_and_band(monkeypatch):
    from herbscan.labels import numreader, stamps
    from herbscan.labels.numreader import NumberRead

    sheet = Image.new("RGB", (1600, 2400), (236, 228, 205))
    box = draw_stamp(sheet, (120, 1950), "40480")

    def readers(agreeing):
        """Three readers of six bands, `agreeing` of the 18 reads giving 40480."""
        texts = ["40480"] * agreeing + ["40430", "4048"] * 9
        texts = texts[:18]

        class Fake:
            def __init__(self, k):
                self.k = k

            def read(self, bands):
                assert len(bands) == 6
                return [NumberRead(t, 0.9) for t in texts[6 * self.k : 6 * self.k + 6]]

        return lambda: (Fake(0), Fake(1), Fake(2))

    asked = []
    monkeypatch.setattr(stamps, "_tesseract_numbers", lambda bands: asked.append(1) or [])
    monkeypatch.setattr(numreader, "default_readers", readers(12))
    stamp = stamps.read_stamp(sheet, box)
    assert (stamp.number, stamp.votes, stamp.reads, stamp.conf) == ("40480", 12, 18, 0.667)
    assert not asked  # two thirds agree: no check
    monkeypatch.setattr(numreader, "default_readers", readers(11))
    stamp = stamps.read_stamp(sheet, box)
    assert (stamp.number, stamp.votes, stamp.reads, stamp.conf) == ("40480", 11, 18, 0.611)
    assert asked  # fewer: tesseract asked


def test_catalog_number_prefers_confident_stamp_printed_number_barcode_in_turn():
    v, review = values("Lycopodium annotinum L.", barcodes=["H1"], stamps=[("41151", 0.78)])
    assert (v["catalogNumber"], v["otherCatalogNumbers"]) == ("41151", "H1")
    assert "catalogNumber" not in review
    # 6 of 18 reads agreeing (right 2 times of 5): the barcode goes first, else kept for review
    v, review = values("Lycopodium annotinum L.", barcodes=["H1"], stamps=[("41151", 0.33)])
    assert v["catalogNumber"] == "H1"
    v, review = values("Lycopodium annotinum L.", barcodes=["H1"], stamps=[("41151", 0.39)])
    assert v["catalogNumber"] == "41151" and "catalogNumber" in review  # 7 of 18
    v, review = values("Lycopodium annotinum L.", barcodes=["H1"], stamps=[("41151", 0.55)])
    assert v["catalogNumber"] == "41151" and "catalogNumber" in review  # cross-checked
    v, review = values("Lycopodium annotinum L.", stamps=[("41151", 0.33)])
    assert v["catalogNumber"] == "41151" and "catalogNumber" in review
    v, _ = values("accession V 161227", barcodes=["H1"], stamps=[("41151", 0.39)])
    assert v["catalogNumber"] == "V161227"
    # the holding herbarium's stamp, read with confidence, outranks a label's own series
    v, _ = values("Plant Inventory Acc. 184/Cat. 3330", barcodes=["H1"], stamps=[("41151", 0.9)])
    assert v["catalogNumber"] == "41151"
    v, _ = values("Lycopodium annotinum L.", barcodes=["H1"], stamps=[("", 0.0)])
    assert v["catalogNumber"] == "H1"
    # of two printed accession numbers, the one on the line naming a herbarium
    text = (
        "NPS Acc. KEFJ-00144, Cat. KEFJ 11694\n"
        "Herbarium, University of Alaska Museum (ALA) accession V 157050"
    )
    v, _ = values(text, barcodes=["H1"])
    assert v["catalogNumber"] == "V157050"
    # without a herbarium's line, the first one, also when its number is on the next line; a
    # word in parentheses is not a herbarium code
    v, _ = values("Accession No.\nV 157050\nNPS Cat. 3330", barcodes=["H1"])
    assert v["catalogNumber"] == "V157050"
    v, _ = values("NPS collection Cat. 33301\nFlora of the park (alpine) Acc. 18412")
    assert v["catalogNumber"] == "33301"
    # a number after a herbarium code may be another institution's too
    text = "Yukon-Charley Rivers National Preserve (YUCH)\nYUCH-00184"
    v, _ = values(text, stamps=[("V149327", 0.9)])
    assert v["catalogNumber"] == "V149327"
    v, _ = values(text, stamps=[("V149327", 0.5)])
    assert v["catalogNumber"] == "00184"


def test_snap_line_picks_the_reading_that_makes_a_name():
    cl = Checklist(
        names=[
            "Viburnum dentatum L.",
            "Viburnum acerifolium L.",
            "Erigeron",
            "Lycopodium complanatum var. canadense Vict.",
        ],
        accepted={"Erigeron": "Erigeron L."},
    )
    # the most confident reading is garbage; a less confident one is close to a listed name
    assert cl.snap_line(["Woven fhe", "Wbarnam dentabon"]) == (
        "Viburnum dentatum L.",
        pytest.approx(60.6, abs=0.1),
    )
    assert cl.snap_line(["ERIGERON"])[0] == "Erigeron L."  # accepted name
    assert cl.snap_line(["Lycopodium complanatum var canadense"])[1] == 100.0  # no authorship
    assert cl.snap_line(["qqq zzz"]) is None and cl.snap_line([""]) is None
    v, review = values(
        "Wbarnam dentabon", checklist=cl, name_readings=["Wbarnam dentabon", "Woven fhe"]
    )
    assert v["scientificName"] == "Viburnum dentatum L." and "scientificName" not in review
    assert v["genus"] == "Viburnum"
    v, review = values("Woven fhe", checklist=cl, name_readings=["Woven fhe"])
    assert "scientificName" not in v


def test_line_readings_are_ordered_by_confidence(tesseract):
    from herbscan.labels.read import LINE_READS, line_readings, read_line

    img = Image.new("RGB", (700, 70), "white")
    ImageDraw.Draw(img).text(
        (10, 12), "Viburnum dentatum", fill="black", font=ImageFont.load_default(size=40)
    )
    readings = line_readings(img)
    assert len(readings) == len(LINE_READS)
    confs = [r.mean_conf for r in readings]
    assert confs == sorted(confs, reverse=True)
    assert read_line(img).text == readings[0].text == "Viburnum dentatum"


def test_transcribe_reads_a_stamped_catalog_number(tesseract, tmp_path):
    from herbscan.labels import transcribe

    synthetic_sheet(tmp_path / "s.jpg", accession=False, stamp="40480")
    out = tmp_path / "labels.csv"
    transcribe([{"path": str(tmp_path / "s.jpg"), "specimen_id": "s"}], out, progress=False)
    (r,) = csv.DictReader(out.read_text(encoding="utf-8").splitlines())
    assert (r["catalogNumber"], r["otherCatalogNumbers"]) == ("40480", "H1106319")
    (stamp,) = json.loads(r["stamps"])
    assert stamp["number"] == "40480" and abs(stamp["box"][0] - 120) <= 6
    (typed,) = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert typed["stamps"] == [stamp]  # typed in the JSON copy, as barcodes and boxes are
    # a collection whose barcode is its catalogue number says so
    transcribe(
        [{"path": str(tmp_path / "s.jpg"), "specimen_id": "s"}],
        out,
        progress=False,
        catalog="barcode",
    )
    (r,) = csv.DictReader(out.read_text(encoding="utf-8").splitlines())
    assert (r["catalogNumber"], r["otherCatalogNumbers"]) == ("H1106319", "")


def test_transcribe_line_layout_snaps_to_the_checklist(tesseract, tmp_path):
    from herbscan.labels import transcribe

    img = Image.new("RGB", (700, 70), "white")
    ImageDraw.Draw(img).text(
        (10, 12),
        "Viburnum dentatun",
        fill="black",  # a typo on the label
        font=ImageFont.load_default(size=40),
    )
    img.save(tmp_path / "line.png")
    names = tmp_path / "names.csv"
    names.write_text(
        "scientificName\nViburnum dentatum L.\nViburnum acerifolium L.\n", encoding="utf-8"
    )
    out = tmp_path / "lines.csv"
    transcribe(
        [{"path": str(tmp_path / "line.png"), "specimen_id": "l"}],
        out,
        names=names,
        layout="line",
        progress=False,
    )
    (r,) = csv.DictReader(out.read_text(encoding="utf-8").splitlines())
    assert r["verbatimLabel"] == "Viburnum dentatun"
    assert r["scientificName"] == "Viburnum dentatum L."
    assert json.loads(r["fieldConfidence"])["scientificName"] >= 0.9


def test_numbers_tesseract_doubts_are_confirmed_by_the_number_reader(monkeypatch):
    from herbscan.labels.ocr import OcrResult, Word
    from herbscan.labels.read import CONFIRMED, confirm_numbers

    image = Image.new("L", (900, 120), 255)
    d = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    words, x = [], 20
    for text, conf in (("accession", 93.0), ("V", 0.0), ("161290", 0.0), ("1987", 96.0)):
        left, top, right, bottom = d.textbbox((x, 40), text, font=font)
        d.text((x, 40), text, fill=0, font=font)
        words.append(Word(text, conf, (left, top, right - left, bottom - top), (1, 1, 1)))
        x = right + 22
    ocr = confirm_numbers(image, OcrResult(words))
    assert [w.conf for w in ocr.words] == [93.0, CONFIRMED, CONFIRMED, 96.0]
    # a misread keeps tesseract's doubt: the reader sees 161290, not 161298
    fresh = [
        Word(w.text, conf, w.box, w.line)
        for w, conf in zip(words, (93.0, 0.0, 0.0, 96.0), strict=True)
    ]
    fresh[2].text = "161298"
    ocr = confirm_numbers(image, OcrResult(fresh))
    assert [w.conf for w in ocr.words] == [93.0, 0.0, 0.0, 96.0]
    # a capital before the number that is not what is printed there: the number alone
    fresh = [
        Word(w.text, conf, w.box, w.line)
        for w, conf in zip(words, (93.0, 0.0, 0.0, 96.0), strict=True)
    ]
    fresh[1].text = "B"
    ocr = confirm_numbers(image, OcrResult(fresh))
    assert [w.conf for w in ocr.words] == [93.0, 0.0, CONFIRMED, 96.0]
    # confirmed only when every number reader reads it so
    from herbscan.labels import numreader
    from herbscan.labels.numreader import NumberRead

    class Says:
        def __init__(self, text):
            self.text = text

        def read(self, crops):
            return [NumberRead(self.text, 0.9) for _ in crops]

    fresh = [
        Word(w.text, conf, w.box, w.line)
        for w, conf in zip(words, (93.0, 0.0, 0.0, 96.0), strict=True)
    ]
    monkeypatch.setattr(numreader, "default_readers", lambda: (Says("161290"), Says("161298")))
    ocr = confirm_numbers(image, OcrResult(fresh))
    assert [w.conf for w in ocr.words] == [93.0, 0.0, 0.0, 96.0]
    monkeypatch.setattr(numreader, "default_readers", lambda: (Says("161290"), Says("161290")))
    ocr = confirm_numbers(image, OcrResult(fresh))
    assert [w.conf for w in ocr.words] == [93.0, 0.0, CONFIRMED, 96.0]


def test_catalog_numbers_compare_without_code_punctuation_or_zero_padding():
    from herbscan.labels.scoring import exact

    assert exact("catalogNumber", "V080233", "ALA V80233")
    assert exact("catalogNumber", "KEFJ-00144", "KEFJ-144")
    assert exact("catalogNumber", "12-034", "12-34")  # padding after a separator
    assert exact("catalogNumber", "100", "ALA 100")
    assert not exact("catalogNumber", "V80234", "ALA V80233")
    assert not exact("catalogNumber", "V8023", "ALA V80233")
    assert not exact("catalogNumber", "", "ALA V80233")


# --- trust: confidently wrong values go to review -------------------------------------------


def conf_of(text, **kw):
    fields, review = parse_label(text, **kw)
    return {k: (f.value, f.conf) for k, f in fields.items()}, review


def test_a_rulers_made_in_is_not_the_specimens_country():
    text = (
        "University of Alaska Herbarium (ALA)\nYUKON TERRITORY, CANADA\n"
        "Lycopodium complanatum L.\nIn openings cleared in mixed woods, at mile 590,\n"
        "Alaska Highway.\nS.L. WELSH 7434\n28 June 1968\n"
        "ONE CUBIC DECIMETER OF WATER WEIGHTS ONE KILOGRAM AND MEASURES ONE LITER.\n"
        "MADE IN GERMANY"
    )
    v, review = conf_of(text)
    assert v["country"] == ("Canada", 0.9) and v["stateProvince"][0] == "Yukon Territory"
    assert "country" not in review and "stateProvince" not in review
    # OCR variants of the imprint, the country on the ruler's next line, or ticks read as
    # letters before it
    for ruler in (
        "MADE_IN GERMANY",
        "MADE-IN GERMANY",
        "MADE IN\nGERMANY",
        "ONE CUBIC DECIMETER OF WATER\nGERMANY",
        "ONE CUBIC DECIMETER\ncle We GERMANY",
    ):
        v, _ = conf_of(f"Lycopodium annotinum L.\nKodiak Island, Alaska\n{ruler}")
        assert v["country"][0] == "United States" and v["stateProvince"][0] == "Alaska", ruler
    # a ruler alone names no country
    v, _ = conf_of(
        "ONE DECIMETER\nONE CUBIC DECIMETER OF WATER WEIGHTS ONE KILOGRAM\nMADE IN GERMANY"
    )
    assert "country" not in v
    # where a country that escaped the imprint rules contradicts the label: review, not 0.85
    v, review = conf_of("YUKON TERRITORY, CANADA\nLycopodium annotinum L.\nGermany")
    assert v["country"][0] == "Canada" and v["country"][1] < 0.6 and "country" in review
    assert not any(val == "Germany" and c >= 0.8 for val, c in v.values())


def test_a_supply_houses_address_is_not_the_specimens_state():
    text = (
        "Herbarium Specimen\nScientific Name Lycopodium clavatum\nLocality Amchitka\n"
        "Collector L.W. Sowl\n"
        "General Biological Supply House, Inc., Chicago 20, Illinois\nMADE IN U.S.A."
    )
    v, _ = conf_of(text)
    assert "stateProvince" not in v and "country" not in v
    for imprint in (
        "Acme Label Company, 12 Main Street, Springfield, Illinois",
        "Printed by Smith & Co., Chicago, Illinois",
        "Fairbanks, AK 99775-6960, Alaska",
    ):
        v, _ = conf_of(f"Lycopodium clavatum L.\nAmchitka Island\n{imprint}")
        assert not any(
            c >= 0.8 for k, (val, c) in v.items() if k in ("stateProvince", "country")
        ), imprint


def test_institutions_and_names_that_contain_a_place_do_not_locate_the_specimen():
    # the issuing institution's address conflicts with the label's place: both to review
    text = (
        "YUKON TERRITORY, CANADA\nLycopodium complanatum L.\n28 June 1968\n"
        "HERBARIUM OF BRIGHAM YOUNG UNIVERSITY\nPROVO, UTAH"
    )
    v, review = conf_of(text)
    assert v["country"][0] == "Canada" and v["stateProvince"][0] == "Yukon Territory"
    assert {"country", "stateProvince"} <= set(review)
    # "Alaska Highway", "Yukon-Tanana Uplands", "Yukon Charley National Park" are names, not
    # places; a label's heading ("Plants of British Columbia, Canada", "Maine Flora") is one
    v, review = conf_of(
        "PLANTS OF BRITISH COLUMBIA, CANADA\nALASKA HIGHWAY\n"
        "Lycopodium annotinum L.\nDEPARTMENT OF AGRICULTURE, OTTAWA, CANADA"
    )
    assert (v["country"], v["stateProvince"]) == (("Canada", 0.9), ("British Columbia", 0.9))
    v, _ = conf_of(
        "ALASKA, U.S.A.\nLIVENGOOD QUAD.: Yukon-Tanana Uplands, Yukon Charley National Park"
    )
    assert v["stateProvince"] == ("Alaska", 0.9)
    v, _ = conf_of("Maine Flora\n#625 Lycopodium obscurum L.\n20 mi. s.w. of Augusta")
    assert v["stateProvince"][0] == "Maine" and v["country"] == ("United States", 0.7)
    # "New Mexico" is a state, not Mexico; a state outside the named country goes to review
    v, review = conf_of("New Mexico, Sandoval Co.")
    assert (v["country"][0], v["stateProvince"][0]) == ("United States", "New Mexico")
    assert "country" not in review
    v, review = conf_of("Plants of southcentral Norway\nCOLLEGE, ALASKA")
    assert v["country"][0] == "Norway" and {"country", "stateProvince"} <= set(review)


def test_a_determinations_date_is_not_the_collection_date():
    v, _ = values(
        "DETERMINED BY JOSEPH M. BEITEL JULY 1980\nPLANTS OF YUKON TERRITORY\n"
        "No. 11452 H. M. Raup & D. S. Correll Aug. 19 1943"
    )
    assert v["eventDate"] == "1943-08-19"
    v, _ = values("5 juin 1968 Det. C.H. 12 juin 1970")
    assert v["eventDate"] == "1968-06-05"
    v, _ = values("Date: July 21 1958 Leg. et det. Simon Lægaard")
    assert v["eventDate"] == "1958-07-21"


def test_a_barcode_standing_in_for_an_unread_stamp_is_sent_for_review():
    # the collection stamps its numbers; the stamp was not read, or read too poorly to keep
    for stamps in ([], [("", 0.0)], [("41151", 0.1)]):
        v, review = conf_of(
            "Lycopodium annotinum L.", catalog="stamp", barcodes=["H1178981"], stamps=stamps
        )
        assert v["catalogNumber"][0] == "H1178981" and v["catalogNumber"][1] < 0.6
        assert "catalogNumber" in review
    # printed accessions expected, none read
    v, review = conf_of("Lycopodium annotinum L.", catalog="label", barcodes=["H1"])
    assert "catalogNumber" in review
    # auto: a stamp holds a number (4 or more of 18 reads agree) that was not read well enough
    v, review = conf_of("Lycopodium annotinum L.", barcodes=["H1"], stamps=[("41151", 0.33)])
    assert v["catalogNumber"] == ("H1", 0.5) and "catalogNumber" in review
    # ... but not on numbers read in outlines that were not stamps (≤ 3 of 18), nor when the
    # stamp is the barcode's printed text, nor where the collection says barcodes are its numbers
    for kw in (
        {"stamps": [("41151", 0.167)]},
        {"stamps": [("H1178980", 0.3)]},
        {"stamps": [("41151", 0.33)], "catalog": "barcode"},
    ):
        v, review = conf_of("Lycopodium annotinum L.", barcodes=["H1178981"], **kw)
        assert v["catalogNumber"][1] == 0.99 and "catalogNumber" not in review, kw


def test_a_job_distrusts_barcodes_that_are_not_the_collections_catalogue_numbers():
    from herbscan.labels.transcribe import distrust_barcodes

    def rec(cat, conf, barcode="H1", review=""):
        return {
            "catalogNumber": cat,
            "barcodes": json.dumps([{"value": barcode}]),
            "fieldConfidence": json.dumps({"catalogNumber": conf}),
            "needsReview": review,
        }

    stamped = [rec(f"V{i}", 0.9, f"H{i}") for i in range(6)]
    fallback = rec("H9", 0.99, "H9", review="habitat")
    assert distrust_barcodes([*stamped, fallback]) == 1
    assert json.loads(fallback["fieldConfidence"])["catalogNumber"] == 0.5
    assert fallback["needsReview"] == "habitat|catalogNumber"
    # a collection whose barcodes are its catalogue numbers keeps them
    same = [rec(f"H{i}", 0.99, f"H{i}") for i in range(10)]
    assert distrust_barcodes([*same, *stamped[:4]]) == 0
    assert all(json.loads(r["fieldConfidence"])["catalogNumber"] == 0.99 for r in same)


def test_a_transcription_is_refused_as_a_checklist(tmp_path):
    from herbscan.labels.transcribe import COLUMNS, write_records

    out = tmp_path / "labels.csv"
    rec = {c: "" for c in COLUMNS}
    rec.update(file="a.jpg", scientificName="Above tinberline", fieldConfidence="{}")
    write_records([rec], out)
    with pytest.raises(
        ManifestError, match="labels.csv: this is a transcription .*not a checklist"
    ):
        Checklist.read(out)
    (tmp_path / "sheets").mkdir()
    Image.new("RGB", (50, 50), "white").save(tmp_path / "sheets" / "s.jpg")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "herbscan.cli",
            "transcribe",
            str(tmp_path / "sheets"),
            "--out",
            str(tmp_path / "again.csv"),
            "--names",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not a checklist" in p.stderr


def test_checklist_entries_must_look_like_names(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text(
        "scientificName\nLycopodium annotinum L.\nAbove tinberline\n"
        "Scientific Name 4 tum Clavatum\nDiphasiastrum × zeilleri (Rouy) Holub\n"
        "Huperzia\nUniversity of Alaska\n",
        encoding="utf-8",
    )
    with pytest.warns(UserWarning, match="3 entries are not shaped like scientific names"):
        cl = Checklist.read(path)
    assert cl.names == [
        "Diphasiastrum × zeilleri (Rouy) Holub",
        "Huperzia",
        "Lycopodium annotinum L.",
    ]
    v, _ = values("Above tinberline\nLycopodium annotinum", checklist=cl)
    assert v["scientificName"] == "Lycopodium annotinum L."
    # without a checklist an English preposition does not begin a name either
    assert not find_names("Above timberline on rocks")
