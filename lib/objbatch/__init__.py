"""objbatch: AI metadata for a transcript library through the Mistral Batch API."""

__version__ = "0.1.0"
