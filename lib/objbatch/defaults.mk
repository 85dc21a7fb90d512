# The defaults make and the commands share, each written once. The Makefile includes this file
# (MODEL = $(DEFAULT_MODEL)); objbatch/defaults.py reads it for the commands' options (click). Only
# `DEFAULT_NAME = value` lines: the code parses them without make.
DEFAULT_DB = data/library.db
DEFAULT_RUNS = runs
DEFAULT_MODEL = mistral-small-latest
DEFAULT_POLL = 30
DEFAULT_TIMEOUT = 7200
DEFAULT_TIMEOUT_HOURS = 24
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_IN_FLIGHT = 1
