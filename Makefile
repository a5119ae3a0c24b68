# Two commands on a fresh machine (see README):
#   make all    set up, run every chapter on the embedded default, build the HTML book into _build/html
#   make test   set up, lint, run the tests (unit, real-model, pipeline smoke run, book build, browser check)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= default

# Offline by default: no model hub unless asked (`make chapter ... HF_HUB_OFFLINE=0` on a machine with hub
# access, e.g. for the `full` profile); external data sets from the mirror beside the checkout when present.
SHARED_DATA := $(abspath ../shared/data)
export RMVALUES_DATA_MIRROR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
HF_HUB_OFFLINE ?= 1
export HF_HUB_OFFLINE
export TRANSFORMERS_OFFLINE := $(HF_HUB_OFFLINE)
export HF_DATASETS_OFFLINE := $(HF_HUB_OFFLINE)
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: all setup browser rstats run chapter audit book test lint format bench bench-rebuild bench-gpu toc clean distclean

all: setup browser rstats run book ## main job: every chapter on the embedded default, then the book (checked)

setup: $(VENV)/.installed ## create .venv from the pinned requirements (idempotent)

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

browser: ## headless Chromium for the book check (Debian package)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium (book check)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; the browser test will be skipped"; }

# R with nlme and lmerTest (Debian packages, without their recommends), for the tests that cross-check the
# Python mixed model against the paper's nlme::lme; installed only when Rscript or a package is missing.
RSTATS_CHECK := Rscript --vanilla -e 'suppressPackageStartupMessages({library(nlme); library(lmerTest)})'
rstats: ## R with nlme and lmerTest for the mixed-model cross-check (Debian packages)
	@{ command -v Rscript >/dev/null 2>&1 && $(RSTATS_CHECK) >/dev/null 2>&1; } || { \
	  echo "installing Debian R with nlme and lmerTest (mixed-model cross-check)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	     -o DPkg::Lock::Timeout=300 r-base-core r-cran-nlme r-cran-lmertest >/dev/null) \
	  || echo "WARNING: could not install R (nlme, lmerTest); the R cross-check tests will be skipped"; }

run: setup ## run all stages (PROFILE=default|tiny|full)
	$(BIN)/python -m rmvalues run --profile $(PROFILE)

# PARAMS and RUN travel through the environment, so values with spaces or quotes reach the runner intact
# (PARAMS="families=[gemma, llama] note='a text'"); the runner splits and parses them.
export PARAMS RUN
chapter: setup ## run one stage: make chapter NAME=corpora [RUN=name] [PARAMS="key=value ..."]
	@test -n "$(NAME)" || { echo "usage: make chapter NAME=<stage> [RUN=<run name>] [PARAMS=\"key=value ...\"]"; exit 2; }
	$(BIN)/python -m rmvalues run "$(NAME)" --profile $(PROFILE) $${RUN:+--run "$$RUN"} --params "$${PARAMS:-}"

# One reward model placed among the ten published ones: a named run of the audit stage (scored first when no
# scoring run holds its scores), then the book with its page under "Audits". RUN names the run (default: MODEL).
audit: setup ## audit one RM: make audit MODEL=<registry entry> [RUN=name] [PARAMS="key=value ..."]
	@test -n "$(MODEL)" || { echo "usage: make audit MODEL=<registry entry of a reward model> [RUN=<run name>] [PARAMS=\"key=value ...\"]"; exit 2; }
	$(BIN)/python -m rmvalues run audit --profile $(PROFILE) --run "$${RUN:-$(MODEL)}" --params "models=[$(MODEL)] $${PARAMS:-}"
	$(BIN)/python -m rmvalues book

book: setup ## build the HTML book (warnings are errors), then check it (links, figures, Chromium)
	$(BIN)/python -m rmvalues book
	$(BIN)/python -m rmvalues check-book

toc: setup ## write the committed _toc.yml again (after adding or removing a stage in config/run.yaml)
	$(BIN)/python -m rmvalues toc

lint: setup
	$(BIN)/ruff check lib tests benchmarks notebooks
	$(BIN)/ruff format --check lib tests benchmarks notebooks

format: setup
	$(BIN)/ruff check --fix lib tests benchmarks notebooks
	$(BIN)/ruff format lib tests benchmarks notebooks

test: setup browser rstats lint ## the test suite
	$(BIN)/python -m pytest -q

bench: setup ## performance benchmarks on the CPU (side by side with the naive approach)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

bench-rebuild: setup ## after make all: unchanged make all with 25 named runs, and with one changed (benchmarks/rebuild.py)
	$(BIN)/python benchmarks/rebuild.py --runs 25

bench-gpu: setup ## accelerator benchmarks (at most 8 minutes on one GPU): writes benchmarks/results/gpu-*.json
	$(BIN)/python benchmarks/gpu.py --budget-s 480

clean: ## remove build products (executed pages, book, results, named runs)
	rm -rf _build book/generated results/*/ results/named_runs.yaml

distclean: clean
	rm -rf $(VENV)
