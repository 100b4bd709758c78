# COMP5541 coursework bundle. `make help` lists the targets.
#
# Every target builds its own virtual environment (.venv) from requirements.txt
# first, so a fresh machine needs nothing but Python 3.10+.

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
KERNEL     ?= comp5541
DATA_DIR   ?= data
# Extra papermill parameters, e.g. SET="epochs=5 device=cuda"
SET        ?=
NOTEBOOKS  ?= Q1/Q1.ipynb Q2/Q2.ipynb Q3/Q3.ipynb \
              extras/theory_checks.ipynb extras/numpy_mlp.ipynb extras/fashion_mnist.ipynb
PYTEST_ARGS ?=

STAMP := $(VENV)/.requirements-stamp
# The venv's Python once it exists, else the system's: for the targets that need only the
# standard library (bundle, clean-smoke), so they work before `make venv`.
ANY_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
# A value in single quotes for the shell, whatever it holds (spaces, brackets, quotes):
# $(call quoted,$(SET)). make passes it whole; the Python side parses it.
quoted = '$(subst ','\'',$(1))'
RUN = $(PY) -m common.tools.run --kernel $(KERNEL) --data-dir $(call quoted,$(DATA_DIR)) \
      --sets $(call quoted,$(SET))

.DEFAULT_GOAL := help
.PHONY: help venv test smoke quick all plan clean bundle clean-smoke

help:  ## Show this help
	@echo "COMP5541 bundle. Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Variables: DATA_DIR=$(DATA_DIR)  SET=\"key=value ...\"  NOTEBOOKS=\"$(NOTEBOOKS)\""

# The venv is rebuilt when requirements.txt is newer than the stamp, so an
# added dependency never leaves a stale environment behind.
$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed; set PYTHON=/path/to/python3.10")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# A named kernel inside the venv: papermill then runs the notebooks with
	@# this environment's Python, never whatever "python3" kernel is on PATH.
	$(PY) -m ipykernel install --prefix $(VENV) --name $(KERNEL) --display-name "COMP5541 bundle ($(VENV))" >/dev/null
	@touch $@

venv: $(STAMP)  ## Create or refresh the virtual environment

test: $(STAMP)  ## Run the test suite on the CPU (about 10 minutes)
	$(PY) -m pytest $(PYTEST_ARGS)

smoke: $(STAMP)  ## Every notebook end to end on tiny data, CPU, a few minutes
	$(RUN) --profile profiles/smoke.yaml $(NOTEBOOKS)

quick: $(STAMP)  ## Every notebook on a CPU budget: real numbers in under an hour each
	$(RUN) --profile profiles/quick.yaml $(NOTEBOOKS)

all: $(STAMP)  ## Every notebook with the full settings (GPU recommended)
	$(RUN) --profile profiles/full.yaml $(NOTEBOOKS)

# PROFILE: the profile `make plan` times, e.g. PROFILE=profiles/quick.yaml; DEVICE=cpu
# times the CPU even where a GPU is present.
PROFILE    ?= profiles/full.yaml
DEVICE     ?= auto

plan: $(STAMP)  ## Q2 and Q3's runs and their time on this device, measured; trains nothing
	@$(PY) -m common.tools.run --check --profile $(call quoted,$(PROFILE))
	$(PY) -m common.tools.plan --profile $(call quoted,$(PROFILE)) --device $(call quoted,$(DEVICE))

clean:  ## Remove executed notebooks and results (build/); keeps runs/ checkpoints and data/
	rm -rf build

clean-smoke:  ## Remove smoke runs' checkpoints (runs/smoke; on Colab runs/Q2/smoke, Q3's)
	$(ANY_PY) -m common.tools.clean

# What to upload to Google Drive for Colab (readme.txt): the bundle in one comp5541/ folder,
# without .git, .venv, build/, runs/, data/ or caches.
bundle:  ## Write comp5541-bundle.zip, the folder to upload to Google Drive for Colab
	$(ANY_PY) -m common.tools.bundle

# --- What the grader receives: PDFs, checks, the zip (readme.txt) -----------
# ID is the student ID the zip is named after; ALLOW_SMOKE=1 lets check and zip
# accept smoke runs (labelled in the zip); ZIP_ARGS passes e.g. --with-extras.
ID          ?=
ALLOW_SMOKE ?=
ZIP_ARGS    ?=
SMOKE_FLAG  := $(if $(filter 1 yes true,$(ALLOW_SMOKE)),--allow-smoke)

.PHONY: report check zip

report: $(STAMP)  ## PDFs of the executed notebooks: build/Qn/Qn.pdf, Qn_report.pdf
	$(PY) -m common.tools.submit report

check: $(STAMP)  ## Is the bundle ready to submit? Lists what is missing
	$(PY) -m common.tools.submit check $(SMOKE_FLAG)

zip: $(STAMP)  ## Check, make the PDFs, write <ID>.zip here (ID=21123456D)
	$(PY) -m common.tools.submit zip --id $(call quoted,$(ID)) $(SMOKE_FLAG) $(ZIP_ARGS)

# --- Benchmarks: measured, on demand, never part of `make test` -------------------
# BENCH_ARGS passes options to benchmarks/bench.py, e.g. BENCH_ARGS=--quick.
BENCH_ARGS ?=

.PHONY: bench

bench: $(STAMP)  ## Measure pipelines, fit, Q2 recipes vs kuangliu's, make smoke, the lr horizon sweep (~2.5 h on 2 cores)
	$(PY) benchmarks/bench.py --data-dir $(DATA_DIR) $(BENCH_ARGS)

# --- GPU check: the one script for a lent CUDA machine ------------------------------
# No venv prerequisite: that machine is offline, and its python3 already holds torch,
# torchvision and numpy (all the script needs). GPU_CHECK_ARGS passes options, e.g.
# GPU_CHECK_ARGS="--no-download --minutes 4 --out /tmp/gpu_check.json".
GPU_CHECK_ARGS ?=
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))

.PHONY: gpu-check

gpu-check:  ## On a CUDA GPU: img/s of every Q2/Q3 model, Q2's ResNet18 for 6 min (build/gpu_check.json)
	$(GPU_PY) benchmarks/gpu_check.py --data-dir $(DATA_DIR) $(GPU_CHECK_ARGS)
