"""The screening report: sections, self-containment, thumbnails, escaping, hot-spot order."""

import base64
import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from herbscan.report.screen import MAX_HOTSPOT_BARS, write_screen_report

EVIL = "<script>alert(1)</script>.jpg"
EVIL_META = '<img src=x onerror="alert(2)">'
SECTIONS = {
    "summary": "Summary",
    "scores": "Distribution of scores",
    "flagged": "Flagged sheets",
    "hotspots": "Hot spots",
}


def _image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((24, 16, 3)) * 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _summary(**changes) -> dict:
    summary = {
        "source": "/data/manifest.csv",
        "run": "/runs/stain-v3",
        "model_id": "smithsonian_cnn-7f3a",
        "n_inputs": 1234,
        "shard_size": 256,
        "screened": 1234,
        "failed": 7,
        "flagged": 56,
        "positive_class": "stained",
        "threshold": 0.6125,
        "threshold_source": "operating point of the run",
        "classes": ["clean", "stained"],
        "complete": True,
    }
    return {**summary, **changes}


def _row(value: str, n: int, flagged: int, low: float, high: float) -> dict:
    return {
        "value": value,
        "n": n,
        "flagged": flagged,
        "rate": flagged / n,
        "low": low,
        "high": high,
    }


HOTSPOTS = [
    {
        "column": "family",
        "rows": [
            _row("Rosaceae", 400, 40, 0.074, 0.133),
            _row("Lonely", 1, 1, 0.207, 1.0),  # given order is kept
            _row(EVIL_META, 30, 2, 0.018, 0.213),
            _row("Poaceae", 793, 13, 0.0096, 0.028),
        ],
    },
    {
        "column": "year",
        "rows": [_row(str(1850 + i), 40, 40 - i, 0.5, 0.9) for i in range(MAX_HOTSPOT_BARS + 5)],
    },
]


@pytest.fixture(scope="module")
def screen_report(tmp_path_factory):
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.beta(0.5, 12, 1171), rng.beta(6, 2, 56)]).tolist()
    flagged = [
        {
            "path": EVIL if i == 0 else f"sheets/{i:04d}.jpg",
            "specimen_id": f"US-{i:05d}",
            "score": 0.99 - 0.01 * i,
            "thumbnail": b"" if i == 2 else _image(i, "PNG" if i == 1 else "JPEG"),
            "extra": {"family": EVIL_META if i == 0 else "Rosaceae", "year": "1901"},
        }
        for i in range(5)
    ]
    path = write_screen_report(
        tmp_path_factory.mktemp("screen") / "out" / "report.html",
        title="Screen <test>",
        summary=_summary(),
        scores=scores,
        flagged=flagged,
        hotspots=HOTSPOTS,
        notes=["This collection is synthetic."],
    )
    return path, path.read_text(encoding="utf-8"), flagged


def _section(html: str, anchor: str) -> str:
    section = html[html.index(f'<section id="{anchor}">') :]
    return section[: section.index("</section>")]


def test_every_section_and_the_notes_first(screen_report):
    path, html, _ = screen_report
    for anchor, heading in SECTIONS.items():
        assert f'<section id="{anchor}">' in html and f'href="#{anchor}"' in html
        assert f"<h2>{heading}</h2>" in html
    assert html.index("This collection is synthetic.") < html.index('<section id="summary">')
    assert "lower bound of the 95% interval" in _section(html, "hotspots")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # readable like any plain file
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # temp file renamed away


def test_report_is_self_contained_with_embedded_thumbnails(screen_report):
    _, html, flagged = screen_report
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html.lower() and "<script" not in html.lower()
    assert "@import" not in html and "url(" not in html
    gallery = _section(html, "flagged")
    assert "data:image/jpeg;base64," + base64.b64encode(flagged[0]["thumbnail"]).decode() in gallery
    assert "data:image/png;base64," + base64.b64encode(flagged[1]["thumbnail"]).decode() in gallery
    assert gallery.count("no thumbnail") == 1
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', gallery)) == 3
    # score histogram and one chart per hot-spot column
    assert re.search(
        r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="Histogram',
        _section(html, "scores"),
    )
    assert (
        len(
            re.findall(
                r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" '
                r'alt="Flagged share per',
                html,
            )
        )
        == 2
    )


def test_paths_metadata_and_title_are_escaped(screen_report):
    _, html, _ = screen_report
    assert EVIL not in html and EVIL_META not in html and "<test>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in _section(html, "flagged")
    escaped_meta = "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;"
    assert escaped_meta in _section(html, "flagged")
    assert escaped_meta in _section(html, "hotspots")
    assert "Screen &lt;test&gt;" in html


def test_gallery_is_ranked_with_scores_and_metadata(screen_report):
    _, html, _ = screen_report
    gallery = _section(html, "flagged")
    ranks = [int(r) for r in re.findall(r'<span class="rank">#(\d+)</span>', gallery)]
    assert ranks == [1, 2, 3, 4, 5]
    positions = [gallery.index(f"score {0.99 - 0.01 * i:.3f}") for i in range(5)]
    assert positions == sorted(positions)
    assert "US-00003" in gallery and "<dt>year</dt><dd>1901</dd>" in gallery
    assert "Showing the 5 highest scores of 56 flagged sheets" in gallery


def test_summary_numbers_are_shown(screen_report):
    _, html, _ = screen_report
    summary = _section(html, "summary")
    for text in (
        "1,234",
        ">56<",
        ">7<",
        "0.613",
        "stained",
        "operating point of the run",
        "smithsonian_cnn-7f3a",
        "/runs/stain-v3",
        "/data/manifest.csv",
        "clean, stained",
        "4.6% of the 1,227 sheets scored",
    ):
        assert text in summary, text


def test_hotspot_tables_keep_the_given_order(screen_report):
    _, html, _ = screen_report
    hot = _section(html, "hotspots")
    assert hot.index("<h3>By family</h3>") < hot.index("<h3>By year</h3>")
    family = hot[hot.index("<h3>By family</h3>") : hot.index("<h3>By year</h3>")]
    values = re.findall(r"<tr(?: class=\"above\")?><td>([^<]*)</td>", family)
    assert values == [
        "Rosaceae",
        "Lonely",
        "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;",
        "Poaceae",
    ]
    assert "10.0%" in family and "7.4–13.3%" in family and "1.0–2.8%" in family
    # overall share over the column's rows: 56 of 1,224 sheets
    assert "4.6% of all sheets were flagged" in family
    # Rosaceae's whole interval is above the overall share; Poaceae's is not
    assert '<tr class="above"><td>Rosaceae</td>' in family
    assert "<tr><td>Poaceae</td>" in family
    year = hot[hot.index("<h3>By year</h3>") :]
    years = re.findall(r"<tr(?: class=\"above\")?><td>(\d{4})</td>", year)
    assert years == [str(1850 + i) for i in range(MAX_HOTSPOT_BARS + 5)]
    assert f"The chart shows the first {MAX_HOTSPOT_BARS}." in year


def test_empty_inputs_say_none(tmp_path):
    path = write_screen_report(
        tmp_path / "r.html",
        title="Nothing flagged",
        summary=_summary(flagged=0, failed=0, screened=3),
        scores=[0.01, 0.02, 0.03],
        flagged=[],
        hotspots=[],
    )
    html = path.read_text(encoding="utf-8")
    assert "None: no sheet scored at or above the threshold." in _section(html, "flagged")
    assert "None: no metadata columns were chosen" in _section(html, "hotspots")
    assert "data:image/png;base64," in _section(html, "scores")


def test_no_positive_class_no_scores(tmp_path):
    path = write_screen_report(
        tmp_path / "r.html",
        title="Multi-class",
        summary=_summary(
            flagged=0,
            failed=2,
            screened=2,
            positive_class=None,
            threshold=None,
            threshold_source="no positive class (more than two classes)",
            classes=["a", "b", "c"],
        ),
        scores=[],
        flagged=[],
        hotspots=[{"column": "family", "rows": []}],
    )
    html = path.read_text(encoding="utf-8")
    assert "No scores to show" in _section(html, "scores")
    assert "does not name one class to look for" in _section(html, "summary")
    assert "None: no sheet scored" in _section(html, "flagged")
    assert "No groups" in _section(html, "hotspots")
    assert "<img" not in html
