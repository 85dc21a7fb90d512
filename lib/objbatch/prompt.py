"""The request the model gets: a system prompt generated from the same schema the answer is validated
against (so prompt and schema never disagree), the file's name and scanner metadata, and its text cut to a
token budget by a documented rule."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import costs, metadata

PROMPT_VERSION = "objbatch-3"
DEFAULT_TEXT_TOKENS = 24_000  # text budget per request; longer texts are excerpted (see excerpt())
TEMPERATURE = 0.1            # near-deterministic: metadata should not vary between runs
MAX_TOKENS = 2_048           # a full answer is ~400 tokens; generous so answers are not cut off
REASONING_MAX_TOKENS = 16_384  # a model that reasons thinks before it answers: room for both


def system_prompt() -> str:
    props = metadata.schema()["properties"]
    fewest, most = metadata.topic_count()
    count = f"exactly {most}" if fewest == most else f"{fewest}-{most}"
    warn = metadata.soft_rules()["warnings"]
    return "\n".join([
        "You catalogue lecture transcripts from a library on Objectivist philosophy.",
        "Answer with one JSON object only (no prose, no markdown fences), with exactly these fields:",
        f"- category: one of {', '.join(metadata.CATEGORIES)}.",
        f"- difficulty: one of {', '.join(metadata.DIFFICULTIES)}.",
        f"- primary_topics: {count} distinct tags, the most central first, only from this vocabulary: "
        f"{', '.join(metadata.VOCABULARY)}.",
        f"- topic_aspects: {props['topic_aspects']['minItems']}-{warn['too_many_aspects']['max']} short phrases "
        f"naming the specific aspects treated, each at most {warn['long_aspects']['max_chars']} characters.",
        f"- semantic_description: an object with summary (1-2 sentences, at least "
        f"{warn['short_summary']['min_chars']} characters, naming the subject given in the file name), "
        "key_arguments (at least one argument the material makes) and philosophical_positions "
        "(positions discussed; may be empty).",
        "- confidence_score: your confidence in this metadata, a number from 0 to 1.",
        "Use the file name and the known metadata to identify the subject; describe the text you are given.",
    ])


def response_format() -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": "transcript_metadata", "schema": _wire_schema(), "strict": True}}


def _wire_schema() -> dict[str, Any]:
    return {k: v for k, v in metadata.schema().items() if k not in ("$schema", "$id")}


def max_tokens(model: str, effort: str | None = None) -> int:
    """The answer's token limit, with room for reasoning where the model reasons (reasoning counts in it)."""
    return REASONING_MAX_TOKENS if costs.reasons(model, effort) else MAX_TOKENS


def config_hash(model: str, text_tokens: int, effort: str | None = None) -> str:
    """Identifies everything that shapes an answer: model, prompt, schema, budget, sampling and reasoning."""
    material = json.dumps([model, PROMPT_VERSION, system_prompt(), _wire_schema(), budget_chars(text_tokens),
                           TEMPERATURE, max_tokens(model, effort)] + ([effort] if effort else []), sort_keys=True)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def budget_chars(text_tokens: int) -> int:
    """A text budget in tokens as characters, at the ratio the estimate counts with (costs.CHARS_PER_TOKEN)."""
    return round(text_tokens * costs.CHARS_PER_TOKEN)


def excerpt(text: str, budget_chars: int) -> tuple[str, bool]:
    """Texts within budget go whole. Longer ones keep the head (40 %), three evenly spaced middle excerpts
    (10 % each) and the tail (30 %), with a marker saying how much was left out at each cut."""
    if len(text) <= budget_chars:
        return text, False
    head, middle, tail = int(budget_chars * 0.4), int(budget_chars * 0.1), int(budget_chars * 0.3)
    pieces = [(0, head)]
    span = len(text) - head - tail
    for i in range(1, 4):
        centre = head + span * i // 4
        pieces.append((centre - middle // 2, centre + middle // 2))
    pieces.append((len(text) - tail, len(text)))
    out, last = [], 0
    for start, end in pieces:
        if start > last:
            out.append(f"\n[... {start - last:,} characters omitted ...]\n")
        out.append(text[start:end])
        last = end
    return "".join(out), True


def user_message(record: dict[str, Any], text: str, excerpted: bool, total_chars: int) -> str:
    scanner = record.get("scanner_metadata") or {}
    lines = [f"File name: {record['filename']}", f"Path: {record['file_path']}",
             f"Known metadata: {json.dumps(scanner, ensure_ascii=False) if scanner else 'none'}"]
    if excerpted:
        lines.append(f"Note: the text is {total_chars:,} characters long; you are given the beginning, three "
                     "evenly spaced excerpts and the end.")
    return "\n".join(lines) + "\n\n--- Transcript ---\n" + text


def request_body(model: str, record: dict[str, Any], text: str, text_tokens: int,
                 effort: str | None = None) -> tuple[dict[str, Any], bool]:
    cut, excerpted = excerpt(text, budget_chars(text_tokens))
    body = {
        "model": model,
        "messages": [{"role": "system", "content": system_prompt()},
                     {"role": "user", "content": user_message(record, cut, excerpted, len(text))}],
        "response_format": response_format(),
        "temperature": TEMPERATURE,
        "max_tokens": max_tokens(model, effort),
    }
    if effort:  # unset by default: the model's own default
        body["reasoning_effort"] = effort
    return body, excerpted
