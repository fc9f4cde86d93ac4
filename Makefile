# make demo  : set up .venv, then run the whole recipe on the tiny preset (CPU, bundled real data)
# make test  : set up .venv, then run the test suite
# make bench : set up .venv, run the benchmarks (short mode; CONAN_BENCH_FULL=1 for full sizes) and
#              check their ratios against benchmarks/thresholds.json; SUITE=attention (or
#              SUITE=attention,norms) runs only benchmarks/test_<suite>.py, and the check then
#              reports the other suites' ratios as "not run"
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.conan-installed
RUN_DIR ?= runs/tiny
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo test bench clean

DEMO_STAMP := $(VENV)/.conan-demo-installed

# The venv, then (without an NVIDIA GPU) the CPU build of torch first: a bare `torch` requirement
# would pull a multi-GB CUDA build.
define venv_and_torch
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then \
	  $(PY) -m pip install --quiet "torch==2.13.0"; fi
endef

$(STAMP): pyproject.toml plugins/conan-example/pyproject.toml plugins/conan-apex/pyproject.toml
	$(venv_and_torch)
	$(PY) -m pip install --quiet -e ".[cpu,dev,demo]" -e plugins/conan-example -e plugins/conan-apex
	touch $@

# make demo installs only what the demo runs (faiss, the demo corpus's packages, BM25, plots):
# about 36 s less set-up than everything make test needs (test tools, mteb, peft, trackers, plugins).
$(DEMO_STAMP): pyproject.toml
	$(venv_and_torch)
	$(PY) -m pip install --quiet -e ".[cpu,demo,eval]"
	touch $@

setup: $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/conan run tiny --out $(RUN_DIR)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

comma := ,
SUITE ?=
BENCH_SUITES := $(patsubst benchmarks/test_%.py,%,$(wildcard benchmarks/test_*.py))
BENCH_FILES := $(if $(strip $(SUITE)),$(patsubst %,benchmarks/test_%.py,$(subst $(comma), ,$(SUITE))),benchmarks)

# One thread per process and CPU-time rounds (benchmarks/interleave.py) keep the ratios steady on a
# shared machine; TOKENIZERS_PARALLELISM=false keeps the tokenizers on that one thread too.
bench: setup
	@for f in $(BENCH_FILES); do test -e $$f || { echo "make bench: no suite $$f; SUITE is one or more (comma-separated) of: $(BENCH_SUITES)" >&2; exit 2; }; done
	mkdir -p .benchmarks
	OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest $(BENCH_FILES) -q -p no:cacheprovider --benchmark-only --benchmark-json=.benchmarks/latest.json
	$(PY) benchmarks/check_ratios.py .benchmarks/latest.json

clean:
	rm -rf $(VENV) runs .benchmarks
