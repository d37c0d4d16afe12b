"""Reading Darwin Core archives (GBIF, Symbiota, iDigBio exports) into rows of media + terms.

An archive is a zip with `meta.xml` describing one core table (occurrences) and extensions
(multimedia). Everything is read as `meta.xml` says: file names, delimiters, quoting, encoding,
header lines, and which column holds which Darwin Core term. Media rows are joined to their
occurrence by the core id; each output row is one image with the occurrence's terms (catalog
number, scientific name, family, recorder, date, country, institution…) and the media's URL,
licence and rights holder. Rows that do not parse are reported, not fatal.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from herbscan.errors import ManifestError

MEDIA_ROW_TYPES = ("multimedia", "image", "media")
URL_TERMS = ("accessURI", "identifier", "url", "originalurl")
# provenance terms a media row overrides on the joined row when it has its own value
MEDIA_OWN = ("license", "rightsHolder", "rights", "creator", "format", "type", "title")


@dataclass
class Table:
    """One table of the archive as meta.xml describes it."""

    location: str
    row_type: str
    id_index: int | None
    fields: dict[int, str]
    defaults: dict[str, str]
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header_lines: int = 0
    rows: list[dict] = field(default_factory=list)


def _unescape(value: str | None, default: str) -> str:
    if value is None:
        return default
    return value.replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r")


def _term(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].split("#")[-1]


def _table(el, tag_id: str) -> Table:
    files = el.find("{*}files")
    location = files.find("{*}location").text.strip() if files is not None else ""
    id_el = el.find(f"{{*}}{tag_id}")
    fields, defaults = {}, {}
    for f in el.findall("{*}field"):
        term = _term(f.get("term", ""))
        if f.get("index") is not None:
            fields[int(f.get("index"))] = term
        elif f.get("default") is not None:
            defaults[term] = f.get("default")
    return Table(
        location=location,
        row_type=_term(el.get("rowType", "")),
        id_index=int(id_el.get("index")) if id_el is not None else None,
        fields=fields,
        defaults=defaults,
        delimiter=_unescape(el.get("fieldsTerminatedBy"), ","),
        quote=_unescape(el.get("fieldsEnclosedBy"), '"'),
        encoding=el.get("encoding", "utf-8") or "utf-8",
        header_lines=int(el.get("ignoreHeaderLines", "0") or 0),
    )


def _read_rows(z: zipfile.ZipFile, t: Table, problems: list[str]) -> None:
    try:
        raw = z.read(t.location)
    except KeyError:
        raise ManifestError(
            f"meta.xml names {t.location!r}, which is not in the archive; re-export it"
        ) from None
    text = raw.decode(t.encoding.lower().replace("utf8", "utf-8"), errors="replace")
    kw = {"delimiter": t.delimiter}
    if t.quote:
        kw["quotechar"] = t.quote
    else:
        kw["quoting"] = csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), **kw)
    width = max(list(t.fields) + [t.id_index or 0]) + 1
    for line_no, cells in enumerate(reader, start=1):
        if line_no <= t.header_lines or not any(c.strip() for c in cells):
            continue
        if len(cells) < width:
            problems.append(
                f"{t.location} line {line_no}: {len(cells)} fields, expected at "
                f"least {width}; skipped"
            )
            continue
        row = dict(t.defaults)
        row.update({term: cells[i].strip() for i, term in t.fields.items()})
        if t.id_index is not None:
            row["_id"] = cells[t.id_index].strip()
        t.rows.append(row)


def read_dwca(path: str | Path, *, one_per_specimen: bool = False) -> tuple[list[dict], list[str]]:
    """Rows (one per image, or per specimen) with Darwin Core terms and `url`; plus problems.

    `one_per_specimen` keeps each occurrence's first image. Occurrences without any image are
    left out (there is nothing to classify) and counted among the problems.
    """
    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ManifestError(
            f"{path}: not a readable zip ({e}); download the archive again"
        ) from None
    with z:
        try:
            meta = ElementTree.fromstring(z.read("meta.xml"))
        except KeyError:
            raise ManifestError(
                f"{path}: no meta.xml, so not a Darwin Core archive; export "
                "a DwC-A (GBIF 'Darwin Core Archive' download)"
            ) from None
        except ElementTree.ParseError as e:
            raise ManifestError(f"{path}: meta.xml is not valid XML ({e})") from None
        core_el = meta.find("{*}core")
        if core_el is None:
            raise ManifestError(f"{path}: meta.xml has no <core> table")
        problems: list[str] = []
        core = _table(core_el, "id")
        _read_rows(z, core, problems)
        media = [
            _table(el, "coreid")
            for el in meta.findall("{*}extension")
            if _term(el.get("rowType", "")).lower() in MEDIA_ROW_TYPES
        ]
        for t in media:
            _read_rows(z, t, problems)
    if not media:
        raise ManifestError(
            f"{path}: the archive has no multimedia extension, so no image "
            "URLs; export it with images/multimedia included"
        )
    occurrences = {r["_id"]: r for r in core.rows if r.get("_id")}
    out, seen = [], set()
    for t in media:
        for m in t.rows:
            occ = occurrences.get(m.get("_id", ""))
            url = next((m[k] for k in URL_TERMS if m.get(k)), "")
            if occ is None:
                problems.append(
                    f"{t.location}: media {url or '(no url)'} refers to unknown "
                    f"occurrence {m.get('_id')!r}; skipped"
                )
                continue
            if not url:
                problems.append(
                    f"{t.location}: a media row of occurrence {m['_id']!r} has no URL; skipped"
                )
                continue
            if one_per_specimen and m["_id"] in seen:
                continue
            seen.add(m["_id"])
            row = {k: v for k, v in occ.items() if k != "_id"}
            row["coreid"] = m["_id"]
            row.update({k: v for k, v in m.items() if k in MEDIA_OWN and v})
            row["url"] = url
            out.append(row)
    without = len(occurrences) - len({r["coreid"] for r in out})
    if without:
        problems.append(f"{without} occurrence(s) have no image and are left out")
    return out, problems
