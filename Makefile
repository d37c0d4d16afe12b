PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt

.PHONY: demo test install dev ocr clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

install: $(VENV)/.installed ocr

# Tesseract is a program, not a Python package: apt when we are root, otherwise say what to run.
ocr:
	@if command -v tesseract >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && apt-get install -y -qq tesseract-ocr tesseract-ocr-eng \
	    tesseract-ocr-lat) || echo "apt could not install tesseract-ocr; transcribe needs it"; \
	else echo "herbscan transcribe needs Tesseract: sudo apt install tesseract-ocr tesseract-ocr-eng" \
	  "tesseract-ocr-lat (macOS: brew install tesseract tesseract-lang)"; fi
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(BIN)/herbscan demo --out runs/demo

test: $(VENV)/.dev ocr
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
