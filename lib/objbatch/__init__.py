"""objbatch: AI metadata for a transcript library through the Mistral Batch API."""

__version__ = "0.2.0"
