# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch must be installed before the project, or pip resolves a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: install demo test test-fast bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev]"
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null) || echo "note: could not install ffmpeg; data=musdb with .stem.mp4 needs it (apt-get install ffmpeg)"; \
	  else echo "note: ffmpeg not found; data=musdb needs it: sudo apt-get install ffmpeg"; fi; }
	touch $(STAMP)

DEMO_STYLE ?= rock_punk

demo: install
	$(PY) -m automix.demo demo/stems
	$(PY) mix.py --stems demo/stems/*.wav --style $(DEMO_STYLE) --output demo/mix.wav \
	  --analysis-output demo/analysis.json --plot demo/mix.png --validate

test: install
	$(PY) -m pytest -q --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/bench_dsp.py
	$(PY) benchmarks/bench_mix.py

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
