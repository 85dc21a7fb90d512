"""The emulator's deterministic stand-in for a chat model, and the ways real models spoil their answers.

The clean answer is derived from what the request says: the file name (for the subject and category), the
transcript text (topics are the vocabulary words it contains), its length (short texts get low confidence).
Answer faults reproduce the ways real models failed on the library (see faults.py); which fault a request
gets is decided by faults.fate, seeded by custom_id, so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA = json.loads((SCHEMAS / "metadata.schema.json").read_text())
MODELS = json.loads((SCHEMAS / "prices.json").read_text())["models"]  # aliases, and which models reason
VOCABULARY = tuple(SCHEMA["properties"]["primary_topics"]["items"]["enum"])  # the contract shared with objbatch
CATEGORIES = tuple(SCHEMA["properties"]["category"]["enum"])

ANSWER_FAULTS = (
    "missing_confidence", "array", "one_element_array", "prose", "fenced", "prose_around", "chunks",
    "degenerate", "invalid_category", "duplicate_topics", "truncated", "too_many_topics", "invented_topics",
    "enum_case", "few_topics",
)

_FILLER_TOPICS = ["reason", "ethics", "epistemology", "values", "metaphysics"]
_TWO_WORD_TAGS = {tag for tag in VOCABULARY if "_" in tag}


def resolved(name: str) -> str:
    """The dated model an alias names (the result's `model`), as schemas/prices.json records it."""
    return (MODELS.get(name) or {}).get("resolves_to") or name


def reasons(name: str, effort: Any) -> bool:
    """Whether the model thinks before it answers: a reasoning model unless reasoning_effort is none; a model
    that takes reasoning_effort when given one."""
    entry = MODELS.get(resolved(name)) or {}
    if isinstance(effort, str) and effort:
        return effort != "none" and bool(entry.get("reasoning") or entry.get("reasoning_effort"))
    return bool(entry.get("reasoning"))


def complete(body: dict, fault: str | None, salt: str, cached_prefix: bool = False) -> dict:
    """A ChatCompletionResponse body for a chat-completion request body, with an optional answer fault.
    A reasoning model answers with a thinking chunk, then the text (its thinking counted in
    completion_tokens and in completion_tokens_details.reasoning_tokens); with `cached_prefix`, the system
    message and schema (the prefix every request of a run shares) are reported as cached prompt tokens."""
    text = _prompt_text(body)
    answer = clean_answer(text, salt, _topics_asked(body))
    content, finish = _render(answer, fault, body.get("response_format") or {}, salt)
    name = body.get("model") or "mistral-small-latest"
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    schema_tokens = _schema_tokens(json.dumps(body.get("response_format") or ""))
    prompt_tokens = sum(count_tokens(_content_text(m.get("content"))) + 4 for m in messages) + schema_tokens
    completion_tokens = max(1, count_tokens(content if isinstance(content, str) else json.dumps(content)))
    reasoning_tokens = 0
    if reasons(name, body.get("reasoning_effort")) and finish == "stop":
        thought = f"The file name names the subject; the text mostly discusses {answer['primary_topics'][0]}. " * 8
        reasoning_tokens = count_tokens(thought)
        text_chunks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        content = [{"type": "thinking", "thinking": [{"type": "text", "text": thought}]}] + \
            [c for c in text_chunks if c.get("type") == "text"]
        completion_tokens += reasoning_tokens
    system = [m for m in messages if m.get("role") == "system"]
    cached = (sum(count_tokens(_content_text(m.get("content"))) + 4 for m in system) + schema_tokens) \
        if cached_prefix else 0
    return {
        "id": "cmpl-" + _digest(salt)[:24],
        "object": "chat.completion",
        "model": resolved(name),
        "created": 1_700_000_000,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached},
                  "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}},
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content, "tool_calls": None, "prefix": False}}],
    }


def _topics_asked(body: dict) -> tuple[int, int]:
    """(fewest, most) topics the request's JSON schema asks for; 3-8 when it asks nothing."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    prop = (schema.get("properties") or {}).get("primary_topics") or {}
    return int(prop.get("minItems", 3)), int(prop.get("maxItems", 8))


def clean_answer(text: str, salt: str, asked: tuple[int, int] = (3, 8)) -> dict:
    name = _field(text, "File name") or (text.strip().splitlines() or ["untitled"])[0][:80]
    path = _field(text, "Path") or name
    subject = subject_of(name)
    topics = _topics(text, *asked)
    aspects = [f"{topic.replace('_', ' ')} in {subject}"[:100] for topic in topics[:5]]  # topics has >= 3
    transcript = text.split("--- Transcript", 1)[-1]
    confidence = 0.62 if len(transcript) < 1500 else 0.86 + (int(_digest(salt)[:4], 16) % 12) / 100
    return {
        "category": _category(path),
        "difficulty": _difficulty(path),
        "primary_topics": topics,
        "topic_aspects": aspects[:10],
        "semantic_description": {
            "summary": f"A discussion of {subject}, covering "
                       f"{', '.join(t.replace('_', ' ') for t in topics[:2])} and {topics[2].replace('_', ' ')}.",
            "key_arguments": [f"{subject} is best understood through {topics[0].replace('_', ' ')}."],
            "philosophical_positions": ["Objectivism"],
        },
        "confidence_score": round(confidence, 2),
    }


def subject_of(name: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", name.strip())
    stem = re.sub(r"\s*\[\d+\]\s*", " ", stem).strip()
    motm = re.match(r"MOTM_\d{4}-\d{2}-\d{2}_(.+)", stem)
    if motm:
        return motm.group(1).replace("-", " ").strip()
    parts = [p.strip() for p in re.split(r"\s+[-–]\s+", stem) if p.strip()]
    return parts[-1] if parts else stem


_PIECE = re.compile(r"[A-Za-z]{1,5}|\d{1,3}|[^\sA-Za-z\d]")


def count_tokens(text: str) -> int:
    """The service's token count, approximated the way subword tokenizers split text: short word pieces,
    digit groups, one token per punctuation mark (3.9 characters a token on prose, as measured on the
    library; about 2.5 on JSON)."""
    return len(_PIECE.findall(text))


@lru_cache(maxsize=16)
def _schema_tokens(text: str) -> int:
    return count_tokens(text)  # the same schema comes with every request: counted once


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content or "")


def _prompt_text(body: dict) -> str:
    messages = body.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return _content_text((users[-1] if users else (messages[-1] if messages else {})).get("content", ""))


def _field(text: str, label: str) -> str | None:
    match = re.search(rf"^{re.escape(label)}:\s*(.+)$", text[:4000], re.MULTILINE)
    return match.group(1).strip() if match else None


def _topics(text: str, fewest: int, most: int) -> list[str]:
    """The vocabulary words the text contains, most frequent first; general topics make up the number."""
    words = re.findall(r"[a-z]+", text.lower())
    seen = Counter(words)
    seen.update(f"{a}_{b}" for a, b in zip(words, words[1:], strict=False) if f"{a}_{b}" in _TWO_WORD_TAGS)
    counts = {tag: seen[tag] for tag in VOCABULARY}
    found = [tag for tag, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n > 0][:most]
    for filler in _FILLER_TOPICS + list(VOCABULARY):
        if len(found) >= fewest:
            break
        if filler not in found:
            found.append(filler)
    return found


def _category(path: str) -> str:
    rules = [
        (r"Q&A|Q＆A|Office Hours|Podcast|Episode", "qa_session"),
        (r"Books/|\(\d{4}\)", "book_excerpt"),
        (r"\bvs\.?\b|versus|Comparison", "philosophy_comparison"),
        (r"Lesson|Class|Seminar|Course|Week", "course_transcript"),
        (r"MOTM", "cultural_commentary"),
        (r"OCON|Thinking Lab", "concept_exploration"),
    ]
    return next((category for pattern, category in rules if re.search(pattern, path, re.IGNORECASE)), "article")


def _difficulty(path: str) -> str:
    if re.search(r"Year ?1|Intro|Foundations|Basics", path, re.IGNORECASE):
        return "intro"
    if re.search(r"Year ?[34]|Advanced|Graduate", path, re.IGNORECASE):
        return "advanced"
    return "intermediate"


def _digest(salt: str) -> str:
    return hashlib.sha256(salt.encode("utf-8")).hexdigest()


def _render(answer: dict, fault: str | None, response_format: dict, salt: str) -> tuple[Any, str]:
    """Turn the answer into message content, spoiling it the way `fault` says."""
    pick = int(_digest(salt + ":variant")[:8], 16)
    answer = _spoil_object(answer, fault, pick)
    text = json.dumps(answer, ensure_ascii=False)
    structured = response_format.get("type") in ("json_schema", "json_object")
    if fault == "array":
        text = json.dumps([[11], [1, 2, 3], list(CATEGORIES[:3]), [[1, 2], [3]]][pick % 4])
    elif fault == "one_element_array":
        text = f"[{text}]"
    elif fault == "prose":
        text = "I'm sorry, but I can't produce structured metadata for this transcript without more context."
    elif fault == "fenced" or (not structured and fault is None):
        text = f"```json\n{text}\n```"
    elif fault == "prose_around":
        text = f"Here is the metadata you asked for:\n{text}\nLet me know if you need anything else."
    elif fault == "truncated":
        return text[: max(10, len(text) * 2 // 3)], "length"
    if fault == "chunks":
        thinking = {"type": "thinking", "thinking": [{"type": "text", "text": "The transcript is about..."}]}
        return [thinking, {"type": "text", "text": text}], "stop"
    return text, "stop"


def _spoil_object(answer: dict, fault: str | None, pick: int) -> dict:
    answer = json.loads(json.dumps(answer))
    if fault == "missing_confidence":
        answer.pop("confidence_score")
    elif fault == "degenerate":
        answer = {"category": answer["category"], "semantic_description": {"summary": "Lecture."}}
    elif fault == "invalid_category":
        answer["category"] = ["q_a_session", "epistemology", "utc"][pick % 3]
    elif fault == "duplicate_topics":
        answer["primary_topics"] = answer["primary_topics"][:7] + answer["primary_topics"][:1]
    elif fault == "too_many_topics":
        extra = [t for t in VOCABULARY if t not in answer["primary_topics"]]
        answer["primary_topics"] = (answer["primary_topics"] + extra)[:11]
    elif fault == "invented_topics":
        answer["primary_topics"] = answer["primary_topics"][:7] + [["universals", "egoism", "epistemolgy"][pick % 3]]
    elif fault == "few_topics":  # asked for 8, gives fewer
        answer["primary_topics"] = answer["primary_topics"][:5]
    elif fault == "enum_case":
        answer["category"] = " " + answer["category"].replace("_", " ").title().replace(" ", "_") + " "
        answer["difficulty"] = answer["difficulty"].upper()
    return answer
