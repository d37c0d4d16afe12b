"""Scientific names: find them in OCR'd text, and snap them to a collection's checklist.

Without a checklist, a name is a Latin-looking binomial (capitalised genus, lower-case or
all-caps epithet with a Latin ending) optionally followed by an infraspecific rank and name and
an authorship; candidates on English words ("University of", "Museum of") are refused. Of several
candidates, one followed by something shaped like an authorship ranks first, as does one at a
line's start; a genus whose capital OCR read small is taken only at a line's start before an
abbreviated author ("lycopodium selago L."), and sent for review.

With a checklist (`Checklist.read`: a CSV with a `scientificName` column, and optionally
`acceptedNameUsage` and `family`), each candidate is compared with every accepted binomial by
rapidfuzz similarity, and the closest one at or above `min_score` is used, with its score as the
field's confidence. A label often carries an older combination of a name the collection now files
under another genus ("Lycopodium alpinum L." for "Diphasiastrum alpinum (L.) Holub"). Rules from the
nomenclature code, not from any one collection's data, link the two:

- a checklist name in another genus with the same epithet (gender endings aside) whose
  parenthetical (basionym) author is the label's author is the same type, recombined;
- with no author read, the only checklist name with that epithet, when the label's genus is one
  the checklist holds (same family, where families are given);
- when the checklist lists both the old and the new combination and marks neither with
  acceptedNameUsage, the recombination (the later name) is used.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from herbscan.errors import ManifestError

EPITHET_MIN = 75.0
"""Similarity (0–100) an OCR'd epithet needs to the checklist name's epithet, on its own."""
SCAN_MIN_SCORE = 85.0
"""Similarity a pair of words in running text needs to a listed binomial (`Checklist.scan`)."""
UNLISTED_RANK = 59.0
"""Similarity given to a name whose subspecies or variety the checklist does not hold: the
species is used, and sent for review (below 60)."""
LINE_MIN_SCORE = 60.0
"""Similarity needed to snap a line known to hold a name (see `Checklist.snap_line`): lower than
for names found in running text, because the line cannot be anything else; such names keep the
similarity as confidence, so those below 80 are still sent for review."""
QUALIFIERS = ("cf", "aff")
"""Words of an uncertain identification written between genus and epithet."""
_QUALIFIER = "|".join(QUALIFIERS)
RANKS = {
    "var.": "variety",
    "var": "variety",
    "subsp.": "subspecies",
    "ssp.": "subspecies",
    "subsp": "subspecies",
    "ssp": "subspecies",
    "f.": "form",
    "forma": "form",
}
LATIN_END = re.compile(
    r"(a|ae|um|us|is|ii|i|es|e|on|ium|ia|ensis|oides|ata|atum|atus|ella|ina|ans|ens|ix|ax|ex|x|"
    r"or|er|os|as|ys|yx|ops|o|us|um)$"
)
NOT_GENUS = {
    "university",
    "museum",
    "herbarium",
    "national",
    "botanical",
    "state",
    "county",
    "plants",
    "flora",
    "collection",
    "collected",
    "collector",
    "determined",
    "expedition",
    "institute",
    "department",
    "college",
    "society",
    "garden",
    "gardens",
    "arboretum",
    "park",
    "forest",
    "road",
    "river",
    "lake",
    "island",
    "mountain",
    "mountains",
    "north",
    "south",
    "east",
    "west",
    "near",
    "along",
    "about",
    "growing",
    "common",
    "elevation",
    "alt",
    "date",
    "field",
    "inventory",
    "refuge",
    "wildlife",
    "technical",
    "family",
    "name",
    "location",
    "locality",
    "habitat",
    "notes",
    "det",
    "leg",
    "coll",
    "one",
    "the",
    "with",
    "and",
    "from",
    "quad",
    "environmental",
    "agreement",
    "activity",
    "ecosystems",
    "taiga",
    "tundra",
    "canada",
    "alaska",
    "america",
    "united",
    "states",
    "province",
    "district",
    "region",
    "territory",
    "ontario",
    "florida",
    "georgia",
    "carolina",
    "virginia",
    "california",
    "arizona",
    "colorado",
    "texas",
    "hawaii",
    "nevada",
    "montana",
    "oregon",
    "washington",
    "new",
    "old",
    "upper",
    "lower",
    "vicinity",
    "ca",
    "mi",
    "km",
    "sea",
    "water",
    "cubic",
    "decimeter",
    "kilogram",
    "liter",
    "measures",
    "weights",
    "of",
    "on",
    "in",
    "at",
    "to",
    "lichens",
    "mosses",
    "fungi",
    "plantae",
    "cryptogamae",
    "exsiccatae",
    "ex",
    "herb",
    "forma",
    "varietas",
    "var",
    "subsp",
    "ssp",
    "subspecies",
    "variety",
    # English prepositions, which begin a habitat's phrase ("Above timberline") as a genus
    # begins a name
    "above",
    "below",
    "beneath",
    "between",
    "beyond",
    "across",
    "around",
    "behind",
    "beside",
    "among",
    "under",
    "over",
    "into",
    "onto",
    "upon",
    "within",
    "without",
    "through",
    "toward",
    "towards",
    "opposite",
    "inside",
    "outside",
}
NOT_EPITHET = {
    "of",
    "and",
    "the",
    "for",
    "from",
    "with",
    "near",
    "university",
    "museum",
    "herbarium",
    "county",
    "state",
    "park",
    "in",
    "on",
    "at",
    "by",
    "to",
    "sp",
    "spp",
    "north",
    "south",
    "east",
    "west",
    "river",
    "lake",
    "island",
    "collection",
    "canada",
    "america",
    "alaska",
}


@dataclass
class NameGuess:
    """A scientific name parsed from a label line."""

    genus: str
    epithet: str
    rank: str = ""
    infra: str = ""
    author: str = ""
    line: str = ""
    score: float = 0.0  # how name-like, 0–1
    qualifier: str = ""
    """"cf." or "aff." written between genus and epithet (Darwin Core identificationQualifier)."""

    @property
    def binomial(self) -> str:
        return f"{self.genus} {self.epithet}"

    @property
    def full(self) -> str:
        parts = [self.binomial]
        if self.rank and self.infra:
            parts.append(f"{self.rank_abbr} {self.infra}")
        if self.author:
            parts.append(self.author)
        return " ".join(parts)

    @property
    def rank_abbr(self) -> str:
        return {"variety": "var.", "subspecies": "subsp.", "form": "f."}.get(self.rank, "")


def _norm_case(word: str, genus: bool) -> str:
    w = word.strip()
    if w.isupper() or (genus and not w[:1].isupper()):
        w = w.lower()
        return w.capitalize() if genus else w
    return w.capitalize() if genus else w.lower()


def _author(rest: str) -> tuple[str, str, str]:
    """(rank, infraspecific name, authorship) from the text after a binomial."""
    rank = infra = ""
    toks = rest.split()
    # authorship before the rank: "Lycopodium clavatum L. subsp. monostachyon (Hook.) Selander"
    for i, t in enumerate(toks):
        if (
            t.lower() in RANKS
            and i + 1 < len(toks)
            and re.fullmatch(r"[a-zA-Z\-]{3,}", toks[i + 1])
        ):
            rank, infra = RANKS[t.lower()], toks[i + 1].lower()
            author_before = " ".join(toks[:i])
            author_after = " ".join(toks[i + 2 :])
            author = _clean_author(author_after) or _clean_author(author_before)
            return rank, infra, author
    return rank, infra, _clean_author(rest)


def _clean_author(text: str) -> str:
    """Keep the leading run of tokens that look like an authorship: (L.) Holub, Michx., & Mart."""
    out = []
    for t in text.split():
        if (
            re.fullmatch(
                r"\(?[A-Z][A-Za-zÀ-ÿ'\-]*\.?\)?,?|&|ex|et|\(?[A-Z]\.\)?|\(?[A-Z][a-zà-ÿ]*\.\)?"
                r"[A-Z]?[a-z]*\.?\)?",
                t,
            )
            and len(out) < 6
        ):
            letters = t.strip("(),")
            if t.isupper() and "." not in t and (len(letters) == 3 or (out and len(t) > 3)):
                break  # the next field, or a code of three capitals ("LYC", "(VLA)")
            out.append(t.rstrip(","))
        else:
            break
    while out and out[-1] in ("&", "ex", "et"):  # the rest of the authorship is on the next line
        out.pop()
    author = " ".join(out)
    if author.count("(") != author.count(")"):
        author = author.replace("(", "").replace(")", "") if author.count(")") == 0 else author
    return author


_ABBREVIATION = re.compile(
    r"\(?(?!(?i:mt|mts|st|co|ft|pt|is|rd|hwy|twp|dist)\.)[A-Z][A-Za-zà-ÿ]{0,8}\."
)
"""An author's name abbreviated, as a binomial's authorship begins ("L.", "(L.)", "Michx."),
and not a place's ("Mt.", "St.", "Co.")."""


def looks_like_author(author: str) -> bool:
    """Whether words read after a binomial have what an authorship has: an abbreviation ("L.",
    "Michx.", or an initial whose full stop was lost), or a name in mixed case ("Holub").
    Capitals without a full stop ("CANTONS DE", "(VLA)") are the rest of a header or an
    herbarium's code, after two header words that merely look Latin ("PLANTES DES CANTONS DE
    L'EST")."""
    return any("." in t or len(t) == 1 or any(c.islower() for c in t) for t in author.split())


def qualifier_in(line: str) -> str:
    """ "cf." or "aff." when the line has one (Darwin Core identificationQualifier), else ""."""
    m = re.search(rf"\b({_QUALIFIER})\.", line, re.IGNORECASE)
    return f"{m.group(1).lower()}." if m else ""


def _latin_m(word: str) -> str:
    """A Latin word's final "um" that OCR read as "un" ("Lycopodiun", "serratun"): no genus or
    epithet ends in "un", and a worn or italic m often loses its last stroke."""
    if len(word) > 4 and word[-2:].lower() == "un":
        return word[:-1] + ("M" if word[-1] == "N" else "m")
    return word


def find_names(text: str) -> list[NameGuess]:
    """Every plausible scientific name in `text`, best first."""
    guesses = []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for k, ln in enumerate(lines):
        clean = re.sub(r"^[\W\d_]*(?:\d+\.?\s+)?", "", ln)  # "334. Lycopodium …", "= Lyco…"
        for m in re.finditer(
            r"(?<![A-Za-z])([A-Z][a-zà-ÿ]{2,}|[A-Z]{3,}|^[a-z][a-zà-ÿ]{4,})\s+"
            rf"(?:((?i:{_QUALIFIER}))\.?\s+)?"
            r"([a-zà-ÿ\-]{3,}|[A-Z\-]{3,})\b",
            clean,
        ):
            g, e = _latin_m(m.group(1)), _latin_m(m.group(3))
            if g.lower() in NOT_GENUS or e.lower() in NOT_EPITHET:
                continue
            if g.isupper() != e.isupper() and not (g[:1].isupper() and e.islower()):
                continue
            if not (LATIN_END.search(g.lower()) and LATIN_END.search(e.lower())):
                continue
            rank, infra, author = _author(clean[m.end() :])
            lower = g[0].islower()  # a capital read as small ("lycopodium"), at a line's start
            if lower and not (e.islower() and _ABBREVIATION.match(author)):
                continue
            score = 0.5
            score += 0.2 if looks_like_author(author) else 0.0
            score += 0.1 if m.start() == 0 else 0.0
            score += 0.1 if k < max(3, len(lines) // 2) else 0.0
            score -= 0.3 if g.lower().endswith("aceae") else 0.0
            if lower:  # the genus's first letter was misread, so its case is a guess: review it
                score = min(score, 0.55)
            guesses.append(
                NameGuess(
                    genus=_norm_case(g, True),
                    epithet=_norm_case(e, False),
                    rank=rank,
                    infra=infra,
                    author=author,
                    line=ln,
                    score=min(score, 1.0),
                    qualifier=f"{m.group(2).lower()}." if m.group(2) else "",
                )
            )
    guesses.sort(key=lambda g: -g.score)
    return guesses


TRANSCRIPTION_COLUMNS = {
    "needsreview",
    "fieldconfidence",
    "ocrconfidence",
    "labelboxes",
    "verbatimidentification",
}
"""Columns of a transcription (herbscan's own labels.csv, or names as read off labels), which a
checklist must not be: its names are what OCR read, junk included ("Above tinberline")."""
_LISTED_NAME = re.compile(
    r"(?:× ?)?(?P<genus>[A-Z][a-zà-ÿ]+(?:-[a-zà-ÿ]+)?|[A-Z]{2,}(?:-[A-Z]+)?)"
    r"(?: (?:× ?)?(?P<epithet>[a-zà-ÿ]+(?:-[a-zà-ÿ]+)*|[A-Z]+(?:-[A-Z]+)*)(?![\w.]))?"
    r"(?P<rest> .*)?"
)


_PARTICLES = {
    "de",
    "van",
    "von",
    "du",
    "la",
    "le",
    "in",
    "ex",
    "et",
    "da",
    "dos",
    "der",
    "den",
    "ter",
    "zu",
    "forma",
    "sensu",
}
"""Lower-case words that may begin what follows a name: an author's particle ("de Candolle"),
"ex", "in", "forma", "sensu"."""


def looks_like_a_name(name: str) -> bool:
    """Whether a checklist entry is shaped like a scientific name: a capitalised genus of
    letters (a hybrid's "×" allowed), optionally an epithet in lower case (or a name all in
    capitals), then anything (rank, authorship); neither part one of the words that labels
    carry besides names (`NOT_GENUS`, `NOT_EPITHET`: "Herbarium", "University of", "Above"),
    an epithet with a vowel, and what follows beginning as a rank or an authorship does, without
    digits other than a year."""
    m = _LISTED_NAME.fullmatch(" ".join(name.split()))
    if not m:
        return False
    genus, epithet = m.group("genus"), m.group("epithet") or ""
    if genus.isupper() and epithet and not epithet.isupper():
        return False
    if len(genus) < 3 or genus.lower() in NOT_GENUS:
        return False
    if epithet and (
        epithet.lower() in NOT_EPITHET or not re.search(r"[aeiouyà-ÿ]", epithet, re.IGNORECASE)
    ):
        return epithet.lower() in ("sp", "spp")
    rest = (m.group("rest") or "").split()
    if rest and not (
        rest[0][0] in "([×&"
        or rest[0][0].isupper()
        or rest[0].endswith(".")
        or rest[0].lower() in RANKS
        or rest[0] in _PARTICLES
    ):
        return False  # "Leygcopool wm fee": words, not a rank or an authorship
    return not re.search(r"\d", " ".join(re.sub(r"\b1[5-9]\d\d\b", "", t) for t in rest))


@dataclass
class Checklist:
    """Accepted names of a collection, for snapping OCR'd names (see module docstring)."""

    names: list[str]
    accepted: dict[str, str] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self._keys = [binomial_key(n) for n in self.names]
        self._genera = {k.partition(" ")[0] for k in self._keys}
        self._parts = [split_name(n) for n in self.names]
        self._by_key: dict[str, str] = {}
        for n, k in zip(self.names, self._keys):
            if " " in k:
                self._by_key.setdefault(k, n)

    @classmethod
    def read(cls, path: str | Path) -> Checklist:
        """A checklist from a UTF-8 CSV (see the class), or one line saying what to fix."""
        path = Path(path)
        if not path.is_file():
            raise ManifestError(
                f"{path}: no such checklist; give a CSV with a scientificName "
                "column (optional: acceptedNameUsage, family)"
            )
        try:
            return cls._read(path)
        except UnicodeDecodeError:
            raise ManifestError(
                f"{path}: not UTF-8 text; save the checklist as UTF-8 CSV"
            ) from None
        except csv.Error as e:
            raise ManifestError(f"{path}: malformed CSV ({e}); fix the checklist") from None

    @classmethod
    def _read(cls, path: Path) -> Checklist:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {c.lower().replace("_", ""): c for c in reader.fieldnames or []}
            own = [c for k, c in cols.items() if k in TRANSCRIPTION_COLUMNS]
            if own:
                raise ManifestError(
                    f"{path}: this is a transcription (it has {', '.join(own)}), not a "
                    "checklist: names read off labels would be taken as right; give the "
                    "collection's list of accepted names (a scientificName column)"
                )
            col = cols.get("scientificname") or cols.get("name") or cols.get("taxon")
            if not col:
                raise ManifestError(
                    f"{path}: no scientificName column (found "
                    f"{', '.join(reader.fieldnames or [])}); rename the column "
                    "holding the names to scientificName"
                )
            acc_col = cols.get("acceptednameusage") or cols.get("acceptedname")
            fam_col = cols.get("family")
            names, accepted, families, skipped = [], {}, {}, []
            for r in reader:
                n = " ".join((r.get(col) or "").split())
                if not n:
                    continue
                if not looks_like_a_name(n):
                    skipped.append(n)
                    continue
                names.append(n)
                if acc_col and (r.get(acc_col) or "").strip():
                    accepted[n] = " ".join(r[acc_col].split())
                if fam_col and (r.get(fam_col) or "").strip():
                    families[n] = r[fam_col].strip()
        if skipped:
            warnings.warn(
                f"{path}: {len(skipped)} entries are not shaped like scientific names "
                f"and were skipped (e.g. {skipped[0]!r}); a name is a capitalised "
                "genus, optionally a lower-case epithet, rank and authorship",
                stacklevel=3,
            )
        if not names:
            raise ManifestError(
                f"{path}: the checklist has no names; fill its scientificName column"
            )
        return cls(sorted(set(names)), accepted, families)

    def snap(self, guess: NameGuess, min_score: float = 80.0) -> tuple[str, float] | None:
        """(checklist name, similarity 0–100) for a guessed name, or None below `min_score`.

        The epithet has to match on its own too (`EPITHET_MIN`): a shared genus must not turn
        "Lycopodium lucidulum" into "Lycopodium dubium"."""
        from rapidfuzz import fuzz, process

        key = binomial_key(guess.binomial)
        hit = process.extractOne(key, self._keys, scorer=fuzz.ratio) if key else None
        score, i = (hit[1], hit[2]) if hit else (0.0, -1)
        if i >= 0 and _epithet_score(self._keys[i].partition(" ")[2], guess.epithet) < EPITHET_MIN:
            score = 0.0
        if score < 90:  # the label's own combination is not in the checklist
            alt = self._homotypic(guess)
            if alt is not None and alt[1] > score:
                return alt
        if score < min_score:
            return None
        name, same_rank = self._rank_of(i, guess)
        if not same_rank:  # "var. pungens" where the list holds the species only: review it
            score = min(score, UNLISTED_RANK)
        if name in self.accepted:
            return self.accepted[name], float(score)
        return self.recombination(name) or name, float(score)

    def _rank_of(self, i: int, guess: NameGuess) -> tuple[str, bool]:
        """Of the listed names sharing name `i`'s binomial, the one at the label's rank (its
        subspecies or variety when listed, under either rank word), else the species; and
        whether the label's rank and infraspecific name were found."""
        same = [
            (n, p)
            for n, p, k in zip(self.names, self._parts, self._keys, strict=True)
            if k == self._keys[i]
        ]
        infra = guess.infra.lower()
        if infra:
            listed = [(n, p) for n, p in same if p.infra.lower() == infra]
            if listed:
                return next((n for n, p in listed if p.rank == guess.rank), listed[0][0]), True
        species = next((n for n, p in same if not p.rank), self.names[i])
        return species, not infra

    def recombination(self, name: str) -> str | None:
        """The checklist's later combination of `name`'s type, when the checklist holds one and
        says nothing else (no acceptedNameUsage): same epithet, another genus, and `name`'s author
        in parentheses as its basionym author ("Lycopodium alpinum L." → "Diphasiastrum alpinum
        (L.) Holub"). A recombination is always later than its basionym, and a collection files
        specimens under the current name."""
        own = split_name(name)
        author = _first_author(own.author)
        if not author or "(" in own.author or own.rank:
            return None
        for other, g in zip(self.names, self._parts):
            m = re.match(r"\(([^)]+)\)", g.author)
            if (
                g.epithet.lower() == own.epithet.lower()
                and g.genus != own.genus
                and not g.rank
                and m
                and _first_author(m.group(1)) == author
            ):
                return self.accepted.get(other, other)
        return None

    def snap_line(
        self, readings: list[str], min_score: float = LINE_MIN_SCORE
    ) -> tuple[str, float] | None:
        """(checklist name, similarity 0–100) for a line known to hold one name (a name cut from a
        label), given one or more OCR readings of it; None below `min_score`.

        Every reading is compared (lower case, letters only) with every listed name without its
        authorship (a genus listed alone included), and the best pair wins: the checklist picks the
        reading that makes sense rather than the one tesseract was surest of, as lexicon-driven
        handwriting recognition does.
        """
        from rapidfuzz import fuzz, process

        keys, names = self._line_entries()
        best = None
        for text in readings:
            words = re.findall(r"[A-Za-zÀ-ÿ\-]+", text)
            if not words:
                continue
            hit = process.extractOne(" ".join(words).lower(), keys, scorer=fuzz.ratio)
            if hit is not None and (best is None or hit[1] > best[1]):
                best = (names[hit[2]], float(hit[1]))
        if best is None or best[1] < min_score:
            return None
        return self.accepted.get(best[0], best[0]), best[1]

    def scan(self, text: str, min_score: float = SCAN_MIN_SCORE) -> tuple[str, float, str] | None:
        """(checklist name, similarity 0–100, line) for the pair of adjacent words in `text`
        closest to a listed binomial: finds names whose Latin shape OCR broke ("Lyc0podium
        annotinum", "copodium complanatum") and `find_names` therefore misses. Every word pair is
        a candidate, so the bar is high."""
        from rapidfuzz import fuzz, process

        keys = list(self._by_key)
        best = None
        for line in text.splitlines():
            words = [
                w for w in re.findall(r"[A-Za-zÀ-ÿ\-]{2,}", line) if w.lower() not in QUALIFIERS
            ]
            for pair in pairwise(words):
                cand = " ".join(pair).lower()
                hit = process.extractOne(cand, keys, scorer=fuzz.ratio, score_cutoff=min_score)
                if hit is None or (best is not None and hit[1] <= best[1]):
                    continue
                if _epithet_score(pair[1], hit[0].partition(" ")[2]) >= EPITHET_MIN:
                    best = (hit[0], float(hit[1]), line)
        if best is None:
            return None
        name = self._by_key[best[0]]
        current = self.accepted.get(name) or self.recombination(name) or name
        return current, best[1], best[2]

    def _line_entries(self) -> tuple[list[str], list[str]]:
        """(comparison keys, names): each name without its authorship."""
        if not hasattr(self, "_lines"):
            entries: dict[str, str] = {}
            for name, g in zip(self.names, self._parts):
                rank = {"variety": "var", "subspecies": "subsp", "form": "f"}.get(g.rank, "")
                key = " ".join(p for p in (g.genus, g.epithet, rank, g.infra) if p).lower()
                entries.setdefault(key, name)
            self._lines = (list(entries), list(entries.values()))
        return self._lines

    def _homotypic(self, guess: NameGuess) -> tuple[str, float] | None:
        """The checklist's name for the label's combination when that is not listed: a name
        in another genus with the same epithet (gender endings aside: inundatum, inundata) that
        is either a recombination citing the label's author as basionym author, or — when no
        author was read — the only such name in the checklist, while the label's genus is one
        the checklist holds (of the same family, where families are given)."""
        author = _first_author(guess.author)
        genus = guess.genus.lower()
        by_author, by_epithet = None, {}
        for name, key in zip(self.names, self._keys):
            g, _, e = key.partition(" ")
            e_score = _epithet_score(e, guess.epithet)
            if g == genus or e_score < 85:
                continue
            m = re.search(r"\(([^)]+)\)", name)
            if (
                author
                and m
                and _first_author(m.group(1)) == author
                and (by_author is None or 0.9 * e_score > by_author[1])
            ):
                by_author = (self.accepted.get(name, name), 0.9 * e_score)
            by_epithet.setdefault(key, (name, e_score))
        if by_author is not None:
            return by_author
        if len(by_epithet) != 1 or genus not in self._genera:
            return None
        name, e_score = next(iter(by_epithet.values()))
        families = {
            self.families.get(n)
            for n, k in zip(self.names, self._keys)
            if k.partition(" ")[0] == genus
        }
        if self.families.get(name) and None not in families and self.families[name] not in families:
            return None
        return self.accepted.get(name, name), 0.85 * e_score


def epithet_stem(epithet: str) -> str:
    """An epithet without its Latin gender ending, so that a name moved to a genus of another
    gender still matches (Lycopodium inundatum → Lycopodiella inundata)."""
    e = epithet.lower()
    return re.sub(r"(um|us|a|is|e|er|ra|rum)$", "", e) if len(e) > 4 else e


def _epithet_score(a: str, b: str) -> float:
    """Similarity (0–100) of two epithets, gender endings aside."""
    from rapidfuzz import fuzz

    return fuzz.ratio(epithet_stem(a), epithet_stem(b))


def _first_author(author: str) -> str:
    """'(L.) Holub' → 'l': the first author's name, for comparing authorships."""
    words = author.strip("() ").split()
    return words[0].strip("().,").lower() if words else ""


def binomial_key(name: str) -> str:
    """'Lycopodium clavatum L. subsp. x' → 'lycopodium clavatum' (for comparing names); a
    hybrid's sign stays with its epithet ('Diphasiastrum × zeilleri' → 'diphasiastrum
    ×zeilleri'), so that the hybrids of a genus do not share one key."""
    words = re.findall(r"[A-Za-zÀ-ÖØ-öø-ÿ\-]+|×", name)
    if len(words) > 2 and words[1] == "×":
        words = [words[0], "×" + words[2], *words[3:]]
    return " ".join(w.lower() for w in words[:2])


def split_name(name: str) -> NameGuess:
    """A checklist name split into its parts (genus, epithet, rank, infra, author)."""
    toks = name.split()
    genus = toks[0] if toks else ""
    epithet = toks[1] if len(toks) > 1 else ""
    rank, infra, author = _author(" ".join(toks[2:]))
    return NameGuess(genus=genus, epithet=epithet, rank=rank, infra=infra, author=author, line=name)
