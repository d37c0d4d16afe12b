"""Label text → Darwin Core fields, each with a confidence, low ones flagged for review.

Rules, not a trained model: labels come from hundreds of institutions and centuries, and rules a
curator can read (a date is a day, a month word or Roman numeral, and a year; coordinates are
degrees with N/S/E/W; an elevation is a number with m or ft) carry over to labels nobody here has
seen. Each field's confidence is the OCR confidence of the words it came from times how certain
the rule that produced it is. A value below `REVIEW` is kept but listed in `needsReview`; below
`DROP` it is left empty and listed, because a wrong value typed into a database is worse than an
empty one a curator fills in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from herbscan.errors import check_choice
from herbscan.labels.names import Checklist, NameGuess, find_names, qualifier_in, split_name

REVIEW = 0.6
DROP = 0.3
UNLISTED = 0.45
"""Highest confidence of a name a given checklist does not hold (sent for review: it may be
words of the label read as a name, "Herbario universitatis", or a taxon new to the list)."""

MONTHS = {
    "jan": 1,
    "january": 1,
    "janvier": 1,
    "januar": 1,
    "enero": 1,
    "ianuarius": 1,
    "feb": 2,
    "february": 2,
    "fevrier": 2,
    "februar": 2,
    "febrero": 2,
    "mar": 3,
    "march": 3,
    "mars": 3,
    "marz": 3,
    "marzo": 3,
    "apr": 4,
    "april": 4,
    "avril": 4,
    "abril": 4,
    "aprilis": 4,
    "may": 5,
    "mai": 5,
    "mayo": 5,
    "maius": 5,
    "jun": 6,
    "june": 6,
    "juin": 6,
    "juni": 6,
    "junio": 6,
    "iunius": 6,
    "jul": 7,
    "july": 7,
    "juillet": 7,
    "juli": 7,
    "julio": 7,
    "iulius": 7,
    "aug": 8,
    "august": 8,
    "aout": 8,
    "agosto": 8,
    "augustus": 8,
    "sep": 9,
    "sept": 9,
    "september": 9,
    "septembre": 9,
    "septiembre": 9,
    "oct": 10,
    "october": 10,
    "octobre": 10,
    "oktober": 10,
    "octubre": 10,
    "nov": 11,
    "november": 11,
    "novembre": 11,
    "noviembre": 11,
    "dec": 12,
    "december": 12,
    "decembre": 12,
    "dezember": 12,
    "diciembre": 12,
}
ROMAN = {
    "i": 1,
    "ii": 2,
    "iii": 3,
    "iv": 4,
    "v": 5,
    "vi": 6,
    "vii": 7,
    "viii": 8,
    "ix": 9,
    "x": 10,
    "xi": 11,
    "xii": 12,
}
COUNTRIES = {
    "usa": "United States",
    "u.s.a.": "United States",
    "u.s.a": "United States",
    "united states": "United States",
    "united states of america": "United States",
    "canada": "Canada",
    "mexico": "Mexico",
    "greenland": "Greenland",
    "norway": "Norway",
    "sweden": "Sweden",
    "finland": "Finland",
    "russia": "Russia",
    "ussr": "Russia",
    "u.s.s.r.": "Russia",
    "iceland": "Iceland",
    "denmark": "Denmark",
    "germany": "Germany",
    "france": "France",
    "spain": "Spain",
    "italy": "Italy",
    "japan": "Japan",
    "china": "China",
    "brazil": "Brazil",
    "argentina": "Argentina",
    "chile": "Chile",
    "peru": "Peru",
    "ecuador": "Ecuador",
    "colombia": "Colombia",
    "venezuela": "Venezuela",
    "australia": "Australia",
    "new zealand": "New Zealand",
    "india": "India",
    "south africa": "South Africa",
    "england": "United Kingdom",
    "scotland": "United Kingdom",
    "great britain": "United Kingdom",
    "united kingdom": "United Kingdom",
    "ireland": "Ireland",
    "switzerland": "Switzerland",
    "austria": "Austria",
    "poland": "Poland",
    "costa rica": "Costa Rica",
    "panama": "Panama",
    "guatemala": "Guatemala",
    "cuba": "Cuba",
    "puerto rico": "Puerto Rico",
    "philippines": "Philippines",
    "indonesia": "Indonesia",
    "madagascar": "Madagascar",
    "kenya": "Kenya",
    "mongolia": "Mongolia",
}
US_STATES = [
    "Alabama",
    "Alaska",
    "Arizona",
    "Arkansas",
    "California",
    "Colorado",
    "Connecticut",
    "Delaware",
    "Florida",
    "Georgia",
    "Hawaii",
    "Idaho",
    "Illinois",
    "Indiana",
    "Iowa",
    "Kansas",
    "Kentucky",
    "Louisiana",
    "Maine",
    "Maryland",
    "Massachusetts",
    "Michigan",
    "Minnesota",
    "Mississippi",
    "Missouri",
    "Montana",
    "Nebraska",
    "Nevada",
    "New Hampshire",
    "New Jersey",
    "New Mexico",
    "New York",
    "North Carolina",
    "North Dakota",
    "Ohio",
    "Oklahoma",
    "Oregon",
    "Pennsylvania",
    "Rhode Island",
    "South Carolina",
    "South Dakota",
    "Tennessee",
    "Texas",
    "Utah",
    "Vermont",
    "Virginia",
    "Washington",
    "West Virginia",
    "Wisconsin",
    "Wyoming",
]
PROVINCES = [
    "Alberta",
    "British Columbia",
    "Manitoba",
    "New Brunswick",
    "Newfoundland",
    "Nova Scotia",
    "Ontario",
    "Quebec",
    "Saskatchewan",
    "Yukon",
    "Yukon Territory",
    "Northwest Territories",
    "Nunavut",
]
STATES = US_STATES + PROVINCES
STATE_COUNTRY = {s: "United States" for s in US_STATES} | {p: "Canada" for p in PROVINCES}
HABITAT_WORDS = re.compile(
    r"\b(on|in|under|among)\s+(rock|rocks|bark|soil|sand|moss|trunk|log|logs|wood|leaves|"
    r"twigs|tree|trees|boulders?|ledges?|cliffs?)\b|\b(forest|woods|woodland|meadow|bog|fen|"
    r"swamp|marsh|tundra|heath|slope|scrub|thicket|prairie|grassland|outcrops?|hammock|"
    r"muskeg|shore|bank|clearing|substrate|host tree|bark|trunk|sandstone|granit\w*|"
    r"limestone|shaded|moist|dry|wet)\b",
    re.IGNORECASE,
)
LOCALITY_WORDS = re.compile(
    r"\b(near|vicinity|km|mi\.?|miles?|north|south|east|west|[NSEW]{1,3} of|park|county|co\.|"
    r"island|lake|river|creek|mountains?|mts?\.|trail|road|hwy|highway|canyon|valley|bay|"
    r"quad\.?|district|dist\.|reserve|forest reserve|campground|summit|peninsula|fjord|"
    r"parish|township|T\d+[NS]|R\d+[EW]|sect\.?)\b",
    re.IGNORECASE,
)
BOILERPLATE = re.compile(
    r"herbarium|university|museum|institut|botanical (garden|inventory)|plants of|flora of|"
    r"lichens of|cubic|decimeter|kilogram|collection|determined|det\.|expedition|agreement|"
    r"copyright|ecosystems",
    re.IGNORECASE,
)


@dataclass
class Field:
    """One transcribed value with its confidence (0–1)."""

    value: str
    conf: float


def _ocr_conf(text: str, word_conf: dict[str, float]) -> float:
    """Mean OCR confidence (0–1) of the words in `text`; 1 when unknown (plain text given)."""
    confs = [word_conf[w] for w in text.split() if w in word_conf]
    return sum(confs) / len(confs) / 100.0 if confs else 1.0


def parse_label(
    text: str,
    *,
    word_conf: dict[str, float] | None = None,
    checklist: Checklist | None = None,
    barcodes: list[str] | None = None,
    stamps: list[tuple[str, float]] | None = None,
    name_readings: list[str] | None = None,
    min_name_score: float = 80.0,
    catalog: str = "auto",
) -> tuple[dict[str, Field], list[str]]:
    """Darwin Core fields from label text: ({term: Field}, terms to review).

    `barcodes` are decoded barcode values; `stamps` are (number, confidence 0–1) read inside
    stamps on the sheet (see `stamps.read_stamps`). `name_readings`: when the text is one line
    known to hold a name, every OCR reading of it, for the checklist to choose from.
    `catalog`: where the collection's catalogue number is (`CATALOG_SOURCES`).
    """
    word_conf = word_conf or {}
    fields: dict[str, Field] = {}
    lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()]

    if checklist is not None and name_readings:
        hit = checklist.snap_line(name_readings)
        if hit is not None:
            _set_checklist_name(fields, checklist, *hit, word_conf, text)
    if "scientificName" not in fields:
        _name_fields(lines, text, word_conf, checklist, min_name_score, fields)
    family = re.search(
        r"\b([A-Z][a-z]+aceae|[A-Z]+ACEAE|Compositae|Gramineae|Leguminosae|"
        r"Cruciferae|Umbelliferae|Labiatae|Palmae|Guttiferae)\b",
        text,
    )
    if family and "family" not in fields:
        fam = family.group(1).capitalize()
        fields["family"] = Field(fam, 0.9 * _ocr_conf(family.group(1), word_conf))
    _date_fields(lines, word_conf, fields)
    _coordinate_fields(text, word_conf, fields)
    _elevation_field(text, word_conf, fields)
    _collector_fields(lines, word_conf, fields)
    check_choice("catalog", catalog, CATALOG_SOURCES)
    _catalog_field(text, word_conf, barcodes or [], stamps or [], fields, catalog)
    _place_fields(text, word_conf, fields)

    review = []
    for term, f in list(fields.items()):
        f.conf = round(max(0.0, min(1.0, f.conf)), 3)
        if f.conf < DROP:
            review.append(term)
            fields[term] = Field("", f.conf)
        elif f.conf < REVIEW:
            review.append(term)
    return fields, review


def _name_fields(lines, text, word_conf, checklist, min_score, fields) -> None:
    guesses = find_names("\n".join(ln for ln in lines if not BOILERPLATE.search(ln)))
    if checklist is not None:
        best = None
        for g in guesses:
            hit = checklist.snap(g, min_score=min_score)
            if hit and (best is None or hit[1] > best[1]):
                best = (hit[0], hit[1], g)
        if best is not None:
            name, score, g = best
            _set_checklist_name(fields, checklist, name, score, word_conf, g.line, g.qualifier)
            return
        hit = checklist.scan("\n".join(ln for ln in lines if not BOILERPLATE.search(ln)))
        if hit is not None:
            _set_checklist_name(
                fields, checklist, hit[0], 0.9 * hit[1], word_conf, hit[2], qualifier_in(hit[2])
            )
            return
    if guesses:
        g = guesses[0]
        conf = min(g.score * _ocr_conf(g.line, word_conf), 0.95)
        if checklist is not None:  # not the collection's name: an OCR slip or a new taxon
            conf = min(conf, UNLISTED)
        _set_name(fields, g, g.full, conf, word_conf, g.line)


def _set_checklist_name(
    fields, checklist, name: str, score: float, word_conf, line: str, qualifier: str = ""
) -> None:
    g = split_name(name)
    g.qualifier = qualifier
    _set_name(fields, g, name, score / 100.0, word_conf, line)
    fam = checklist.families.get(name)
    if fam:
        fields["family"] = Field(fam, score / 100.0)


def _set_name(fields, g: NameGuess, full: str, conf: float, word_conf, line: str) -> None:
    fields["scientificName"] = Field(full, conf)
    # the line the name was read from, as the label has it: a checklist may have replaced an
    # old combination or an OCR slip, and the curator checks one against the other
    # (its confidence is the OCR's alone, so that it stays when the name is dropped)
    fields["verbatimIdentification"] = Field(
        " ".join(line.split()), min(_ocr_conf(line, word_conf), 0.95)
    )
    fields["genus"] = Field(g.genus, conf)
    fields["specificEpithet"] = Field(g.epithet, conf)
    if g.rank and g.infra:
        fields["taxonRank"] = Field(g.rank, conf)
        fields["infraspecificEpithet"] = Field(g.infra, conf)
    else:
        fields["taxonRank"] = Field("species", conf)
    if g.author:
        fields["scientificNameAuthorship"] = Field(g.author, conf)
    if g.qualifier:
        fields["identificationQualifier"] = Field(g.qualifier, conf)


_MONTH_RE = "|".join(sorted(MONTHS, key=len, reverse=True))
_DATE_PATTERNS = [
    # 8 Jul 2007, 26. July 1932, 16 January 1989, 24 Jane 3975 (OCR) is refused by the year check
    (
        re.compile(
            rf"\b(\d{{1,2}})(?:st|nd|rd|th)?[\s.\-/]*({_MONTH_RE})\.?,?[\s.\-/]*"
            rf"(\d{{4}})\b",
            re.IGNORECASE,
        ),
        "dmy_word",
        0.95,
    ),
    # Aug. 25, 1951; March 14 1997; June 10, 1965
    (
        re.compile(
            rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.IGNORECASE
        ),
        "mdy_word",
        0.95,
    ),
    # 12.VII.1965, 12 vii 1965
    (re.compile(r"\b(\d{1,2})[\s.\-/]+([ivxIVX]{1,4})[\s.\-/]+(\d{4})\b"), "roman", 0.9),
    # 1983-08-31
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), "iso", 0.95),
    # 31.8.1983, 31/8/1983 (day first, as on most labels outside the US)
    (re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b"), "dmy_num", 0.7),
    # 15/3/75
    (re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{2})\b"), "dmy_num2", 0.45),
    # July 1932
    (re.compile(rf"\b({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.IGNORECASE), "my_word", 0.8),
]


_DETERMINATION = re.compile(
    r"(?<!et )(?<!& )\b(?:det(?:ermined\b|\.)|conf(?:irmed\b|\.)|verified\b|annotated\b|"
    r"identified\s+by\b)",
    re.IGNORECASE,
)
"""Where a determination (or a confirmation) begins on a line: the date after it is
the determination's, not the collection's ("DETERMINED BY JOSEPH M. BEITEL JULY 1980",
"5 juin 1968 Det. C.H."). "Leg. et det." names the collector."""


def _date_fields(lines, word_conf, fields) -> None:
    for ln in lines:
        det = _DETERMINATION.search(ln)
        if det:
            ln = ln[: det.start()]
        for rx, kind, certainty in _DATE_PATTERNS:
            m = rx.search(ln)
            if not m:
                continue
            iso = _iso_date(kind, m.groups())
            if iso is None:
                continue
            conf = certainty * _ocr_conf(m.group(0), word_conf)
            fields["eventDate"] = Field(iso, min(conf, 0.97))
            fields["verbatimEventDate"] = Field(m.group(0).strip(" ,;"), min(conf, 0.97))
            return


def _iso_date(kind: str, g: tuple) -> str | None:
    try:
        if kind == "dmy_word":
            d, mo, y = int(g[0]), MONTHS[g[1].lower()], int(g[2])
        elif kind == "mdy_word":
            mo, d, y = MONTHS[g[0].lower()], int(g[1]), int(g[2])
        elif kind == "roman":
            d, mo, y = int(g[0]), ROMAN[g[1].lower()], int(g[2])
        elif kind == "iso":
            y, mo, d = int(g[0]), int(g[1]), int(g[2])
        elif kind == "dmy_num":
            d, mo, y = int(g[0]), int(g[1]), int(g[2])
            if mo > 12 and d <= 12:
                d, mo = mo, d
        elif kind == "dmy_num2":
            d, mo, y = int(g[0]), int(g[1]), 1900 + int(g[2])
            if mo > 12 and d <= 12:
                d, mo = mo, d
        elif kind == "my_word":
            mo, y = MONTHS[g[0].lower()], int(g[1])
            return f"{y:04d}-{mo:02d}" if 1700 <= y <= 2100 else None
        else:
            return None
    except (KeyError, ValueError):
        return None
    if not (1700 <= y <= 2100 and 1 <= mo <= 12 and 1 <= d <= 31):
        return None
    return f"{y:04d}-{mo:02d}-{d:02d}"


_DEG = (
    r"(\d{1,3}(?:\.\d+)?)\s*[°º˚o*]\s*"  # degrees
    r"(?:(\d{1,2}(?:\.\d+)?)\s*['’′`]\s*)?"  # minutes
    r"(?:(\d{1,2}(?:\.\d+)?)\s*[\"”″]\s*)?"  # seconds
)
_COORD = re.compile(rf"{_DEG}\s*([NS])\.?[\s,;]+(?:long?\.?\s*)?{_DEG}\s*([EW])", re.IGNORECASE)
_COORD_DEC = re.compile(
    r"(-?\d{1,2}\.\d{2,})\s*°?\s*([NS])[\s,;]+(-?\d{1,3}\.\d{2,})\s*°?\s*([EW])", re.IGNORECASE
)
_COORD_LAT_LONG = re.compile(
    rf"lat\.?\s*{_DEG}\s*([NS])\.?[\s,;]+long?\.?\s*{_DEG}\s*([EW])", re.IGNORECASE
)


def _coordinate_fields(text, word_conf, fields) -> None:
    flat = " ".join(text.split())
    for rx in (_COORD_LAT_LONG, _COORD):
        m = rx.search(flat)
        if m:
            g = m.groups()
            lat = _dms(g[0], g[1], g[2], g[3])
            lon = _dms(g[4], g[5], g[6], g[7])
            break
    else:
        m = _COORD_DEC.search(flat)
        if not m:
            return
        lat = float(m.group(1)) * (-1 if m.group(2).upper() == "S" else 1)
        lon = float(m.group(3)) * (-1 if m.group(4).upper() == "W" else 1)
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return
    conf = 0.9 * _ocr_conf(m.group(0), word_conf)
    fields["verbatimCoordinates"] = Field(m.group(0).strip(" ,;."), min(conf, 0.95))
    fields["decimalLatitude"] = Field(f"{lat:.5f}".rstrip("0").rstrip("."), min(conf, 0.95))
    fields["decimalLongitude"] = Field(f"{lon:.5f}".rstrip("0").rstrip("."), min(conf, 0.95))


def _dms(d, m, s, hemi) -> float | None:
    try:
        v = float(d) + (float(m) / 60 if m else 0.0) + (float(s) / 3600 if s else 0.0)
    except ValueError:
        return None
    if (m and float(m) >= 60) or (s and float(s) >= 60):
        return None
    return -v if hemi.upper() in ("S", "W") else v


_ELEV = re.compile(
    r"(?:(?:elev(?:ation)?|alt(?:itude)?|ca)\.?[:\s]*)?(\d[\d,.]*(?:\s*[-–]\s*\d[\d,.]*)?)\s*"
    r"(m\.s\.m\.?|m\b\.?|meters|metres|ft\b\.?|feet)",
    re.IGNORECASE,
)
_ELEV_WORD = re.compile(
    r"\b(?:elev(?:ation)?|alt(?:itude)?)\.?[:\s]*(\d[\d,.]*(?:\s*[-–]\s*\d[\d,.]*)?)"
    r"(?:\s*(m|ft|feet|meters)\b\.?)?",
    re.IGNORECASE,
)


def _elevation_field(text, word_conf, fields) -> None:
    flat = " ".join(text.split())
    m = _ELEV_WORD.search(flat)
    certainty = 0.9
    if not m:
        for cand in _ELEV.finditer(flat):
            before = flat[max(0, cand.start() - 3) : cand.start()]
            if "°" in before or re.search(r"\bkm|\bmi", cand.group(0)):
                continue
            m, certainty = cand, 0.75
            break
    if not m:
        return
    value = m.group(0).strip(" ,;")
    conf = certainty * _ocr_conf(value, word_conf)
    fields["verbatimElevation"] = Field(value, min(conf, 0.95))


_COLLECTOR = re.compile(
    r"\b(?:leg\.?(?:\s*(?:&|et)\s*det\.?)?|coll(?:ected)?\.?(?:\s+by)?|collector|col\.)[:\s]+"
    # names begin with a capital even though the keywords may be in any case
    r"(?P<who>(?-i:[A-ZÀ-Þ])[A-Za-zÀ-ÿ.'\- ]+?"
    r"(?:\s*(?:&|and|et)\s*(?-i:[A-ZÀ-Þ])[A-Za-zÀ-ÿ.'\- ]+?)?)"
    r"(?:[,;]?\s*(?:no\.?|#|n°)?\s*(?P<num>\d[\w\-/]*(?:,\d{3}(?!\d))*))?"
    # what follows: the line's end, a comma, a day ("… 512 16 July") or a word ("… 512 July"),
    # each after the whole number (a number cut short must not pass for one and a day)
    r"\s*(?:$|[,;]|(?<=\s)\d{1,2}\s|(?<=\d)\s+(?=[A-Za-z]))",
    re.IGNORECASE,
)
_PERSON_NUM = re.compile(
    r"^(?P<who>(?:[A-Z]\.\s?){1,3}[A-Z][a-zà-ÿ\-']+(?:[,\s]+(?:&|and|et)\s+(?:[A-Z]\.\s?){1,3}"
    r"[A-Z][a-zà-ÿ\-']+)*)[,\s]+(?:no\.?|#)?\s*(?P<num>\d[\w\-/]*)",
    re.IGNORECASE,
)


_NEXT_FIELD = re.compile(
    r"(?:\s+(?:date|det|no|number|leg|coll|elev|alt|loc|locality|"
    r"habitat)\b\.?)+$",
    re.IGNORECASE,
)
"""A label's next field name read onto the end of a collector's name."""
_YEAR_NEXT = re.compile(r"\s*,?\s*\d{4}\b")
_MONTH_NEXT = re.compile(rf"\s*\.?\s*(?:{_MONTH_RE})\b\.?,?\s*\d{{4}}\b", re.IGNORECASE)


def _collector_fields(lines, word_conf, fields) -> None:
    for ln in lines:
        m = _COLLECTOR.search(ln)
        if m:
            who, num = " ".join(m.group("who").split()).strip(" .,"), m.group("num")
            if num and len(num) <= 2:  # a day rather than a number?
                after = ln[m.end("num") :]
                *name, last = who.split()
                if name and last.lower().strip(".") in MONTHS and _YEAR_NEXT.match(after):
                    who, num = " ".join(name), None  # "Calder June 8, 1953"
                elif _MONTH_NEXT.match(after):
                    num = None  # "Smith 12 Aug. 1950"
            who = _NEXT_FIELD.sub("", who).strip(" .,")  # "Shirley C. Tucker Date March 11, …"
            conf = 0.85 * _ocr_conf(who, word_conf)
            fields["recordedBy"] = Field(who, min(conf, 0.95))
            if num:
                fields["recordNumber"] = Field(num, min(conf, 0.95))
            return
    for ln in lines:
        m = _PERSON_NUM.search(ln)
        if m and not BOILERPLATE.search(ln):
            who = " ".join(m.group("who").split())
            conf = 0.7 * _ocr_conf(m.group(0), word_conf)
            fields["recordedBy"] = Field(who, min(conf, 0.9))
            fields["recordNumber"] = Field(m.group("num"), min(conf, 0.9))
            return


_ACCESSION = re.compile(
    r"\b(?:accession|acc\.?|catalog(?:ue)?|cat\.?|herb(?:arium)?\.?|specimen|sheet)\s*"
    r"(?:no\.?|number|#|n°)?[:\s]*(?P<num>[A-Z]{0,4}[\s\-]?\d[\d\s\-]{2,9}\d)\b",
    re.IGNORECASE,
)
_STAMP_NUMBER = re.compile(r"^[^\w]*(?P<num>[A-Z]?\s?\d{4,7})[^\w]*$")


STAMP_OVER_BARCODE = 0.38
"""A stamped number this confident (7 of the 18 reads agreeing, or `stamps.CROSS_CHECKED`) is
taken before the barcode: the lowest agreement at which the stamps' numbers were right more
often than not on the ALA sheets (7–9 of 18: 6 of 6; 5–6 of 18: 2 of 5; ≤ 3 of 18: 0 of 7).
Numbers read in outlines that were not stamps, on the other collections' sheets in ../shared,
stayed at ≤ 3 of 18."""


def _after_herbarium_code(flat: str) -> re.Match | None:
    """ "ALA V116314": a number after a herbarium code that the text also prints in parentheses
    ("University of Alaska Herbarium (ALA)"), as Index Herbariorum codes go."""
    for code in dict.fromkeys(re.findall(r"\(([A-Z]{2,8})\)", flat)):
        m = re.search(rf"\b{code}\s*[:#\-]?\s*(?P<num>[A-Z]?\s?\d{{3,8}})\b", flat)
        if m:
            return m
    return None


_HERBARIUM = re.compile(r"(?i:\bherb(?:arium|\.))|\([A-Z]{2,8}\)")


def _accession(text: str) -> re.Match | None:
    """An accession or catalogue number printed on a line that names a herbarium ("Herbarium,
    University of Alaska Museum (ALA) accession V 157050"), which outranks another
    institution's series printed before it ("NPS Acc. KEFJ-00144"); None if no such line."""
    for ln in text.splitlines():
        m = _HERBARIUM.search(ln) and _ACCESSION.search(ln)
        if m:
            return m
    return None


CATALOG_SOURCES = ("auto", "stamp", "label", "barcode")
"""Where a collection's catalogue number is found: "auto" weighs the evidence on each sheet
(see `_catalog_field`); "stamp", "label" and "barcode" name the collection's own convention
(numbers stamped on the sheet, printed on the label as an accession, or the barcode) and look
there first."""


def _catalog_field(text, word_conf, barcodes, stamps, fields, source="auto") -> None:
    """catalogNumber from the best evidence there is. With `source` "auto": a number stamped in
    the holding herbarium's stamp and read with confidence; a number the label prints as an
    accession or catalogue number; a number after a herbarium code; a stamped number read with
    some agreement (`STAMP_OVER_BARCODE`); the barcode; any other stamped number (right less
    than half the time, while many herbaria's barcode is their catalogue number); a line that
    is a bare number. A stamped number within a character or two of a decoded barcode
    (`_near`) is that barcode's printed text, read in the frame of its label, and becomes the
    barcode. The barcodes not chosen go to otherCatalogNumbers.

    A confident stamp comes first because stamping is how a herbarium accessions a sheet, while
    a label may come from the collector's or another institution's series ("Acc. 184/Cat. 3330"
    of a national park, a park's "YUCH-00184"). A collection that knows its convention says so
    (`CATALOG_SOURCES`): its source is then taken whenever it gave anything not to be dropped.

    A barcode taken where the sheet's own number was expected but not read (`_stands_in`) is
    sent for review (`BARCODE_STANDIN`), since many collections' barcodes are not their
    catalogue numbers."""
    flat = " ".join(text.split())
    stamped = next(((num, conf) for num, conf in stamps if num), None)
    same = next((b for b in barcodes if stamped and _near(stamped[0], b)), None)
    if same:  # the barcode's printed text read in its label's frame: the checked decode wins
        stamped = (same, 0.99)
    m = _accession(text) or _ACCESSION.search(flat) or _after_herbarium_code(flat)
    printed = (
        (re.sub(r"[\s\-]", "", m.group("num")).upper(), 0.9 * _ocr_conf(m.group("num"), word_conf))
        if m
        else None
    )
    barcode = (barcodes[0], 0.99) if barcodes else None

    def stamp_at(least):
        return stamped if stamped and stamped[1] >= least else None

    order = {
        "auto": (stamp_at(REVIEW), printed, stamp_at(STAMP_OVER_BARCODE), barcode, stamped),
        "stamp": (stamp_at(DROP), printed, barcode, stamped),
        "label": (printed, stamp_at(DROP), barcode, stamped),
        "barcode": (barcode, printed, stamped),
    }[source]
    chosen = next((c for c in order if c), None) or _bare_number(text, word_conf)
    if chosen is None:
        return
    conf = min(chosen[1], 0.99 if chosen[0] in barcodes else 0.95)
    if chosen is barcode and _stands_in(source, stamps):
        conf = min(conf, BARCODE_STANDIN)
    fields["catalogNumber"] = Field(chosen[0], conf)
    others = [b for b in barcodes if b != chosen[0]]
    if others:
        fields["otherCatalogNumbers"] = Field(" | ".join(others), 0.99)


BARCODE_STANDIN = 0.5
"""Confidence of a barcode taken as the catalogue number where the sheet's own number was
expected but not read (sent for review): with `--catalog stamp` or `label`, or where a stamp
on the sheet holds another number (`STAMP_EVIDENCE`). On the ALA sheets, whose barcodes are
not catalogue numbers, every such barcode was wrong."""
STAMP_EVIDENCE = 0.2
"""A number read in a stamp by at least this share of the reads (4 of 18) shows that the sheet
carries a stamped number: numbers read in outlines that were not stamps, on the other
collections' sheets in ../shared, stayed at ≤ 3 of 18 reads."""


def _stands_in(source: str, stamps: list[tuple[str, float]]) -> bool:
    """Whether a barcode taken as the catalogue number stands in for a number the sheet was
    expected to carry elsewhere: the collection says its numbers are stamped or printed
    (`source` "stamp" or "label"), or a stamp holds a number that was not read well enough
    to take (and is not the barcode, which `_catalog_field` has checked)."""
    if source in ("stamp", "label"):
        return True
    return source == "auto" and any(num and conf >= STAMP_EVIDENCE for num, conf in stamps)


def _near(a: str, b: str) -> bool:
    """Whether number `a`, read off the sheet, is barcode `b` misread: at most one edit per
    four characters of `b`, and two at most."""
    from rapidfuzz.distance import Levenshtein

    limit = min(2, len(b) // 4)
    return Levenshtein.distance(a.upper(), b.upper(), score_cutoff=limit) <= limit


def _bare_number(text, word_conf) -> tuple[str, float] | None:
    """A line holding nothing but a number (a stamp OCR'd with the label), at half confidence."""
    for ln in text.splitlines():
        m = _STAMP_NUMBER.match(ln.strip())
        if m:
            return m.group("num").replace(" ", ""), 0.5 * _ocr_conf(ln, word_conf)
    return None


CONFLICT = 0.5
"""Highest confidence of a country or state that other place names on the sheet contradict
(another country, or a state of another country): sent for review."""
OTHER_COUNTRY = 0.4
"""Confidence of a state that is not in the country the sheet's other place names point to."""


def _place_fields(text, word_conf, fields) -> None:
    """country, stateProvince and county from the lines that can say where the specimen was
    collected (`_place_lines`), and locality and habitat."""
    place_lines = _place_lines(text)
    found = _places(place_lines)
    if found:
        _set_places(found, word_conf, fields)
    flat = " ".join(place_lines)
    county = re.search(
        r"\b([A-Z][A-Za-z.\-]+(?:\s[A-Z][A-Za-z.\-]+)?)\s+(?:Co\.|County|COUNTY)", flat
    )
    if county:
        fields["county"] = Field(
            county.group(1).title(), 0.75 * _ocr_conf(county.group(0), word_conf)
        )
    loc, hab = [], []
    for ln in (" ".join(ln.split()) for ln in text.splitlines()):
        if not ln or BOILERPLATE.search(ln) or _is_name_line(ln, fields):
            continue
        for sentence in re.split(r"(?<=[.;])\s+(?=[A-Z])", ln):
            if HABITAT_WORDS.search(sentence) and not LOCALITY_WORDS.search(sentence[:25]):
                hab.append(sentence)
            elif LOCALITY_WORDS.search(sentence):
                loc.append(sentence)
    if loc:
        value = " ".join(loc)
        fields["locality"] = Field(value, 0.65 * _ocr_conf(value, word_conf))
    if hab:
        value = " ".join(hab)
        fields["habitat"] = Field(value, 0.6 * _ocr_conf(value, word_conf))


IMPRINT = re.compile(
    r"(?i:\bmade[\s_.\-]*in\b"  # MADE IN GERMANY, MADE_IN U.S.A.
    r"|\b(?:inc|ltd|corp|gmbh|llc)\b\.?|&\s*co\b|\bcompany\b"  # a firm
    r"|\bsuppl(?:y|ies)\b|\bbiolog(?:y|ical)\b|\bmanufactur\w*|\bmfg\b|\bprint(?:er|ers|ing)\b"
    r"|\blabels\b|\b(?:tel|phone|fax)\b\.?:?\s*[(+\d])"
    r"|\b\d{1,5}\s+(?:[A-Z][\w.'’]*\s+){1,3}(?:Street|STREET|Avenue|AVENUE|Ave\.|Boulevard|Blvd\.)"
    r"|,\s*[A-Z]{2}\.?\s+\d{5}(?:-\d{4})?\b"
)  # ", AK 99775"
"""A line printed by whoever made the label, ruler or colour chart rather than about the
specimen: "MADE IN GERMANY", "General Biological Supply House, Inc., Chicago 20, Illinois",
"McCourt Labels, Bradford, Pa.", a street address or a zip code."""
SCALE = re.compile(
    r"(?i:\b(?:cubic|(?:deci|centi|milli)met(?:er|re)s?|kilograms?|inch(?:es)?|"
    r"kodak|colou?r (?:chart|control|separation)|gr[ae]y ?scale)\b)"
)
"""The text of a ruler or colour chart ("ONE CUBIC DECIMETER OF WATER WEIGHTS ONE KILOGRAM")."""
INSTITUTION = re.compile(r"(?i:\b(?:department|dept|ministry|bureau|academ\w*)\b|botanic garden)")
"""Words of an institution's name beyond `BOILERPLATE`'s ("Department of Agriculture, Ottawa,
Canada"): where a label was issued, not where the plant grew."""
_HEADING_WORD = re.compile(r"(?i:plants|plantae|flora|lichens|mosses|bryophytes)")
HEADING = re.compile(rf"(?i:^\W*(?:{_HEADING_WORD.pattern})\s+(?:of|from)\b)")
"""A label's heading naming the region it covers ("PLANTS OF BRITISH COLUMBIA, CANADA", "Flora
of Yukon Territory"): a statement of the specimen's place, although `BOILERPLATE`'s words
("plants of") keep it out of the other fields."""


def _imprint(line: str) -> bool:
    return bool(IMPRINT.search(line) or SCALE.search(line))


def _place_lines(text: str) -> list[str]:
    """The lines that may say where the specimen was collected: not an imprint, a ruler's or
    colour chart's text (`IMPRINT`, `SCALE`), nor an institution's name or address
    (`BOILERPLATE`, `INSTITUTION`); a label's heading (`HEADING`) is kept. A line holding
    nothing but place names right after an imprint continues it ("MADE IN" / "GERMANY").
    Labels are the text's blocks (separated by a blank line)."""
    keep = []
    for block in re.split(r"\n\s*\n", text):
        after_imprint = False
        for ln in (" ".join(ln.split()) for ln in block.splitlines()):
            if not ln:
                continue
            if _imprint(ln):
                after_imprint = True
                continue
            if after_imprint and _only_places(ln):
                continue
            after_imprint = False
            body = HEADING.sub("", ln)
            if BOILERPLATE.search(body) or INSTITUTION.search(body):
                continue
            keep.append(ln)
    return keep


def _alternation(names) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_STATE_RX = re.compile(rf"(?<![A-Za-z])(?:{_alternation(STATES)})(?![A-Za-z])", re.IGNORECASE)
_COUNTRY_RX = re.compile(rf"(?<![A-Za-z])(?:{_alternation(COUNTRIES)})(?![A-Za-z])", re.IGNORECASE)
_STATE_NAMES = {s.lower(): s for s in STATES}


def _only_places(line: str) -> bool:
    """Whether a line holds place names and at most one other word (a ruler's ticks read as
    letters: "cle We GERMANY", "mange GERMANY")."""
    rest = _COUNTRY_RX.sub(" ", _STATE_RX.sub(" ", line))
    return rest != line and len(re.findall(r"[A-Za-zÀ-ÿ]{3,}", rest)) <= 1


def _part_of_a_name(line: str, m: re.Match) -> bool:
    """Whether a place name is part of a longer proper name rather than the place itself:
    joined by a hyphen ("Yukon-Charley Rivers", "Yukon-Tanana Uplands") or followed at once by
    a capitalised word that is not itself a place ("Alaska Highway", "ALASKA HIGHWAY", "Alaska
    Natural Heritage Program", "Washington Co."), while "ALASKA, U.S.A." and "Yukon Territory."
    state the place, as does a heading ("Maine Flora")."""
    if line[: m.start()].endswith("-") or re.match(r"-\w", line[m.end() :]):
        return True
    nxt = re.match(r" ([A-Z][\w.'’]*)", line[m.end() :])
    return bool(nxt) and not (
        _COUNTRY_RX.match(nxt.group(1))
        or _STATE_RX.match(nxt.group(1))
        or _HEADING_WORD.fullmatch(nxt.group(1))
    )


@dataclass
class _Place:
    line: int
    value: str
    country: str
    is_state: bool
    text: str
    paired: bool = False
    """A state and its country on one line ("YUKON TERRITORY, CANADA"): a place heading."""


def _places(lines: list[str]) -> list[_Place]:
    """Every country and state or province the lines name, in reading order."""
    found = []
    for i, ln in enumerate(lines):
        matches = list(_STATE_RX.finditer(ln))
        spans = [m.span() for m in matches]
        here = []
        for m in matches:
            if not _part_of_a_name(ln, m):
                state = _STATE_NAMES[m.group(0).lower()]
                here.append(_Place(i, state, STATE_COUNTRY[state], True, m.group(0)))
        for m in _COUNTRY_RX.finditer(ln):
            inside = any(a <= m.start() and m.end() <= b for a, b in spans)  # "New Mexico"
            if not inside and not _part_of_a_name(ln, m):
                here.append(
                    _Place(
                        i,
                        COUNTRIES[m.group(0).lower()],
                        COUNTRIES[m.group(0).lower()],
                        False,
                        m.group(0),
                    )
                )
        for p in here:
            p.paired = any(q.is_state != p.is_state and q.country == p.country for q in here)
        found += here
    return found


def _state_key(state: str) -> str:
    return state.removesuffix(" Territory")  # "Yukon" and "Yukon Territory" are one


def _set_places(found: list[_Place], word_conf, fields) -> None:
    """The country most place names point to, and its best-attested state. Both are sent for
    review when the names disagree: two countries ("MADE IN GERMANY" that escaped the imprint
    rules, an institution's "Provo, Utah" on a Yukon label), two states, or a state outside
    the country."""
    support = {}
    for p in found:
        support[p.country] = support.get(p.country, 0) + 1 + p.paired
    first = {}
    for p in found:
        first.setdefault(p.country, p.line)
    country = max(support, key=lambda c: (support[c], -first[c]))
    conflict = len(support) > 1
    named = [p for p in found if not p.is_state and p.country == country]
    conf = (0.9 if any(p.paired for p in named) else 0.85) if named else 0.7
    fields["country"] = Field(country, min(conf, CONFLICT) if conflict else conf)
    states = [p for p in found if p.is_state]
    if not states:
        return
    score = {}
    for p in states:
        key = _state_key(p.value)
        score[key] = score.get(key, 0) + 1 + p.paired
    inside = [p for p in states if p.country == country] or states
    best = max(inside, key=lambda p: (score[_state_key(p.value)], len(p.value), -p.line))
    conf = (0.9 if best.paired else 0.8) * _ocr_conf(best.text, word_conf)
    if best.country != country:
        conf = min(conf, OTHER_COUNTRY)
    elif conflict or len(score) > 1:
        conf = min(conf, CONFLICT)
    fields["stateProvince"] = Field(best.value, conf)


def _is_name_line(ln: str, fields) -> bool:
    g = fields.get("genus")
    return bool(g and g.value and g.value.lower() in ln.lower())
