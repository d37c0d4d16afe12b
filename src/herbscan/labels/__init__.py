"""Transcription of specimen labels: barcodes, label regions, OCR and Darwin Core fields.

    sheet ─► barcodes (zxing-cpp)
          ├► stamp outlines ─► number line ─► number readers (numreader, trained on numsynth)
          └► layout pass (tesseract) ─► label regions ─► crop, turn, deskew ─► OCR
                                                           └► fields (rules + checklist) ─► CSV/JSON

Modules, each one concept: `ocr` (tesseract wrapper and image preparation), `barcodes`,
`regions`, `stamps`, `numsynth` (synthetic stamped numbers), `numreader` (the small recogniser
trained on them; the only torch user here, imported lazily), `read` (one sheet's image work),
`names` (scientific names and checklists), `fields` (text → Darwin Core), `transcribe` (a
collection → CSV/JSON, parallel and resumable) and `scoring` (CER and field accuracy against
ground truth).
"""

from herbscan.labels.names import Checklist
from herbscan.labels.scoring import evaluate_transcription
from herbscan.labels.transcribe import transcribe, transcribe_sheet

__all__ = ["Checklist", "evaluate_transcription", "transcribe", "transcribe_sheet"]
