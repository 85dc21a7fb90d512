"""mistral_emulator: the offline world objbatch is developed and tested in.

A local server of the Mistral Files and Batch API (`mistral-emulator`) with the response shapes, content
types and statuses the official SDK expects, a deterministic stand-in for the chat model, reproducible
fault injection at the rates measured on real runs, `with-emulator` (run one command against a fresh
emulator) and `make-sample-library` (a realistic library and its database). It imports nothing from
objbatch: the contract they share is the files in schemas/.
"""

__version__ = "0.2.0"
