# Two commands: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
# Both create .venv with Python 3.11 and install the project. Without an NVIDIA GPU, torch is
# installed as the CPU build (TORCH_SPEC); with one, the default build. The package itself
# requires plain `torch>=2.2`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
DEMO_OUT ?= demo-out

.PHONY: setup demo test gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" || $(BIN)/pip install --quiet torch
	$(BIN)/pip install --quiet -e ".[test]"
	# fastMRI's own evaluate.py, for the compatibility test of `recon evaluate` (its heavy deps are not needed)
	$(BIN)/pip install --quiet --no-deps "fastmri==0.3.0" "runstats==2.0.0"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/recon demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q tests

# On a machine with an NVIDIA GPU: the CUDA check table, then every CUDA test (one thread per process: oversubscribed
# torch threads make the suite many times slower)
gpu-check: setup
	$(BIN)/python -m benchmarks.cuda_check
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -k "cuda or test_devices" tests

clean:
	rm -rf $(VENV) $(DEMO_OUT)
