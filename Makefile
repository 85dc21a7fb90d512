# objbatch: make targets connect the stages. Each stage writes one file under $(RUNS)/<NAME>/ atomically,
# so make reruns only what is missing. The run itself lives in the database ledger: a stage whose file is
# missing rebuilds it from there, and anything that cost money is recorded in the ledger before the next
# step can fail. `make batch` runs bin/batch-run, which picks the run, checks before paying and takes the
# run's lock; it then makes $(RUNS)/<NAME>/applied.json.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules --no-print-directory
.SUFFIXES:
.DEFAULT_GOAL := help

# The defaults the commands share (DEFAULT_MODEL, DEFAULT_POLL, ...), written once there: objbatch reads the
# same file for its options' defaults.
include $(dir $(firstword $(MAKEFILE_LIST)))lib/objbatch/defaults.mk

# Variables are set on the command line only: the environment does not set them (WSL exports NAME as the
# host name, and a stray MAX in a shell must not shape a paid run).
PYTHON = python3## the Python that builds .venv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DB = $(DEFAULT_DB)## the library's SQLite database
RUNS = $(DEFAULT_RUNS)## folder of run folders (caches: rebuilt from the database when missing)
LIBRARY_ROOT =## the folder the library's files are in; nothing outside is read (default: objlib's config, else the rows' common folder)
NAME =## run name (default: resume the database's unfinished run, else a new one)
MAX =## at most this many files in a new run (default: every pending file)
MODEL = $(DEFAULT_MODEL)## model (prices in schemas/prices.json)
ALLOW_UNPRICED =## set to 1 to use a MODEL that has no price in schemas/prices.json
BUDGET =## refuse a run whose estimate is over this many US dollars (before anything is sent)
POLL = $(DEFAULT_POLL)## seconds between job status checks
TIMEOUT = $(DEFAULT_TIMEOUT)## stop waiting after this many seconds (the job runs on; rerun to collect it)
TIMEOUT_HOURS = $(DEFAULT_TIMEOUT_HOURS)## the job's timeout at the service, 1 to 168 hours
REASONING_EFFORT =## reasoning_effort for a model that takes it (none ... xhigh; default: the model's)
KEEP_REMOTE =## set to 1 to keep the run's files at the service after apply (default: deleted)
FORGET =## make cancel: set to 1 to end a run whose every job the service answers 404 for (lost, or another workspace's key), without its results
MAX_ATTEMPTS = $(DEFAULT_MAX_ATTEMPTS)## a failed file is retried until it failed this often
RETRY_EXHAUSTED =## set to 1 to retry files that used up their attempts
THRESHOLD =## confidence below which a valid answer needs review (default 0.85)
FAULTS = none## make demo: the emulator's fault mix (none, real, chaos)
FORMAT = csv## make export: csv, json or nl (JSON lines)
MAX_IN_FLIGHT = $(DEFAULT_MAX_IN_FLIGHT)## make cron: start a new run only while fewer runs are in flight
N =## make review, export, report: at most this many files (review: per group; report: of the review queue)
STATUS =## make review, export: only files with this status (review: needs_review, failed_validation, skipped)
SEEDS = 20## make simulate: how many seeded sequences (N: seeds 0 to N-1), or a range LOW-HIGH
SEED =## make simulate: replay this one sequence, printing every event and its output
EVENTS = 24## make simulate: random events in each sequence (then it settles)
VARS := PYTHON DB RUNS LIBRARY_ROOT NAME MAX MODEL ALLOW_UNPRICED BUDGET POLL TIMEOUT MAX_ATTEMPTS RETRY_EXHAUSTED THRESHOLD \
  FAULTS MAX_IN_FLIGHT FORMAT N STATUS SEEDS SEED EVENTS TIMEOUT_HOURS REASONING_EFFORT \
  KEEP_REMOTE FORGET

# A variable make does not know (a typo: MAXX=5, max=5) is refused before anything runs, and so is a '$' in
# a value (make would expand it: NAME='$(id)' would become another name).
$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(if $(filter $(v),$(VARS)),,\
  $(error unknown variable '$(v)'; the variables are: $(VARS) (make help describes them)))\
  $(if $(findstring $$,$(value $(v))),$(error $(v) contains '$$', which make would expand; leave it out))))

# Paths: a DB, RUNS or LIBRARY_ROOT given relative on the command line is relative to the folder make was typed
# in, with make -C or make -f too (the shell's PWD names it); the defaults are in the clone.
# Typed in the clone itself (the common case, and the only one a clone whose path has a space supports, since
# make splits such paths), nothing is rewritten.
HERE := $(if $(filter Makefile,$(firstword $(MAKEFILE_LIST))),$(CURDIR),$(strip \
  $(patsubst %/,%,$(dir $(realpath $(firstword $(MAKEFILE_LIST)))))))
TYPED_IN := $(if $(and $(filter /%,$(PWD)),$(wildcard $(PWD))),$(PWD),$(CURDIR))
ifneq ($(TYPED_IN),$(CURDIR))
$(foreach v,DB RUNS LIBRARY_ROOT,$(if $(filter command line,$(origin $(v))),$(if $(filter /%,$($(v))),,\
  $(if $($(v)),$(eval override $(v) := $(TYPED_IN)/$($(v)))))))
endif

# A reader whose stdout closed (make export | head) ends quietly, as other Unix tools do: it dies of SIGPIPE
# (status 141), which is not a failure.
reader_done = || [ $$? -eq 141 ]
# No user value reaches a shell unquoted: $(call shq,VALUE) is VALUE as one single-quoted shell word.
shq = '$(subst ','\'',$(1))'
# Run names: RUN_NAME_CHARS (defaults.mk), not starting with '.' (batch-run also caps the length at RUN_NAME_MAX).
strip_chars = $(if $(2),$(call strip_chars,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
ifneq ($(strip $(NAME)),)
ifneq ($(words $(NAME))$(call strip_chars,$(NAME),$(RUN_NAME_CHARS))$(filter .%,$(NAME)),1)
$(error NAME '$(NAME)' is not allowed: use letters, digits, '.', '_' and '-', not starting with '.')
endif
endif
ifneq ($(words $(RUNS))$(findstring :,$(RUNS)),1)
$(error RUNS '$(RUNS)' must be one folder path without spaces or ':')
endif

R := $(RUNS)/$(NAME)
# Command-line variables, passed on to batch-run (which hands them to the stages' make).
given = $(foreach v,$(filter-out $(1),$(VARS)),$(if $(filter command line override,$(origin $(v))),\
  $(call shq,$(v)=$($(v)))))

ifneq ($(HERE),$(CURDIR))
# make -f path/Makefile from another folder runs as make -C path (relative paths given stay relative to here).
$(firstword $(or $(MAKECMDGOALS),help)):
	@$(MAKE) --no-print-directory -C $(call shq,$(HERE)) $(MAKECMDGOALS)
$(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS)):
	@:
else
TARGETS := help vars key estimate batch cancel cron stats review export report demo bench lint test test-slow test-all \
  simulate venv clean-venv
.PHONY: $(TARGETS)

# A goal make does not know (a typo: make bacth; a flag after --: make batch -- --dry) is refused before anything
# runs (nothing paid), naming the nearest target. Stage files (RUNS/NAME/*.json[l]) are goals batch-run uses.
unknown_goals := $(filter-out $(TARGETS) %.json %.jsonl $(STAMP),$(MAKECMDGOALS))
ifneq ($(unknown_goals),)
first_unknown := $(firstword $(unknown_goals))
nearest := $(shell $(PYTHON) -c 'import difflib, sys; m = difflib.get_close_matches(sys.argv[1], sys.argv[2:], 1, 0.5); print("; did you mean " + m[0] + "?" if m else "")' $(call shq,$(first_unknown)) $(TARGETS) 2>/dev/null)
hint := $(if $(filter -%,$(first_unknown)),; make passes no options on: use VAR=VALUE)
$(error unknown target '$(first_unknown)'$(nearest)$(hint) (make help lists the targets; nothing was run))
endif
.PRECIOUS: $(RUNS)/%/select.jsonl $(RUNS)/%/requests.jsonl $(RUNS)/%/job.json $(RUNS)/%/wait.jsonl \
           $(RUNS)/%/results.jsonl $(RUNS)/%/decisions.jsonl $(RUNS)/%/applied.json

help: ## this help (what a bare make prints)
	@echo "objbatch: AI metadata for a transcript library through the Mistral Batch API."
	@echo "Usage: make TARGET [VAR=VALUE ...]    e.g. make batch MAX=100"
	@echo
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 16
	@echo
	@echo "Variables:"
	@grep -E '^[A-Z_]+ =.*## ' $(firstword $(MAKEFILE_LIST)) \
	  | sed -E -e 's/^([A-Z_]+) = ?([^#]*)## (.*)/  \1=\2\t\3/' $(shown_defaults) | expand -t 34

# make help shows each default's value, not its name: MODEL=mistral-small-latest, not MODEL=$(DEFAULT_MODEL).
shown_defaults := $(foreach d,$(filter DEFAULT_%,$(.VARIABLES)),-e 's|\$$[(]$(d)[)]|$($(d))|')

vars: ## print every variable as make resolves it (used by batch-run)
	@printf '%s\n' $(foreach v,$(VARS),$(call shq,$(v)=$($(v))))

# ---------------------------------------------------------------- the pipeline

key: $(STAMP) ## store the Mistral API key in the system keyring (asked without echo, checked with one call)
	@$(BIN)/set-key

estimate: $(STAMP) ## what make batch would do and cost now (same variables); pays nothing
	@$(BIN)/batch-run --estimate $(call given,) $(reader_done)

batch: $(STAMP) ## run the pipeline once: select, build, submit, wait, fetch, validate, apply (paid)
	@$(BIN)/batch-run $(call given,)

$(R)/select.jsonl: | $(STAMP)
	@mkdir -p -m 700 $(call shq,$(R))
	@$(BIN)/select-pending --db $(call shq,$(DB)) $(if $(MAX),--max $(call shq,$(MAX))) \
	  --max-attempts $(call shq,$(MAX_ATTEMPTS)) $(if $(filter 1,$(RETRY_EXHAUSTED)),--retry-exhausted) \
	  --run $(call shq,$(NAME)) --model $(call shq,$(MODEL)) -o $(call shq,$@) \
	  $(if $(filter command line,$(origin MAX_IN_FLIGHT)),--max-in-flight $(call shq,$(MAX_IN_FLIGHT))) \
	  $(if $(LIBRARY_ROOT),--library-root $(call shq,$(LIBRARY_ROOT)))

$(R)/requests.jsonl: $(R)/select.jsonl
	@$(BIN)/build-jsonl --db $(call shq,$(DB)) --run $(call shq,$(NAME)) --model $(call shq,$(MODEL)) \
	  $(if $(REASONING_EFFORT),--reasoning-effort $(call shq,$(REASONING_EFFORT))) --manifest $(call shq,$(R)/manifest.jsonl) -o $(call shq,$@) $(call shq,$<)

$(R)/job.json: $(R)/requests.jsonl
	@$(BIN)/batch-submit --db $(call shq,$(DB)) --run $(call shq,$(NAME)) --model $(call shq,$(MODEL)) \
	  $(if $(BUDGET),--budget $(call shq,$(BUDGET))) $(if $(filter 1,$(ALLOW_UNPRICED)),--allow-unpriced) \
	  --timeout-hours $(call shq,$(TIMEOUT_HOURS)) --manifest $(call shq,$(R)/manifest.jsonl) -o $(call shq,$@) $(call shq,$<)

$(R)/wait.jsonl: $(R)/job.json
	@$(BIN)/batch-wait --poll $(call shq,$(POLL)) --timeout $(call shq,$(TIMEOUT)) --db $(call shq,$(DB)) \
	  --raw-dir $(call shq,$(R)/raw) -o $(call shq,$@) $(call shq,$<)

$(R)/results.jsonl: $(R)/wait.jsonl
	@$(BIN)/batch-fetch --raw-dir $(call shq,$(R)/raw) --db $(call shq,$(DB)) -o $(call shq,$@) \
	  $(call shq,$(R)/job.json)

$(R)/decisions.jsonl: $(R)/results.jsonl
	@$(BIN)/validate --db $(call shq,$(DB)) --run $(call shq,$(NAME)) --manifest $(call shq,$(R)/manifest.jsonl) \
	  $(if $(THRESHOLD),--threshold $(call shq,$(THRESHOLD))) \
	  -o $(call shq,$@) $(call shq,$<)

$(R)/applied.json: $(R)/decisions.jsonl
	@$(BIN)/apply-sql --db $(call shq,$(DB)) --run $(call shq,$(NAME)) -o $(call shq,$@) $(call shq,$<)

cancel: $(STAMP) ## cancel a run (NAME, or the only unfinished one): stop its jobs, keep what they finished
	@$(if $(filter-out 0 1,$(FORGET)),echo "make cancel: FORGET is 1 (on) or 0 or empty (off); not "$(call shq,$(FORGET)) >&2; exit 2;) \
	name=$$($(BIN)/batch-cancel --db $(call shq,$(DB)) $(if $(NAME),--run $(call shq,$(NAME))) \
	  $(if $(filter 1,$(FORGET)),--forget) --poll 1); \
	if [ -n "$$name" ]; then $(BIN)/batch-run $(call given,NAME POLL) NAME="$$name" POLL=1; fi

cron: $(STAMP) ## one unattended step: collect finished jobs, start a new run if there is room
	@$(BIN)/batch-cron --db $(call shq,$(DB)) --runs $(call shq,$(RUNS)) --max-in-flight $(call shq,$(MAX_IN_FLIGHT)) \
	  $(foreach a,$(call given,DB RUNS NAME MAX_IN_FLIGHT),--set $(a)) || [ $$? -eq 75 ]

stats: $(STAMP) ## where the library stands: statuses, runs in flight, cost
	@$(BIN)/stats --db $(call shq,$(DB)) --max-attempts $(call shq,$(MAX_ATTEMPTS)) $(reader_done)

review: $(STAMP) ## files whose metadata deserves a look (STATUS=, N=; then: bin/show, bin/approve, bin/requeue)
	@$(BIN)/review --db $(call shq,$(DB)) $(if $(THRESHOLD),--threshold $(call shq,$(THRESHOLD))) \
	  $(if $(N),-n $(call shq,$(N))) $(foreach s,$(STATUS),--status $(call shq,$(s))) $(reader_done)

export: $(STAMP) ## the stored metadata on stdout (FORMAT=csv, json or nl; STATUS=, N=)
	@$(if $(filter csv json nl,$(FORMAT)),,$(error FORMAT must be csv, json or nl (got '$(FORMAT)')))
	@$(BIN)/export-metadata --db $(call shq,$(DB)) $(call shq,--$(FORMAT)) $(if $(N),-n $(call shq,$(N))) \
	  $(foreach s,$(STATUS),--status $(call shq,$(s))) $(reader_done)

report: $(STAMP) ## one self-contained HTML page to look at: cost, statuses, confidence, review queue (RUNS/report.html)
	@$(BIN)/report --db $(call shq,$(DB)) --runs $(call shq,$(RUNS)) $(if $(N),-n $(call shq,$(N))) \
	  $(if $(THRESHOLD),--threshold $(call shq,$(THRESHOLD))) --max-attempts $(call shq,$(MAX_ATTEMPTS))

# ---------------------------------------------------------------- offline demo

demo: $(STAMP) ## the whole job offline: a sample library, a local emulator of the service, make batch
	@$(if $(filter none real chaos,$(FAULTS))$(filter {%,$(FAULTS))$(wildcard $(FAULTS)),,\
	  $(error FAULTS must be none, real, chaos, a JSON file or JSON text (got '$(FAULTS)'); demo/ is untouched))
	@rm -rf demo
	@$(BIN)/make-sample-library --root demo/library --db demo/library.db
	@$(BIN)/with-emulator --state-dir demo/emulator --faults $(call shq,$(FAULTS)) -- \
	  $(BIN)/batch-run DB=demo/library.db RUNS=demo/runs NAME=demo POLL=0.5

# ---------------------------------------------------------------- tests and the venv

# Both suites run in parallel (pytest-xdist): no test shares a path or depends on another's order. Two
# workers a core: about half of a test's time is spent waiting on the emulator and the commands it starts
# (measured on 2 cores: the fast suite 62 s with one worker a core, 49 s with two).
TEST_WORKERS = -n $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))
test: $(STAMP) ## the fast test suite
	$(BIN)/python -m pytest -q $(TEST_WORKERS) -m "not slow"

test-slow: $(STAMP) ## the fault-injection and convergence suites
	$(BIN)/python -m pytest -q $(TEST_WORKERS) -m slow || [ $$? -eq 5 ]

simulate: $(STAMP) ## seeded worst days of a user, a library and the service, invariants checked after every event
	$(BIN)/python tests/simulate.py --events $(call shq,$(EVENTS)) \
	  $(if $(SEED),--seed $(call shq,$(SEED)),--seeds $(call shq,$(SEEDS)))

bench: $(STAMP) ## throughput and memory figures
	$(BIN)/python tests/bench.py

lint: $(STAMP) ## ruff (bugs, import order) and mypy (types); config in pyproject.toml
	$(BIN)/ruff check lib tests
	$(BIN)/mypy

test-all: $(STAMP) ## both suites in one pytest run
	$(BIN)/python -m pytest -q $(TEST_WORKERS)

# The venv is (re)built when missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing objbatch and its dependencies into $(VENV) ..." >&2
	@{ $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e '.[test]'; } \
	  > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@rm -rf lib/*.egg-info
	@touch $@

venv: $(STAMP) ## build the project's .venv

clean-venv: ## delete .venv (the next command rebuilds it)
	rm -rf $(VENV)
endif
