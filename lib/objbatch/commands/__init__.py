"""The commands: one module per console script (`select_pending.py` is `select-pending`). Each parses its
options and calls the core modules in `objbatch/`; a command never imports another command."""
