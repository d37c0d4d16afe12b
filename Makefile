PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Which PyTorch build the install takes (README "Installing: what each platform gets"):
#   TORCH=auto (default): pip's own configuration decides when it names an index, find-links or a
#   constraint; else Linux with an NVIDIA GPU: cuda, other Linux: cpu, macOS and Windows: PyPI's.
#   TORCH=cpu | cuda | pip chooses. scripts/pip_args.sh decides and prints the pip arguments.
TORCH ?= auto
TORCH_MODE := $(shell TORCH='$(TORCH)' PY='$(PY)' sh scripts/pip_args.sh --mode)
ifeq ($(TORCH_MODE),)
$(error TORCH must be auto, cpu, cuda or pip; got '$(TORCH)')
endif
TORCH_ARGS := $(shell TORCH=$(TORCH_MODE) sh scripts/pip_args.sh)
TORCH_NOTE := $(shell TORCH=$(TORCH_MODE) sh scripts/pip_args.sh --describe)
PIP := $(strip $(BIN)/pip install -q -c constraints.txt $(TORCH_ARGS))

.PHONY: demo test lint install dev ocr clean

$(BIN)/python:
	@echo "Creating the virtual environment $(VENV) ..."
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt constraints-cpu.txt
	@echo "Installing herbscan and $(TORCH_NOTE) into $(VENV)."
	@echo "This takes a few minutes, and pip prints nothing meanwhile ..."
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	@echo "Installing the development tools (pytest, ruff) and the dask and onnx extras ..."
	$(PIP) -e ".[dev]"
	touch $@

install: $(VENV)/.installed ocr

# Tesseract is a program, not a Python package: apt when we are root, otherwise say what to run.
ocr:
	@if command -v tesseract >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Tesseract OCR with apt-get ..."; \
	  (apt-get update -qq && apt-get install -y -qq tesseract-ocr tesseract-ocr-eng \
	    tesseract-ocr-lat) || echo "apt could not install tesseract-ocr; transcribe needs it"; \
	else echo "herbscan transcribe needs Tesseract: sudo apt install tesseract-ocr tesseract-ocr-eng" \
	  "tesseract-ocr-lat (macOS: brew install tesseract tesseract-lang)"; fi
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	@echo "Running the demo: a synthetic herbarium, trained and evaluated (a few minutes) ..."
	$(BIN)/herbscan demo --out runs/demo

test: $(VENV)/.dev ocr
	@echo "Running the test suite ..."
	$(BIN)/python -m pytest -q

# ruff is pinned in the dev extra and its rules in pyproject.toml, so results do not drift.
lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
