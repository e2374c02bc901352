# Two commands set everything up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= models/cnn.onnx

.PHONY: demo test install install-test models fuzz clean

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

test: install-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

models: install-test
	$(BIN)/python models/build_models.py

clean:
	rm -rf $(VENV) out .pytest_cache
