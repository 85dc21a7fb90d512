"""The metadata contract, loaded from schemas/: parsing answers, unambiguous repairs, hard and soft checks,
and the confidence score. Everything the rules say lives in the schema files, not here."""

from __future__ import annotations

import json
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Union

from .common import load_schema
from .states import Decision

Repairs = list[tuple[str, dict[str, Any]]]  # the repairs made to an answer: (kind, what the message names)

@lru_cache(maxsize=None)
def schema() -> dict[str, Any]:
    return load_schema("metadata.schema.json")


@lru_cache(maxsize=None)
def soft_rules() -> dict[str, Any]:
    return load_schema("soft-rules.json")


def _enum(name: str) -> tuple[str, ...]:
    prop = schema()["properties"][name]
    return tuple(prop.get("items", prop)["enum"])


VOCABULARY = _enum("primary_topics")
_VOCABULARY_SET = frozenset(VOCABULARY)
CATEGORIES = _enum("category")
DIFFICULTIES = _enum("difficulty")
TRUNCATED_FINISH = {"length", "model_length"}


@dataclass
class Verdict:
    """What validate decides for one answer."""

    decision: Decision  # extracted | needs_review | failed_validation
    metadata: dict[str, Any] | None = None
    confidence: float | None = None
    reasons: list[str] = field(default_factory=list)  # hard failure, or soft warnings
    repairs: list[str] = field(default_factory=list)


class Unusable(Exception):
    """The answer cannot honestly become metadata; the message says why, in plain words."""


# ------------------------------------------------------------------ parsing

def answer_text(content: Any) -> str:
    """String content as is; chunk lists joined from their text chunks (thinking chunks ignored)."""
    if content is None:
        raise Unusable("answer was empty (no message content)")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [c.get("text", "") for c in content if isinstance(c, dict) and c.get("type", "text") == "text"]
        return "".join(t for t in texts if isinstance(t, str))
    raise Unusable(f"answer content was a JSON {_kind(content)}, not text")


def parse_answer(content: Any, finish_reason: str | None) -> tuple[dict[str, Any], list[str]]:
    """The metadata object in an answer, and the repairs needed to get at it."""
    text = answer_text(content).strip()
    if finish_reason in TRUNCATED_FINISH:
        raise Unusable(f"answer was cut off at the token limit (finish_reason '{finish_reason}'); the JSON is incomplete")
    if not text:
        raise Unusable("answer was empty")
    value, extracted = _first_json(text)
    repairs = ["extracted_from_text"] if extracted else []
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict):
            return value[0], repairs + ["unwrapped_array"]
        raise Unusable(f"answer was {_describe_array(value)}, not an object")
    if not isinstance(value, dict):
        raise Unusable(f"answer was a JSON {_kind(value)}, not an object")
    return value, repairs


def _first_json(text: str) -> tuple[Any, bool]:
    try:
        return _first_json_in(text)
    except RecursionError:  # thousands of '[' in a row: no metadata object nests like that
        raise Unusable("answer nests JSON arrays or objects too deeply to be metadata") from None


MAX_STARTS = 50  # where JSON may start in an answer's prose: an answer with more '[' or '{' before it is unusable


def _first_json_in(text: str) -> tuple[Any, bool]:
    try:
        return json.loads(text), False
    except json.JSONDecodeError:
        pass
    fenced = re.search(r"```(?:json|JSON)?\s*\n?(.*?)```", text, re.DOTALL)
    candidates = ([fenced.group(1).strip()] if fenced else []) + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for tried, match in enumerate(re.finditer(r"[\[{]", candidate)):
            if tried == MAX_STARTS:  # each failed try costs the length of the text before it
                break
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
                return value, True
            except json.JSONDecodeError:
                continue
    snippet = re.sub(r"\s+", " ", text)[:60]
    raise Unusable(f"answer contained no JSON (it began: '{snippet}')")


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _describe_array(value: list[Any]) -> str:
    if not value:
        return "an empty JSON array"
    kinds = {_kind(v) for v in value}
    kind = kinds.pop() if len(kinds) == 1 else "mixed value"
    plural = "" if len(value) == 1 else ("es" if kind.endswith("x") else "s")
    noun = {"number": "number", "string": "string", "array": "array", "object": "object"}.get(kind, kind)
    return f"a JSON array of {len(value)} {noun}{plural}"


# ------------------------------------------------------------------ repairs

def repair(obj: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Fix what is unambiguous (enum case and spacing, known aliases, duplicate or unknown topics), in place:
    the object is the one parse_answer just made."""
    done: Repairs = []
    _strip_controls(obj, done)
    for name, allowed in (("category", CATEGORIES), ("difficulty", DIFFICULTIES)):
        _repair_enum(obj, name, allowed, done)
    if isinstance(obj.get("primary_topics"), list):
        _repair_topics(obj, done)
    return obj, done


# What a terminal acts on (ESC starts CSI and OSC sequences, 0x9b is a one-byte CSI, U+202E reverses text): a
# transcript can prompt the model to plant them in stored metadata, which review, show and the library's own
# tools print. Line breaks and tabs stay: they are text.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _strip_controls(obj: dict[str, Any], done: Repairs) -> None:
    """Remove control characters from every string of the answer (keys included), recorded as one repair."""
    removed, fields = 0, []

    def clean(value: Any, where: str) -> Any:
        nonlocal removed
        if isinstance(value, str):
            text, n = CONTROLS.subn("", value)
            if n:
                removed += n
                fields.append(where) if where not in fields else None
            return text
        if isinstance(value, list):
            return [clean(item, where) for item in value]
        if isinstance(value, dict):
            return {clean(k, where): clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        return value

    cleaned = clean(obj, "")
    if removed:
        obj.clear()
        obj.update(cleaned)
        done.append(("control_characters_removed", {"count": removed, "fields": ", ".join(fields)}))


def _norm(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def _repair_enum(obj: dict[str, Any], name: str, allowed: tuple[str, ...], done: Repairs) -> None:
    was = obj.get(name)
    if not isinstance(was, str) or was in allowed or not was.strip():
        return
    now = _norm(was)
    if now in allowed:
        obj[name] = now
        done.append(("enum_normalized", {"field": name, "was": was, "now": now}))
    elif name == "category" and now in soft_rules()["category_aliases"]:
        obj[name] = soft_rules()["category_aliases"][now]
        done.append(("category_alias", {"was": was, "now": obj[name]}))


def _repair_topics(obj: dict[str, Any], done: Repairs) -> None:
    topics = obj["primary_topics"]
    if not all(isinstance(t, str) for t in topics):
        return
    normalized = [t if t in _VOCABULARY_SET or _norm(t) not in _VOCABULARY_SET else _norm(t) for t in topics]
    if normalized != topics:
        changed = [t for t, n in zip(topics, normalized, strict=True) if t != n]
        done.append(("enum_normalized", {"field": "primary_topics", "was": ", ".join(changed),
                                         "now": ", ".join(_norm(t) for t in changed)}))
    unique = list(dict.fromkeys(normalized))
    if len(unique) < len(normalized):
        dupes = sorted({t for t in normalized if normalized.count(t) > 1})
        done.append(("duplicate_topics_removed", {"items": ", ".join(dupes)}))
    known = [t for t in unique if t in VOCABULARY]
    unknown = [t for t in unique if t not in VOCABULARY]
    if unknown and len(known) >= soft_rules()["topics"]["min_valid"]:
        done.append(("unknown_topics_dropped", {"items": ", ".join(unknown)}))
        unique = known
    obj["primary_topics"] = unique


def topic_count() -> tuple[int, int]:
    """(fewest, most) topics stored: the schema's minItems and maxItems (both 8 by default)."""
    prop = schema()["properties"]["primary_topics"]
    return prop["minItems"], prop["maxItems"]


Evidence = Union[dict[str, int], Callable[[], dict[str, int]], None]


def fit_topics(obj: dict[str, Any], evidence: Evidence, done: Repairs) -> str | None:
    """Trim or pad valid topics to the stored count, by evidence in the text; the reason if too few are
    valid to pad honestly. More than the count: keep those the text supports most (then the model's order),
    in the model's order. Fewer: add the vocabulary tags the text supports most, each one a repair."""
    topics = obj.get("primary_topics")
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        return None  # the schema says what is wrong
    valid = sum(1 for t in topics if t in VOCABULARY)
    if valid < soft_rules()["topics"]["min_valid"]:
        return (f"primary_topics has only {valid} topic{'s' if valid != 1 else ''} from the vocabulary; at least "
                f"{soft_rules()['topics']['min_valid']} are needed")
    fewest, most = topic_count()
    if fewest <= len(topics) <= most:
        return None
    evidence = (evidence() if callable(evidence) else evidence) or {}  # worked out only when it is needed
    if len(topics) > most:
        ranked = sorted(range(len(topics)), key=lambda i: (-evidence.get(topics[i], 0), i))[:most]
        kept = [topics[i] for i in sorted(ranked)]
        done.append(("topics_trimmed", {"count": most, "items": ", ".join(t for t in topics if t not in kept)}))
        obj["primary_topics"] = kept
    elif len(topics) < fewest:
        candidates = sorted((t for t in VOCABULARY if t not in topics),
                            key=lambda t: (-evidence.get(t, 0), VOCABULARY.index(t)))
        added = candidates[:fewest - len(topics)]
        done.extend(("topic_added", {"tag": tag, "evidence": evidence.get(tag, 0)}) for tag in added)
        obj["primary_topics"] = topics + added
    return None


_ONE_WORD = frozenset(tag for tag in VOCABULARY if "_" not in tag)
_TWO_WORDS = tuple((tag, f" {tag.replace('_', '  ')} ") for tag in VOCABULARY if "_" in tag)
# Everything but letters becomes a space (ASCII, and the punctuation transcripts use): words split in C.
_SEPARATE = str.maketrans({c: " " for c in [chr(i) for i in range(128) if not chr(i).isalpha()] + list("–—‘’“”…")})


def topic_evidence(text: str) -> dict[str, int]:
    """How often the text names each vocabulary tag (its words in a row, any case or separator): the
    evidence topics are ranked by. Only tags the text names at all."""
    words = text.lower().translate(_SEPARATE).split()
    counts = Counter(filter(_ONE_WORD.__contains__, words))
    joined = f"  {'  '.join(words)}  "  # two spaces a gap, so back-to-back phrases are all counted
    for tag, phrase in _TWO_WORDS:
        counts[tag] = joined.count(phrase)
    return {tag: counts[tag] for tag in VOCABULARY if counts.get(tag)}


# ------------------------------------------------------------------ hard rules

@lru_cache(maxsize=None)
def _validator() -> Any:
    """The schema's jsonschema validator: it words every failure, and decides alone for a schema the quick
    check below does not understand. (A set-membership `enum` it had bought nothing measurable: issue 19.)"""
    import jsonschema  # loaded only where answers are validated

    return jsonschema.validators.validator_for(schema())(schema())


# The quick check: a yes/no compiled from the schema for the common case (a valid answer). Measured for
# issue 19 (make bench, 10,000 files): make batch without it took 3 % longer (136.7 s against 132.6 s, the
# median of three rounds side by side), and jsonschema alone takes 2-3 s more per 10,000 answers than it,
# 4-5 % of make batch; the rule was to keep it only above 2 %.
# The keywords the quick check understands; a schema using any other is checked by jsonschema alone.
_QUICK_KEYWORDS = {"type", "enum", "required", "properties", "additionalProperties", "items", "minItems",
                   "maxItems", "uniqueItems", "minLength", "minimum", "maximum", "description", "title", "$schema",
                   "$id"}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


def _within(holds: Callable[[Any, Any], bool], limit: Any) -> Callable[[Any], bool]:
    """A bound's check: a number must hold against the limit; anything else is the type check's to refuse."""
    return lambda v: not _TYPES["number"](v) or holds(v, limit)


def _compile(node: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A fast yes/no for one schema node (the same answer as jsonschema for these keywords), or None if
    the node uses a keyword it does not understand."""
    if not set(node) <= _QUICK_KEYWORDS or (node.get("enum") and not all(isinstance(e, str) for e in node["enum"])):
        return None
    parts = {name: _compile(sub) for name, sub in (node.get("properties") or {}).items()}
    items = _compile(node["items"]) if isinstance(node.get("items"), dict) else None
    if None in parts.values() or ("items" in node and items is None) or node.get("additionalProperties", False) \
            not in (False, True) or node.get("type") not in (None, *_TYPES):
        return None
    checks: list[Callable[[Any], bool]] = []
    if "type" in node:
        checks.append(_TYPES[node["type"]])
    if "enum" in node:
        allowed = frozenset(node["enum"])
        checks.append(lambda v: isinstance(v, str) and v in allowed)
    if "minLength" in node:
        checks.append(lambda v: not isinstance(v, str) or len(v) >= node["minLength"])
    for bound, holds in (("minimum", operator.ge), ("maximum", operator.le)):
        if bound in node:
            checks.append(_within(holds, node[bound]))
    checks.append(lambda v: not isinstance(v, dict) or _object_fits(v, node, parts))
    checks.append(lambda v: not isinstance(v, list) or _array_fits(v, node, items))

    def fits(value: Any) -> bool:
        for check in checks:
            if not check(value):
                return False
        return True

    return fits


def _object_fits(value: dict[str, Any], node: dict[str, Any], parts: dict[str, Any]) -> bool:
    if any(k not in value for k in node.get("required", ())):
        return False
    if node.get("additionalProperties") is False and any(k not in parts for k in value):
        return False
    return all(check(value[k]) for k, check in parts.items() if k in value)


def _array_fits(value: list[Any], node: dict[str, Any], items: Callable[[Any], bool] | None) -> bool:
    if not node.get("minItems", 0) <= len(value) <= node.get("maxItems", len(value)):
        return False
    if node.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        return False
    return items is None or all(items(v) for v in value)


@lru_cache(maxsize=None)
def _quick() -> Callable[[Any], bool] | None:
    return _compile(schema())


def hard_errors(obj: dict[str, Any]) -> list[str]:
    """Plain-words schema violations, most useful first; a missing confidence_score is soft, not listed."""
    quick = _quick()
    if quick(obj) if quick else _validator().is_valid(obj):
        return []  # the common case, decided without collecting errors; jsonschema words every failure
    errors = sorted(_validator().iter_errors(obj), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    reasons: dict[tuple[str | int, ...], str] = {}
    for error in errors:
        text = _explain(error)
        if text is not None:
            reasons.setdefault(tuple(error.absolute_path), text)  # one reason per field
    return list(reasons.values())


def _explain(error: Any) -> str | None:
    """One reason in plain words for a jsonschema ValidationError."""
    where = _path(error.absolute_path) or "answer"
    value = error.instance
    if error.validator == "required":
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        missing = [k for k in missing if not (k == "confidence_score" and not error.absolute_path)]
        prefix = "" if where == "answer" else f"{where}."
        return f"missing {', '.join(prefix + m for m in missing)}" if missing else None
    if error.validator == "enum":
        allowed = error.validator_value
        listed = ", ".join(allowed) if len(allowed) <= 8 else "the controlled vocabulary"
        return f"{where} '{value}' is not one of {listed}"
    if error.validator == "minItems":
        return f"{where} has {len(value)} items; at least {error.validator_value} required"
    if error.validator == "maxItems":
        return f"{where} has {len(value)} items; at most {error.validator_value} allowed"
    if error.validator == "uniqueItems":
        return f"{where} repeats items"
    if error.validator == "type":
        kind = _kind(value)
        return f"{where} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not a {error.validator_value}"
    if error.validator == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        return f"{where} has unexpected field{'s' if len(extra) > 1 else ''} {', '.join(extra)}"
    if error.validator in ("minimum", "maximum"):
        return f"{where} {value} is outside 0..1"
    if error.validator == "minLength":
        return f"{where} is empty"
    return f"{where}: {error.message}"


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ------------------------------------------------------------------ soft rules and confidence

def soft_warnings(obj: dict[str, Any], filename: str | None) -> list[tuple[str, dict[str, Any]]]:
    rules = soft_rules()["warnings"]
    found: list[tuple[str, dict[str, Any]]] = []
    if "confidence_score" not in obj:
        found.append(("missing_confidence", {}))
    description = obj.get("semantic_description", {})
    summary = description.get("summary", "")
    if len(summary) < rules["short_summary"]["min_chars"]:
        found.append(("short_summary", {"n": len(summary)}))
    if not description.get("key_arguments"):
        found.append(("no_key_arguments", {}))
    if filename and not mentions_name(summary, filename):
        found.append(("summary_ignores_name", {"name": filename}))
    aspects = obj.get("topic_aspects", [])
    if len(aspects) > rules["too_many_aspects"]["max"]:
        found.append(("too_many_aspects", {"n": len(aspects)}))
    long_ones = [a for a in aspects if len(a) > rules["long_aspects"]["max_chars"]]
    if long_ones:
        found.append(("long_aspects", {"n": len(long_ones)}))
    return found


_STOPWORDS = {"lesson", "class", "week", "year", "episode", "part", "lecture", "with", "from", "that", "this",
              "about", "office", "hours", "the", "and", "motm", "seminar", "course", "foundations"}


def name_words(filename: str) -> set[str]:
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", filename)
    stem = re.sub(r"\[\d+\]|\d{4}-\d{2}-\d{2}", " ", stem)
    return {w for w in re.findall(r"[a-z]{4,}", stem.lower()) if w not in _STOPWORDS}


def mentions_name(summary: str, filename: str) -> bool:
    words = name_words(filename)
    lowered = summary.lower()
    return not words or any(w in lowered for w in words)


def confidence(model_score: Any, penalties: list[str]) -> float:
    """Model confidence minus each problem's weight, clamped to [0, 1]: more problems never raise it."""
    rules = soft_rules()
    weights = {**rules["warnings"], **rules["repairs"]}
    base = model_score if isinstance(model_score, (int, float)) and not isinstance(model_score, bool) \
        else rules["missing_confidence_prior"]
    score: float = min(max(float(base), 0.0), 1.0) - sum(weights[p]["weight"] for p in penalties)
    return round(min(max(score, 0.0), 1.0), 3)


def _message(kind: str, params: dict[str, Any]) -> str:
    rules = soft_rules()
    template: str = {**rules["warnings"], **rules["repairs"]}[kind]["message"]
    return template.format(**{**rules["warnings"].get(kind, {}), **params})


def judge(content: Any, finish_reason: str | None, filename: str | None = None,
          threshold: float | None = None, evidence: Evidence = None) -> Verdict:
    """The whole decision for one answer. `evidence`: how often the text names each vocabulary tag
    (topic_evidence, or a function giving it), used to trim or pad the topics to the stored count."""
    threshold = soft_rules()["threshold"] if threshold is None else threshold
    try:
        obj, parse_repairs = parse_answer(content, finish_reason)
    except Unusable as exc:
        return Verdict(Decision.FAILED_VALIDATION, reasons=[str(exc)])
    obj, repairs = repair(obj)
    too_few = fit_topics(obj, evidence, repairs)
    errors = [too_few] if too_few else hard_errors(obj)
    if errors:
        return Verdict(Decision.FAILED_VALIDATION, reasons=errors)
    repairs = [(kind, {}) for kind in parse_repairs] + repairs
    warnings = soft_warnings(obj, filename)
    score = confidence(obj.get("confidence_score"), [k for k, _ in repairs] + [k for k, _ in warnings])
    if "confidence_score" not in obj:  # downstream needs one (the search index's quality_score): ours
        obj["confidence_score"] = score
        repairs.append(("confidence_filled", {"score": score}))
    reasons = [_message(k, p) for k, p in warnings]
    if score < threshold:
        reasons.append(f"confidence {score:.2f} is below the threshold {threshold:.2f}")
    decision = Decision.NEEDS_REVIEW if reasons else Decision.EXTRACTED
    return Verdict(decision, obj, score, reasons, [_message(k, p) for k, p in repairs])
