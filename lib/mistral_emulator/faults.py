"""Fault injection: what goes wrong, how often, and for which request.

A request's fate is decided by the seed, its custom_id and how often that custom_id was submitted before,
so a run is reproducible and a resubmission is a fresh draw, as it is with a real model. Of objbatch's
custom_ids (f<path hash>-<content hash>) only the content part counts, so the same library draws the same
faults wherever its folder is (the README's session, typed in any clone). Presets: `none`,
`real` (the answer failure rates measured on real runs of the library) and `chaos`.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import click

from . import model
from .errors import ApiError

# The failure rates measured on real runs of 21, 124, 337 and 723 requests, for --faults real.
REAL_ANSWER_RATES = {
    "missing_confidence": 0.072, "array": 0.047, "one_element_array": 0.011, "prose": 0.014,
    "degenerate": 0.012, "invalid_category": 0.007, "duplicate_topics": 0.004, "fenced": 0.02,
    "prose_around": 0.01, "chunks": 0.02, "invented_topics": 0.02, "too_many_topics": 0.005,
    "truncated": 0.003, "enum_case": 0.005,
}
PRESETS: dict[str, dict] = {
    "none": {},
    "real": {"answers": REAL_ANSWER_RATES},
    "chaos": {"answers": {k: 0.05 for k in model.ANSWER_FAULTS}, "error_in_output": 0.03,
              "error_in_error_file": 0.03, "missing": 0.02, "shuffle": True},
}
DEFAULTS = {
    "seed": 0,
    "answers": {},               # answer fault -> probability per request
    "error_in_output": 0.0,      # request errors written as failure lines in the output file
    "error_in_error_file": 0.0,  # request errors written to the error file
    "error_as_string": 0.5,      # share of request errors whose `error` is a bare string
    "null_custom_id": 0.0,       # share of request errors whose line has custom_id null (the service allows it)
    "missing": 0.0,              # requests in neither file
    "shuffle": False,            # result lines in arbitrary order
    "job_status": "SUCCESS",     # terminal status: SUCCESS, FAILED or TIMEOUT_EXCEEDED
    "partial": 0.5,              # share of requests processed when the job ends FAILED / TIMEOUT_EXCEEDED
    "http_rate": 0.0,            # share of API calls answered 429 or 503
    "http_storm": 0,             # the next N API calls are answered 429 or 503
    "http_storm_path": "",       # ... only calls that start with this, e.g. "POST /v1/files"
    "http_status": 429,          # status of storm answers (CHOICES)
    "retry_after": 0.05,         # seconds, sent as Retry-After on 429/503
    "odd_lines": 0.0,            # share of answered requests whose result line is oddly shaped (ODD_SHAPES)
    "lost_creates": 0,           # the next N job creations succeed but are answered 500 (the answer is lost)
}
CHOICES = {"job_status": ("SUCCESS", "FAILED", "TIMEOUT_EXCEEDED"), "http_status": (429, 500, 502, 503, 504)}
RATES = ("error_in_output", "error_in_error_file", "error_as_string", "null_custom_id", "missing", "partial",
         "http_rate", "odd_lines")  # shares: 0 to 1
# Result lines a service should not send but might: each affects its own request only.
ODD_SHAPES = ("message_string", "usage_list", "tokens_text", "brackets", "choices_null", "response_string",
              "body_list", "custom_id_number")
PER_JOB = ("seed", "answers", "error_in_output", "error_in_error_file", "error_as_string", "missing", "shuffle",
           "job_status", "partial", "odd_lines", "null_custom_id")  # fixed for a job when it is created


def draw_key(custom_id: str) -> str:
    """What a request's draw follows: the content hash of an objbatch custom_id, else the custom_id itself."""
    head, _, content = custom_id.partition("-")
    return content if len(head) == 17 and head.startswith("f") and len(content) == 16 else custom_id


def fate(fault: dict, custom_id: str, occurrence: int) -> dict:
    """What happens to one request: kind (ok, error_output, error_file, missing), its answer fault, whether
    its error is a bare string, and the salt its answer is drawn with."""
    salt = f"{fault['seed']}|{draw_key(custom_id)}|{occurrence}"
    rng = random.Random(salt)
    roll = rng.random()
    kind = "ok"
    for name in ("error_in_output", "error_in_error_file", "missing"):
        if roll < fault[name]:
            kind = {"error_in_output": "error_output", "error_in_error_file": "error_file"}.get(name, name)
            break
        roll -= fault[name]
    answer = None
    roll = rng.random()
    for name, rate in sorted(fault["answers"].items()):
        if roll < rate:
            answer = name
            break
        roll -= rate
    string_error = rng.random() < fault["error_as_string"]
    odd = rng.choice(ODD_SHAPES) if rng.random() < fault.get("odd_lines", 0.0) else None  # drawn last: older
    null_id = kind in ("error_output", "error_file") and rng.random() < fault.get("null_custom_id", 0.0)  # draws kept
    return {"kind": kind, "answer": answer, "string_error": string_error, "salt": salt, "odd": odd,
            "null_custom_id": null_id}


def oddly_shaped(line: dict, shape: str) -> dict:
    """A result line bent into one of ODD_SHAPES."""
    body = line["response"]["body"]
    if shape == "message_string":
        body["choices"][0]["message"] = "oops"
    elif shape == "usage_list":
        body["usage"] = [1, 2]
    elif shape == "tokens_text":
        body["usage"] = {**(body.get("usage") or {}), "prompt_tokens": "n/a"}
    elif shape == "brackets":
        body["choices"][0]["message"]["content"] = "[" * 3000
    elif shape == "choices_null":
        body["choices"] = None
    elif shape == "response_string":
        line["response"] = "oops"
    elif shape == "body_list":
        line["response"]["body"] = [body]
    elif shape == "custom_id_number":
        line["custom_id"] = 12345
    return line


def http_fault(faults: dict, record: dict, method: str, path: str) -> ApiError | None:
    """A 429 or 503 for this call, if a storm or the rate says so (counted in the record)."""
    record["calls"] += 1
    storm = faults["http_storm"] > 0 and f"{method} {path}".startswith(faults["http_storm_path"] or method)
    rolled = random.Random(f"http|{faults['seed']}|{record['calls']}").random() < faults["http_rate"]
    if not (storm or rolled):
        return None
    if storm:
        faults["http_storm"] -= 1
    status = faults["http_status"] if storm else (429 if record["calls"] % 2 else 503)
    record["http_faults"] += 1
    retry = {"Retry-After": f"{faults['retry_after']:g}"}
    if status == 429:  # the service's body and headers (docs/mistral-batch-api.md, "Errors")
        limits = {"x-ratelimit-limit-req-minute": "60", "x-ratelimit-remaining-req-minute": "0",
                  "x-ratelimit-limit-tokens-minute": "500000", "x-ratelimit-remaining-tokens-minute": "0"}
        return ApiError(429, {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
                              "param": None, "code": "1300"}, {**retry, **limits})
    message, kind = {500: ("Internal server error", "internal_error"), 502: ("Bad gateway", "bad_gateway"),
                     504: ("Gateway timeout", "gateway_timeout")}.get(status, ("Service unavailable",
                                                                                "service_unavailable"))
    return ApiError(status, {"object": "error", "message": message, "type": kind, "param": None, "code": "3000"},
                    retry)


def problem(changes: Any) -> str | None:
    """Why a fault change cannot be taken (None: it can): known settings, each of its default's type. A
    wrong value is refused, never saved into state.json, where it would break every later job."""
    if not isinstance(changes, dict):
        return "give a JSON object, e.g. {\"preset\": \"real\"}"
    for key, value in changes.items():
        if key == "preset":
            if value not in PRESETS:
                return f"unknown preset {value!r}; known: {', '.join(PRESETS)}"
            continue
        if key not in DEFAULTS:
            return f"unknown setting {key!r}; known: {', '.join(DEFAULTS)}"
        if not _fits(DEFAULTS[key], value):
            return f"{key} must be like {DEFAULTS[key]!r} (got {value!r})"
        if key in CHOICES and value not in CHOICES[key]:
            return f"{key} must be one of {', '.join(map(str, CHOICES[key]))} (got {value!r})"
        if key in RATES and not 0 <= value <= 1:
            return f"{key} must be 0 to 1 (got {value!r})"
        if key in ("http_storm", "lost_creates", "retry_after") and value < 0:
            return f"{key} must be at least 0 (got {value!r})"
        if key == "answers" and (set(value) - set(model.ANSWER_FAULTS) or not all(0 <= r <= 1 for r in value.values())):
            return f"answers maps answer faults ({', '.join(model.ANSWER_FAULTS)}) to shares 0 to 1 (got {value!r})"
    return None


def _fits(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(default, str):
        return type(value) is type(default)
    if isinstance(default, dict):
        return isinstance(value, dict) and all(_fits(0.0, rate) for rate in value.values())
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def update(faults: dict, changes: dict[str, Any]) -> None:
    """Apply a change (POST /_emulator/faults): a `preset` starts from the defaults and that preset."""
    if "preset" in changes:
        changes = {**DEFAULTS, **PRESETS[changes.pop("preset")], **changes}
    faults.update(changes)


def parse_option(value: str | None) -> dict:
    """--faults: a preset name, a JSON file or JSON text."""
    if not value:
        return {}
    if value in PRESETS:
        return {**PRESETS[value]}
    path = Path(value)
    text = path.read_text() if path.exists() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise click.BadParameter(f"{value!r} is not a preset ({', '.join(PRESETS)}), a JSON file or JSON text") \
            from None
    wrong = problem(parsed)
    if wrong:
        raise click.BadParameter(wrong, param_hint="--faults")
    return parsed
