# objbatch: make targets connect the stages. Each stage writes one file under $(RUNS)/<NAME>/ atomically,
# so make reruns only what is missing: an interrupted `make batch` resumes at the first stage not done,
# and anything that cost money (the job record, downloaded results) is kept (.PRECIOUS).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.SUFFIXES:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DB ?= data/library.db
RUNS ?= runs
MAX ?=
MODEL ?= mistral-small-latest
POLL ?= 30
TIMEOUT ?= 7200
MAX_ATTEMPTS ?= 3
RETRY_EXHAUSTED ?=
FAULTS ?= none
MAX_IN_FLIGHT ?= 1
THRESHOLD ?=

# Without NAME, an unfinished run (selected but not applied) is resumed; otherwise a new one is named.
UNFINISHED := $(shell for d in $(RUNS)/*/; do [ -f "$$d/select.jsonl" ] && [ ! -f "$$d/applied.json" ] && basename "$$d"; done 2>/dev/null | head -n 1)
NAME_GIVEN := $(origin NAME)
ifeq ($(origin NAME),undefined)
NAME := $(or $(UNFINISHED),run-$(shell date -u +%Y%m%d-%H%M%S)-$(shell od -An -N2 -tx2 /dev/urandom | tr -d ' '))
endif
R := $(RUNS)/$(NAME)

.PHONY: batch cancel cron stats review demo bench test test-slow test-all venv clean-venv
.PRECIOUS: $(RUNS)/%/select.jsonl $(RUNS)/%/requests.jsonl $(RUNS)/%/job.json $(RUNS)/%/wait.jsonl \
           $(RUNS)/%/results.jsonl $(RUNS)/%/decisions.jsonl $(RUNS)/%/applied.json

# ---------------------------------------------------------------- the pipeline

# One process works on a run at a time (flock); another make batch on the same run waits for it.
batch: $(STAMP)
	@if [ "$(NAME_GIVEN)" = undefined ] && [ -n "$(UNFINISHED)" ]; then \
	  echo "Resuming unfinished run $(NAME) (make cancel NAME=$(NAME) drops it)."; fi
	@mkdir -p $(R)
	@flock -n $(R)/.lock true || echo "Run $(NAME) is being worked on by another process; waiting for it."
	@flock $(R)/.lock $(MAKE) --no-print-directory $(R)/select.jsonl NAME=$(NAME)
	@if [ ! -s $(R)/select.jsonl ]; then echo "No pending files: nothing to do."; rm -rf $(R); exit 0; fi; \
	flock $(R)/.lock $(MAKE) --no-print-directory $(R)/applied.json NAME=$(NAME); \
	echo "Run $(NAME) applied:"; $(BIN)/stats --db $(DB) --runs 3 --max-attempts $(MAX_ATTEMPTS)

$(R)/select.jsonl: | $(STAMP)
	@mkdir -p $(R)
	@$(BIN)/select-pending --db $(DB) $(if $(MAX),--max $(MAX)) --max-attempts $(MAX_ATTEMPTS) \
	  $(if $(RETRY_EXHAUSTED),--retry-exhausted) --claim $(NAME) --model $(MODEL) -o $@

$(R)/requests.jsonl: $(R)/select.jsonl
	@$(BIN)/build-jsonl --model $(MODEL) --manifest $(R)/manifest.jsonl -o $@ $<

$(R)/job.json: $(R)/requests.jsonl
	@$(BIN)/batch-submit --run-name $(NAME) --model $(MODEL) --record-dir $(R) --db $(DB) -o $@ $<

$(R)/wait.jsonl: $(R)/job.json
	@$(BIN)/batch-wait --poll $(POLL) --timeout $(TIMEOUT) --db $(DB) -o $@ $<

$(R)/results.jsonl: $(R)/wait.jsonl
	@$(BIN)/batch-fetch --raw-dir $(R)/raw --db $(DB) -o $@ $(R)/job.json

$(R)/decisions.jsonl: $(R)/results.jsonl
	@$(BIN)/validate --manifest $(R)/manifest.jsonl $(if $(THRESHOLD),--threshold $(THRESHOLD)) -o $@ $<

$(R)/applied.json: $(R)/decisions.jsonl
	@$(BIN)/apply-sql --db $(DB) --run $(NAME) -o $@ $<

# Cancel a run: stop its jobs, harvest what they finished, return the rest to the queue.
cancel: $(STAMP)
	@if [ "$(NAME_GIVEN)" = undefined ] && [ -z "$(UNFINISHED)" ]; then \
	  echo "make cancel: no unfinished run to cancel; name one with NAME=" >&2; exit 1; fi
	@if [ ! -f $(R)/select.jsonl ]; then \
	  echo "make cancel: no run folder $(R); releasing any files run $(NAME) still holds in the database."; \
	  $(BIN)/apply-sql --db $(DB) --run $(NAME) /dev/null; exit 0; fi
	@if [ -f $(R)/applied.json ]; then echo "Run $(NAME) is already finished."; exit 0; fi; \
	if [ -f $(R)/requests.jsonl ]; then \
	  $(MAKE) --no-print-directory $(R)/job.json NAME=$(NAME); \
	  $(BIN)/batch-cancel --poll 1 --db $(DB) $(R)/job.json; \
	  $(MAKE) --no-print-directory $(R)/applied.json NAME=$(NAME) POLL=1; \
	else \
	  $(BIN)/apply-sql --db $(DB) --run $(NAME) -o $(R)/applied.json /dev/null; \
	fi; echo "Run $(NAME) cancelled."

# One unattended step (see README "Running it unattended"); jobs still in flight are not an error here.
cron: $(STAMP)
	@$(BIN)/batch-cron --db $(DB) --runs $(RUNS) --max-in-flight $(MAX_IN_FLIGHT) --set MODEL=$(MODEL) \
	  --set MAX_ATTEMPTS=$(MAX_ATTEMPTS) $(if $(MAX),--set MAX=$(MAX)) || [ $$? -eq 75 ]

stats: $(STAMP)
	@$(BIN)/stats --db $(DB) --max-attempts $(MAX_ATTEMPTS)

review: $(STAMP)
	@$(BIN)/review --db $(DB) $(if $(THRESHOLD),--threshold $(THRESHOLD))

# ---------------------------------------------------------------- offline demo

demo: $(STAMP)
	@rm -rf demo
	@$(BIN)/make-sample-library --root demo/library --db demo/library.db
	@$(BIN)/with-emulator --state-dir demo/emulator --faults $(FAULTS) -- \
	  $(MAKE) --no-print-directory batch DB=demo/library.db RUNS=demo/runs NAME=demo POLL=0.5

# ---------------------------------------------------------------- tests and the venv

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]

bench: $(STAMP)
	$(BIN)/python tests/bench.py

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# The venv is (re)built when missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing objbatch and its dependencies into $(VENV) ..."
	@{ $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e '.[test]'; } \
	  > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

venv: $(STAMP)

clean-venv:
	rm -rf $(VENV)
