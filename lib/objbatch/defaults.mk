# The defaults and rules make and the commands share, each written once. The Makefile includes this file
# (MODEL = $(DEFAULT_MODEL)); objbatch/defaults.py reads it for the commands' options (click). Only
# `NAME = value` lines: the code parses them without make.
DEFAULT_DB = data/library.db
DEFAULT_RUNS = runs
DEFAULT_MODEL = mistral-small-latest
DEFAULT_POLL = 30
DEFAULT_TIMEOUT = 7200
DEFAULT_TIMEOUT_HOURS = 24
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_IN_FLIGHT = 1

# Run names (NAME, --run) become folder names and make targets: these characters, not starting with '.',
# at most RUN_NAME_MAX of them. make checks the characters; common.check_run_name builds its pattern here.
RUN_NAME_CHARS = a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N O P Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 . _ -
RUN_NAME_MAX = 64
