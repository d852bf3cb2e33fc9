# The README's two commands: `make demo` and `make test`. Both set up everything they need on a fresh
# Debian/Ubuntu machine with Python 3.11: ffmpeg, espeak-ng and chromium from apt when missing, Python packages in .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Rules call the `mcnflow` CLI, so the venv's bin goes first on PATH.
RUN := PATH="$(BIN):$$PATH"

.PHONY: demo test test-slurm setup system-deps lint clean-demo

system-deps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo "installing ffmpeg with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg; }
	@command -v espeak-ng >/dev/null || { \
	  echo "installing espeak-ng with apt-get (the demo corpus speaks its captions with it)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium with apt-get (the tests open the report in it, headless)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	@$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || { \
	  echo "installing python3-venv with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision pinned in pyproject.toml (2.14.1 / 0.29.1)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: system-deps $(STAMP)

demo: setup
	$(RUN) snakemake --profile profiles/local --cores $(CORES) --configfile demo/config.yaml
	$(RUN) snakemake --cores 1 --configfile demo/config.yaml --report results/report.html
	@echo
	@echo "results table: $(CURDIR)/results/summary.csv (and summary.md)"
	@echo "HTML report:   $(CURDIR)/results/report.html"
	@echo "ledgers:       $(CURDIR)/results/download/*/shard-*.tsv, results/download/*/survival.tsv"

test: setup
	$(RUN) pytest -q

# A real single-node SLURM (slurmctld, slurmd, slurmdbd + MariaDB, munge) and the demo through profiles/slurm.
test-slurm: setup
	$(SUDO) bash scripts/slurm/start-cluster.sh
	MCNFLOW_SLURM=1 $(RUN) pytest -q -m slurm tests/test_slurm.py

lint: setup
	$(RUN) snakemake --lint --configfile demo/config.yaml
	$(RUN) snakefmt --check Snakefile workflow/

clean-demo:
	rm -rf results logs benchmarks/results .snakemake
