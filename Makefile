# Two commands set everything up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= models/cnn.onnx
# MXNet 1.9.1 needs numpy < 1.24 and onnx < 1.17 (no wheels past Python 3.11): its own venv,
# made with the first Python 3.8-3.11 that runs.
MXVENV := .venv-mxnet
MXPY ?= $(shell for p in python3.11 python3.10 python3.9 python3.8 $(PY); do $$p -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 11))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: demo test lint install install-test models fuzz bench worth-it clean

$(BIN)/onnxgrow: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,torch]'
	touch $@

install: $(BIN)/onnxgrow

install-test: $(VENV)/.test-installed

$(MXVENV)/.installed:
	@test -n "$(MXPY)" || { echo "no Python 3.8-3.11 found for MXNet 1.9.1 (set MXPY=...)"; exit 1; }
	$(MXPY) -m venv $(MXVENV)
	$(MXVENV)/bin/pip install -q mxnet==1.9.1 'numpy<1.24' 'onnx<1.17'
	$(MXVENV)/bin/python -c "import mxnet, onnx; from mxnet.contrib import onnx as onnx_mxnet"
	touch $@

demo: install
	@mkdir -p out
	@echo "== verify models/mlp.onnx against itself"
	$(BIN)/onnxgrow verify models/mlp.onnx models/mlp.onnx
	@echo "== verify against a copy with one weight changed by 1e-3 (expected to FAIL, exit 1)"
	$(BIN)/python -m onnxgrow.demo perturb models/mlp.onnx out/perturbed.onnx
	-$(BIN)/onnxgrow verify models/mlp.onnx out/perturbed.onnx
	@echo "== widen every group of $(MODEL) x2, verified before writing, then inspect the result"
	$(BIN)/onnxgrow widen $(MODEL) -o out/wide.onnx --all x2
	$(BIN)/onnxgrow inspect out/wide.onnx

# lint first (ruff check, ruff format --check and mypy, configured in pyproject.toml), then the whole suite
test: install-test $(MXVENV)/.installed lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

# a long random search of tests/test_fuzz.py (make test runs 200 examples); FUZZ_EXAMPLES=N to choose
FUZZ_EXAMPLES ?= 5000
fuzz: install-test
	ONNXGROW_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) ONNXGROW_FUZZ_RANDOM=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py --hypothesis-show-statistics

# speed and memory of growing VGG-16, a BERT-base encoder and a > 2 GB MLP (issue 9); ~16 GB RAM, minutes;
# then a BERT-base encoder grown to hidden 1536 and 24 layers (issue 7); then inspect/widen/deepen of 12 to 768
# layers against the floor and deepen of BERT-base to 24 layers (issue 17)
bench: install-test
	-$(BIN)/pip install -q polygraphy
	$(BIN)/python bench/grow_speed.py --markdown bench/results/grow_speed.md
	$(BIN)/python bench/grow_transformer.py --markdown bench/results/grow_transformer.md
	$(BIN)/python bench/grow_depth.py --markdown bench/results/grow_depth.md

# is growing worth it? a byte-level language model trained, grown with onnxgrow and compared with the big
# model from scratch at equal FLOPs, 3 seeds, one process per core (13 minutes on 2 quiet cores); writes
# bench/results/worth_it_lm.* and the results section of the README (the older digits experiment:
# python bench/worth_it.py); WORTH_IT_ARGS adds options (e.g. --seeds 5, --jobs 1)
WORTH_IT_ARGS ?=
worth-it: install-test
	$(BIN)/python bench/worth_it_lm.py --out bench/results --readme README.md $(WORTH_IT_ARGS)

models: install-test
	$(BIN)/python models/build_models.py

clean:
	rm -rf $(VENV) out .pytest_cache
